"""The memory model on hand-made frames: exact lines recovered, and the pre-launch OOM guard."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from distrinews import layout
from harness import memory_model as M

BASE = {
    "device": "cuda",
    "model": "base",
    "precision": "bf16",
    "seq_policy": "fixed",
    "max_length": 128,
    "compile": False,
    "world_size": 1.0,
}


def run(batch: int, mem: float | None, status: str = "ok", **kw) -> dict:
    return {**BASE, **kw, "per_device_batch": float(batch), "mem_peak_gib": mem, "status": status}


def frame() -> pd.DataFrame:
    rows = [
        # bf16: 2 GiB fixed + 0.25 GiB per sample, two repeats at 64
        run(32, 2 + 0.25 * 32),
        run(64, 2 + 0.25 * 64),
        run(64, 2 + 0.25 * 64),
        run(128, 2 + 0.25 * 128),
        # a failed run and a run without a reading: never in a fit
        run(512, None, status="oom"),
        run(256, None),
        # fp32 on 2 GPUs: 3 GiB + 0.5 GiB per sample
        run(16, 3 + 0.5 * 16, precision="fp32", world_size=2.0),
        run(48, 3 + 0.5 * 48, precision="fp32", world_size=2.0),
        # one batch size only: no model
        run(64, 9.0, seq_policy="dynamic"),
    ]
    return pd.DataFrame(rows)


def test_fit_recovers_fixed_and_per_sample_memory_per_group():
    fits = M.fit_memory(frame())
    assert len(fits) == 2  # the dynamic group has one batch size: no line through one point
    bf16 = fits[fits["precision"] == "bf16"].iloc[0]
    assert bf16["fixed_gib"] == pytest.approx(2.0)
    assert bf16["per_sample_gib"] == pytest.approx(0.25)
    assert bf16["n_runs"] == 4 and bf16["batch_max"] == 128
    assert bf16["max_residual_gib"] == pytest.approx(0.0, abs=1e-9)
    fp32 = fits[fits["precision"] == "fp32"].iloc[0]
    assert (fp32["fixed_gib"], fp32["per_sample_gib"]) == pytest.approx((3.0, 0.5))
    assert fp32["world_size"] == 2


def test_fit_of_noisy_points_is_least_squares():
    rows = [run(10, 3.1), run(20, 4.9), run(30, 7.0)]
    fit = M.fit_memory(pd.DataFrame(rows)).iloc[0]
    assert fit["per_sample_gib"] == pytest.approx(0.195)
    assert fit["fixed_gib"] == pytest.approx(5.0 - 0.195 * 20)  # through the means
    assert fit["max_residual_gib"] > 0


def test_predicted_oom_names_predicted_and_capacity():
    rows = frame().to_dict("records")
    config = {**BASE, "world_size": 1, "per_device_batch": 512}
    # 2 + 0.25 * 512 = 130 GiB on an 80 GB H100 (79.6 GiB)
    assert M.oom_reason(config, rows=rows, capacity_gib=79.6) == (
        "predicted OOM: 130.0 GiB > 79.6 GiB"
    )
    assert M.oom_reason({**config, "per_device_batch": 256}, rows=rows, capacity_gib=79.6) is None
    assert M.oom_reason(config, rows=rows, capacity_gib=None) is None  # capacity unknown
    other = {**config, "model": "tiny"}  # no model for this group: launch it
    assert M.oom_reason(other, rows=rows, capacity_gib=79.6) is None
    assert M.oom_reason({**config, "device": "cpu"}, rows=rows, capacity_gib=1.0) is None


def test_a_line_that_falls_with_the_batch_predicts_nothing():
    fits = M.fit_memory(pd.DataFrame([run(8, 5.0), run(16, 4.9)]))
    assert M.predict_gib(fits, {**BASE, "per_device_batch": 4096}) is None


def test_the_max_batch_search_result_predicts_oom_for_its_configuration():
    search = {**BASE, "world_size": 1, "nodes": 1, "smallest_batch_oom": 384}
    config = {**BASE, "world_size": 1, "nodes": 1, "per_device_batch": 512, "global_batch": 512}
    why = M.oom_reason(config, rows=[], searches=[search], capacity_gib=None)
    assert why == "predicted OOM: batch 512 >= 384, which ran out of memory in the max-batch search"
    assert (
        M.oom_reason(
            {**config, "per_device_batch": 256}, rows=[], searches=[search], capacity_gib=None
        )
        is None
    )
    assert (
        M.oom_reason({**config, "precision": "fp32"}, rows=[], searches=[search], capacity_gib=None)
        is None
    )


def test_device_capacity_is_the_smallest_gpu_in_env_json():
    env = {"gpus": [{"memory_total_gib": 79.6}, {"memory_total_gib": 39.5}, {"name": "x"}]}
    assert M.device_capacity_gib(env) == pytest.approx(39.5)
    assert M.device_capacity_gib({"gpus": []}) is None
    assert M.device_capacity_gib(None) is None


# -- the guard inside a real sweep loop ------------------------------------------------------


def _cuda_sweep(tmp_path):
    from harness import spec as S

    text = """
name = "guard"
[run]
device = "cuda"
model = "tiny"
precision = "bf16"
[axes]
per_device_batch = [256]
"""
    return S.parse_sweep(text, source="guard.toml")


def test_a_point_the_search_saw_run_out_of_memory_is_skipped_before_launch(tmp_path, monkeypatch):
    """The real run_sweep loop; only the GPU count is claimed (this machine has no GPU)."""
    from harness import max_batch, spec, store
    from harness import sweep as sw

    monkeypatch.setattr(
        sw, "detect_resources", lambda options, env=None: spec.Resources(gpus_per_node=1)
    )
    sweep_spec = _cuda_sweep(tmp_path)
    (point,) = sweep_spec.expand(spec.Resources(gpus_per_node=1))
    sweep_dir = tmp_path / "r" / "guard"
    config = store.config_columns(point.spec)
    search = {k: v for k, v in config.items() if k not in ("per_device_batch", "global_batch")}
    store.append_jsonl(
        sweep_dir / layout.MAX_BATCH_LEDGER,
        {**search, "search_key": max_batch.search_key(point.spec), "smallest_batch_oom": 192},
    )

    def no_launch(*_a, **_k):
        raise AssertionError("a point predicted to run out of memory was launched")

    monkeypatch.setattr(sw, "run_point", no_launch)
    options = sw.SweepOptions(results=tmp_path / "r", progress=False)
    for _ in range(2):  # the second run records nothing new: same prediction, same row
        sw.run_sweep(sweep_spec, options, echo=lambda _m: None)
    (row,) = store.read_ledger(sweep_dir)
    assert row["status"] == "skipped"
    assert row["reason"] == (
        "predicted OOM: batch 256 >= 192, which ran out of memory in the max-batch search"
    )
    assert row["energy_unavailable_reason"] == "the point was skipped"

    with pytest.raises(AssertionError, match="was launched"):  # --no-predict-oom launches it
        sw.run_sweep(
            sweep_spec, dataclasses.replace(options, predict_oom=False), echo=lambda _m: None
        )


def test_the_guard_reads_the_ledger_and_the_device_capacity(tmp_path):
    from distrinews.runspec import RunSpec
    from harness import spec, store
    from harness import sweep as sw

    sweep_dir = tmp_path / "s"
    for b in (32, 64):
        s = RunSpec(per_device_batch=b)
        store.append_row(
            sweep_dir,
            {
                **store.config_columns(s),
                "run_id": s.run_id,
                "status": "ok",
                "mem_peak_gib": 2.0 + 0.25 * b,
            },
        )
    big = spec.Point(spec=RunSpec(per_device_batch=512))
    h100 = {"gpus": [{"memory_total_gib": 79.6}]}
    assert sw._predicted_oom(big, sweep_dir, h100) == "predicted OOM: 130.0 GiB > 79.6 GiB"
    assert sw._predicted_oom(big, sweep_dir, {"gpus": [{"memory_total_gib": 139.8}]}) is None
    small = spec.Point(spec=RunSpec(per_device_batch=256))
    assert sw._predicted_oom(small, sweep_dir, h100) is None


def test_guard_skips_exactly_the_batches_that_do_not_fit_when_memory_is_linear():
    """The docstring's promise: with exact linear peaks (2 GiB + 0.25 GiB a sample, measured at
    batch 32 and 64) on an 80 GB H100, no batch that fits is skipped and none that does not is
    launched -- every batch from 1 to 600 on either side of the 310-sample boundary."""
    rows = [run(32, 2 + 0.25 * 32), run(64, 2 + 0.25 * 64)]
    capacity = 79.6
    for batch in range(1, 601):
        config = {**BASE, "world_size": 1, "per_device_batch": batch}
        skipped = M.oom_reason(config, rows=rows, capacity_gib=capacity) is not None
        assert skipped == (2 + 0.25 * batch > capacity), batch


def test_a_noisy_line_can_skip_a_batch_that_would_fit():
    """And the limit the docstring states: a steep fit through noisy peaks over-predicts."""
    rows = [run(32, 2 + 0.25 * 32 - 0.5), run(64, 2 + 0.25 * 64 + 0.5)]  # +-0.5 GiB of noise
    config = {**BASE, "world_size": 1, "per_device_batch": 300}  # truly 77 GiB: it fits
    assert 2 + 0.25 * 300 < 79.6
    assert M.oom_reason(config, rows=rows, capacity_gib=79.6) is not None
