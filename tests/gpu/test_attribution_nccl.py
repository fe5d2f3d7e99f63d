"""The "why" decomposition on CUDA: in-step measurements from events, planted causes on NCCL.

On one GPU (an NCCL group of one) the step probe's CUDA path is checked: DDP's buckets of the
DistilBERT-base gradient, each with an increasing ``ready_s`` inside backward and a positive
in-step all-reduce from events recorded on the compute stream and on a stream synchronised with
NCCL's (distrinews/timing.py), ``backward_time_s`` inside the step.

On two or more GPUs, the planted causes run for real under torchrun with NCCL, as
tests/distributed/test_attribution_planted.py does on gloo: each planted delay (slow_rank,
slow_data, slow_comm) must land 80-120% in its part, every other part within ±15% of the extra
loss, and the in-step checks hold on the clean point. NCCL refuses two ranks on one GPU, so
those skip below two GPUs. Skipped without CUDA.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distrinews.runspec import RunSpec
from harness import analysis, attribution, store

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
#: fault -> the part it must land in (tests/distributed/test_attribution_planted.py's map).
PLANTED = {"slow_rank": "straggler", "slow_data": "data_wait", "slow_comm": "exposed_comm"}
#: A base-model step on an H100 is ~60 ms at batch 32: 100 ms is the dominant planted cost.
DELAY_MS = 100.0


def _spec(**kw) -> RunSpec:
    base = dict(device="cuda", backend="nccl", model="base", precision="bf16",
                per_device_batch=32, max_length=128, data="synthetic:4096", warmup_steps=3,
                measured_steps=12)  # fmt: skip
    return RunSpec(**{**base, **kw})


def _run(tmp_path: Path, spec: RunSpec) -> dict:
    folder = tmp_path / spec.run_id
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(spec.to_json())
    argv = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
        str(spec.nproc_per_node), "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0",
        "-m", "distrinews.worker", "--spec", str(folder / "run.json"), "--out", str(folder),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((folder / "record.json").read_text())


def test_in_step_measurements_come_from_cuda_events_on_one_gpu(tmp_path):
    rec = _run(tmp_path, _spec())
    m, buckets = rec["metrics"], rec["buckets"]
    print(json.dumps({k: m[k] for k in ("step_time_s_p50", "step_time_instrumented_s",
                                        "step_work_s", "backward_time_s", "exposed_comm_s",
                                        "allreduce_step_time_s")}, indent=2))  # fmt: skip
    assert len(buckets) == m["bucket_count"] > 1  # 265 MB of gradient in 25 MB buckets
    ready = [b["ready_s"] for b in buckets]
    # DDP launches the buckets in order as backward produces them: ready times increase, and
    # every bucket is ready inside backward (the last one at its end).
    assert all(a < b for a, b in itertools.pairwise(ready)), ready
    assert ready[0] > 0 and ready[-1] <= m["backward_time_s"] * 1.10
    assert all(b["step_allreduce_s"] > 0 for b in buckets)
    # The instrumented steps are ordinary steps: within 15% of the window's median.
    assert m["step_time_instrumented_s"] == pytest.approx(m["step_time_s_p50"], rel=0.15)
    assert 0 < m["backward_time_s"] < m["step_time_instrumented_s"]
    assert m["comm_contention_s"] is None  # one rank: no ceiling to compare with
    assert m["run_queue_wait_s"] is None  # the GPU's time is not the host thread's


def _row(spec: RunSpec, record: dict) -> dict:
    return store.make_row(
        sweep="planted-nccl", spec=spec, status="ok", reason=None, started_at="",
        finished_at="", duration_s=0.0, scaling_mode="weak",
        point_dir=f"points/{spec.run_id}", record=record, telemetry={}, env_fingerprint=None,
    )  # fmt: skip


@pytest.mark.skipif(GPUS < 2, reason="NCCL needs two GPUs for two ranks")
def test_planted_causes_land_in_their_parts_on_nccl(tmp_path):
    one = _spec()
    one_record = _run(tmp_path, one)
    rows = []
    for fault in ("none", *PLANTED):
        kw = {} if fault == "none" else {"fault": fault, "fault_ms": DELAY_MS}
        base = dataclasses.replace(one, **kw)
        rows.append(_row(base, {**one_record, "spec": base.to_dict()}))
        two = dataclasses.replace(base, nproc_per_node=2)
        rows.append(_row(two, _run(tmp_path, two)))
    frame = analysis.frame_from_rows(rows)
    summary = analysis.per_configuration(frame)
    decomp = attribution.decompose(summary, analysis.scaling(frame, summary=summary))
    fault_of = summary.set_index("config_key")["fault"]
    by_fault = {fault_of[r["config_key"]]: r for r in decomp.to_dict("records")}
    clean = by_fault["none"]
    assert clean["explained"]
    in_step = [c for c in clean["checks"] if "in flight" in c or "ceiling" in c]
    assert not in_step, in_step  # the exposed all-reduce is bounded by what NCCL measured
    failures = []
    for fault, part in PLANTED.items():
        shares = attribution.extra_loss_shares(clean, by_fault[fault])
        print(fault, {c: f"{v:+.0%}" for c, v in shares.items()})
        others = {c: v for c, v in shares.items() if c != part}
        if not (0.8 <= shares[part] <= 1.2 and all(abs(v) <= 0.15 for v in others.values())):
            failures.append((fault, shares))
    assert not failures, failures
