"""A failing explain phase costs only its own figures: the measured window's record survives."""

from __future__ import annotations

import pytest

from distrinews import benchmark, explain
from distrinews.distributed import process_group
from distrinews.failures import TERMINATED, Terminated
from distrinews.runspec import RunSpec


def test_failed_explanation_keeps_the_window_and_says_why(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("planted failure in the explain phase\nsecond line")

    monkeypatch.setattr(explain, "measure", broken)
    run = RunSpec(device="cpu", model="tiny", data="synthetic:64", per_device_batch=4,
                  precision="fp32", warmup_steps=0, measured_steps=2, max_length=16)  # fmt: skip
    with process_group(device="cpu", backend="gloo") as ctx:
        record = benchmark.benchmark(run, ctx, on_log=lambda msg: None)
    m = record["metrics"]
    assert m["samples_per_s"] > 0 and m["data_wait_s"] >= 0  # the window is intact
    assert all(m[k] is None for k in explain.EXPLAIN_METRIC_KEYS)
    assert record["buckets"] is None and record["compute_step_times_s"] is None
    (warning,) = [w for w in record["warnings"] if "explain" in w]
    assert "RuntimeError: planted failure in the explain phase)" in warning
    assert "\n" not in warning


def test_terminated_is_not_swallowed(monkeypatch):
    def terminated(*args, **kwargs):
        raise Terminated(TERMINATED)

    monkeypatch.setattr(explain, "measure", terminated)
    run = RunSpec(device="cpu", model="tiny", data="synthetic:64", per_device_batch=4,
                  precision="fp32", warmup_steps=0, measured_steps=1, max_length=16)  # fmt: skip
    with process_group(device="cpu", backend="gloo") as ctx, pytest.raises(Terminated):
        benchmark.benchmark(run, ctx, on_log=lambda msg: None)
