"""The explain figures (distrinews.metrics.explain_figures) on hand-made step times, and the
RunSpec fields that plant slowdowns."""

from __future__ import annotations

import pytest

from distrinews.errors import UserError
from distrinews.metrics import bus_bandwidth, explain_figures, lower_median
from distrinews.runspec import RunSpec


def test_lower_median_takes_the_faster_of_two():
    assert lower_median([3.0, 1.0]) == 1.0
    assert lower_median([5.0, 1.0, 3.0]) == 3.0
    assert lower_median([4.0, 1.0, 3.0, 2.0]) == 2.0
    with pytest.raises(ValueError):
        lower_median([])


def test_bus_bandwidth_is_the_nccl_tests_convention():
    assert bus_bandwidth(10.0, 2) == pytest.approx(10.0)
    assert bus_bandwidth(10.0, 8) == pytest.approx(17.5)
    assert bus_bandwidth(10.0, 1) == 0.0


def test_one_rank_has_compute_but_no_communication_or_straggler():
    out = explain_figures(
        window_step_times_s=[[0.11, 0.11, 0.11]],
        work_step_times_s=[[0.10, 0.12, 0.10]],
        work_data_wait_s=[[0.01, 0.01, 0.01]],
        allreduce_time_s=None,
        grad_bytes=1000,
    )
    assert out["compute_step_time_s"] == pytest.approx(0.09)
    assert out["grad_bytes"] == 1000
    for key in ("exposed_comm_s", "overlap_share", "straggler_wait_s", "allreduce_time_s",
                "allreduce_algbw_gbps", "allreduce_busbw_gbps"):  # fmt: skip
        assert out[key] is None, key  # null, never a faked 0


def test_slow_rank_is_straggler_not_compute_and_exposed_is_what_sync_adds():
    # Rank 1 works 50 ms longer every step; the synced step waits for it and adds 20 ms of
    # all-reduce that backward did not hide.
    work = [[0.100] * 5, [0.150] * 5]
    waits = [[0.002] * 5, [0.002] * 5]
    window = [[0.170] * 5, [0.170] * 5]
    out = explain_figures(
        window_step_times_s=window,
        work_step_times_s=work,
        work_data_wait_s=waits,
        allreduce_time_s=0.040,
        grad_bytes=80_000_000,
    )
    assert out["compute_step_time_s"] == pytest.approx(0.098)  # the faster (typical) rank
    assert out["straggler_wait_s"] == pytest.approx(0.050)
    assert out["exposed_comm_s"] == pytest.approx(0.020)
    assert out["overlap_share"] == pytest.approx(0.5)  # half of a 40 ms all-reduce hidden
    assert out["allreduce_algbw_gbps"] == pytest.approx(2.0)
    assert out["allreduce_busbw_gbps"] == pytest.approx(2.0)  # 2(N-1)/N = 1 at N = 2
    # The parts add back up to the synced step: compute + data + straggler + exposed.
    total = out["compute_step_time_s"] + 0.002 + out["straggler_wait_s"] + out["exposed_comm_s"]
    assert total == pytest.approx(0.170)


def test_exposed_is_clamped_at_zero_and_overlap_at_one():
    out = explain_figures(
        window_step_times_s=[[0.099] * 3, [0.099] * 3],
        work_step_times_s=[[0.100] * 3, [0.100] * 3],
        work_data_wait_s=[[0.0] * 3, [0.0] * 3],
        allreduce_time_s=0.01,
        grad_bytes=10,
    )
    assert out["exposed_comm_s"] == 0.0 and out["overlap_share"] == 1.0


def test_planted_slowdowns_are_spec_fields():
    spec = RunSpec(device="cpu", fault="slow_rank", fault_ms=50)
    assert spec.fault_ms == 50.0 and spec.explain is True
    assert RunSpec.from_json(spec.to_json()) == spec
    for bad in (-1, float("nan"), float("inf"), "50", True, 1e9):
        with pytest.raises(UserError, match="fault_ms"):
            RunSpec(device="cpu", fault="slow_rank", fault_ms=bad)
    with pytest.raises(UserError, match="explain"):
        RunSpec(device="cpu", explain="yes")
    with pytest.raises(UserError, match="fault"):
        RunSpec(device="cpu", fault="slow_gpu")
    hooked = RunSpec(device="cpu", fault="slow_comm", fault_ms=5, ddp={"comm_hook": "fp16"})
    assert "slow_comm" in hooked.unsupported()


def test_new_fields_at_default_keep_the_ids_of_points_measured_before_them():
    plain = RunSpec(device="cpu")
    body = {k: v for k, v in plain.to_dict().items() if k not in ("fault_ms", "explain")}
    import hashlib
    import json

    old_id = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:12]
    assert plain.run_id == old_id
    slow = RunSpec(device="cpu", fault_ms=5.0)
    assert slow.run_id != plain.run_id and slow.config_key != plain.config_key
    quiet = RunSpec(device="cpu", explain=False)
    # explain changes what is measured after the window, not the configuration
    assert quiet.config_key == plain.config_key and quiet.run_id != plain.run_id
