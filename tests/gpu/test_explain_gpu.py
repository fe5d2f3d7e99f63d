"""GPU acceptance of the explain measurements (issue 15): a default-sweep point on one GPU.

One GPU: the default-gpu sweep's 1-GPU point (DistilBERT-base shape, bf16, batch 64) with the
explain measurements on. The compute-only (no_sync) step must not exceed the measured step
(there is no communication to remove, only DDP's bucket copy of a group of one), and the seconds
the measurements add are printed. What is NOT measured here: NCCL refuses two ranks on one GPU,
so the all-reduce ceiling (N > 1) stays null; the in-step figures are measured
(tests/gpu/test_attribution_nccl.py).
Skipped without CUDA.
"""

from __future__ import annotations

import json

import pytest
import torch

from harness.spec import Resources, load_builtin
from tests.gpu.test_worker_gpu import _worker

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_compute_only_step_is_at_most_the_measured_step_on_one_gpu(tmp_path):
    points = load_builtin("default-gpu").expand(Resources(gpus_per_node=1))
    spec = next(p.spec for p in points if p.spec.world_size == 1 and p.skip_reason is None)
    fields = {k: v for k, v in spec.to_dict().items() if k not in ("nccl_env", "ddp")}
    proc, out = _worker(tmp_path, **fields)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "record.json").read_text())["metrics"]
    shown = ("step_time_s_p50", "compute_step_time_s", "data_wait_s", "grad_bytes",
             "bucket_count", "explain_time_s", "measured_time_s")  # fmt: skip
    print(json.dumps({k: m[k] for k in shown}, indent=2))
    # 1% for event-timer noise between the two phases.
    assert 0 < m["compute_step_time_s"] <= m["step_time_s_p50"] * 1.01
    assert m["allreduce_time_s"] is None and m["comm_contention_s"] is None  # N = 1
    # DDP's reducer over a group of one still waits for its (local) all-reduce: measured.
    assert 0 <= m["exposed_comm_s"] < m["step_time_s_p50"]
    assert m["explain_time_s"] < 10
