"""The worker on one CUDA GPU (NCCL group of one): timing, memory, MFU, bf16 hook, real OOM.

Skipped without CUDA. Throughput acceptance figures come from tests/gpu/acceptance.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from distrinews.runspec import DDPKnobs, RunSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _worker(tmp_path, **fields):
    base = dict(device="cuda", model="base", precision="bf16", per_device_batch=64,
                max_length=128, data="synthetic:4096", warmup_steps=3,
                measured_steps=10)  # fmt: skip
    spec = RunSpec(**{**base, **fields})
    (tmp_path / "run.json").write_text(spec.to_json())
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "distrinews.worker", "--spec", str(tmp_path / "run.json"),
         "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return proc, out


def test_base_bf16_record_on_gpu(tmp_path):
    proc, out = _worker(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((out / "record.json").read_text())
    m = rec["metrics"]
    assert rec["env"]["gpu_name"] and rec["env"]["backend"] == "nccl"
    assert rec["env"]["cuda"] and rec["env"]["nccl"]
    assert m["mem_peak_gib"] > 0
    assert all(t > 0 for t in rec["step_times_s"][0])
    if "H100" in rec["env"]["gpu_name"] or "H200" in rec["env"]["gpu_name"]:
        assert 0 < m["mfu"] <= m["hfu"] < 1
    print(json.dumps(m, indent=2))


def test_bf16_comm_hook_runs_on_nccl(tmp_path):
    proc, out = _worker(tmp_path, model="tiny", ddp=DDPKnobs(comm_hook="bf16"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "record.json").exists()


def test_real_cuda_oom_is_classified(tmp_path):
    proc, out = _worker(tmp_path, model="tiny", fault="oom")
    assert proc.returncode == 3
    error = json.loads((out / "error.json").read_text())
    assert error["failure"] == "oom" and "OutOfMemoryError" in error["message"]


def test_fp16_scaler_and_compile_on_gpu(tmp_path):
    proc, out = _worker(tmp_path, model="tiny", precision="fp16", compile=True, warmup_steps=5)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((out / "record.json").read_text())
    assert rec["metrics"]["loss_last"] == rec["metrics"]["loss_last"]  # finite, not NaN
