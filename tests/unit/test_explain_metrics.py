"""The explain figures (distrinews.metrics.explain_figures, step_figures) on hand-made step
times and probe marks, and the RunSpec fields that plant slowdowns."""

from __future__ import annotations

import pytest

from distrinews.errors import UserError
from distrinews.metrics import (
    bus_bandwidth,
    explain_figures,
    exposure_at_ceiling,
    lower_median,
    overlap_share,
    step_figures,
    union_length,
)
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


def test_one_rank_has_compute_but_no_ceiling():
    out = explain_figures(
        work_step_times_s=[[0.10, 0.12, 0.10]],
        work_data_wait_s=[[0.01, 0.01, 0.01]],
        allreduce_time_s=None,
        grad_bytes=1000,
    )
    assert out["compute_step_time_s"] == pytest.approx(0.09)
    assert out["grad_bytes"] == 1000
    for key in ("allreduce_time_s", "allreduce_algbw_gbps", "allreduce_busbw_gbps"):
        assert out[key] is None, key  # null, never a faked 0


def test_the_ceiling_gives_the_bandwidths():
    out = explain_figures(
        work_step_times_s=[[0.100] * 5, [0.150] * 5],
        work_data_wait_s=[[0.002] * 5, [0.002] * 5],
        allreduce_time_s=0.040,
        grad_bytes=80_000_000,
    )
    assert out["compute_step_time_s"] == pytest.approx(0.098)  # the faster (typical) rank
    assert out["allreduce_algbw_gbps"] == pytest.approx(2.0)
    assert out["allreduce_busbw_gbps"] == pytest.approx(2.0)  # 2(N-1)/N = 1 at N = 2


def test_overlap_share_is_clamped_and_null_without_its_inputs():
    assert overlap_share(0.010, 0.040) == pytest.approx(0.75)
    assert overlap_share(0.050, 0.040) == 0.0 and overlap_share(-0.001, 0.040) == 1.0
    assert overlap_share(None, 0.04) is None and overlap_share(0.01, None) is None


# -- inside the synchronised step (step_figures on hand-made probe marks) ---------------------


def _mark(step, *, data=0.002, fwd=0.0, comm=0.0, rq=0.0, backward=0.050, buckets=None):
    """One rank's probe marks for one step (seconds), as StepProbe.step_marks writes them."""
    buckets = buckets if buckets is not None else [[0.020, 0.004], [0.048, 0.006]]
    return {"step_s": step, "data_s": data, "forward_sync_s": fwd, "comm_wait_s": comm,
            "backward_s": backward, "buckets": buckets, "run_queue_s": rq}  # fmt: skip


def test_union_length_counts_overlaps_once():
    assert union_length([(0, 2), (1, 3), (5, 6)]) == pytest.approx(4.0)
    assert union_length([(0, 5), (1, 2)]) == pytest.approx(5.0)
    assert union_length([]) == 0.0


def test_exposure_at_ceiling_runs_the_buckets_one_after_another():
    # Bucket 0 ready at 0 runs 10 ms; bucket 1 ready at 4 waits for it, runs 3 ms until 13;
    # the last bucket was ready at 4, so 9 ms are exposed.
    assert exposure_at_ceiling([0.0, 0.004], [0.010, 0.003]) == pytest.approx(0.009)
    # Buckets far apart: only the last one's own time is exposed.
    assert exposure_at_ceiling([0.0, 0.050], [0.010, 0.003]) == pytest.approx(0.003)


def test_a_slow_rank_is_straggler_wait_and_the_last_ranks_wait_is_exposed():
    # Rank 1 works 30 ms longer; rank 0 waits those 30 ms plus the 6 ms the last rank waits
    # for its last bucket (exactly what that bucket costs at the ceiling).
    fast = [_mark(0.108, comm=0.036) for _ in range(4)]
    slow = [_mark(0.108, comm=0.006) for _ in range(4)]
    out = step_figures([fast, slow], ceiling_buckets_s=[0.004, 0.006])
    m = out["metrics"]
    assert m["straggler_wait_s"] == pytest.approx(0.030)
    assert m["exposed_comm_s"] == pytest.approx(0.006)
    assert m["comm_contention_s"] == pytest.approx(0.0)
    assert m["step_work_s"] == pytest.approx(0.108 - 0.002 - 0.036)  # the typical (faster) rank
    assert m["step_work_s_rank_spread"] == pytest.approx(0.100 / 0.070)
    assert m["step_time_instrumented_s"] == pytest.approx(0.108)
    # The parts are the typical rank's step, exactly.
    parts = m["step_work_s"] + 0.002 + m["straggler_wait_s"] + m["exposed_comm_s"]
    assert parts + m["comm_contention_s"] + m["run_queue_wait_s"] == pytest.approx(0.108)


def test_the_last_ranks_wait_for_a_core_is_contention_not_a_slow_rank():
    # A busy neighbour on rank 1's core: rank 1 waits 25 ms for its core and works as long as
    # rank 0; rank 0 waits for rank 1 those 25 ms. That is contention reaching everyone, not a
    # straggler; its own wait for a core (2 ms) stays run_queue_wait_s.
    typical = [_mark(0.108, comm=0.031, rq=0.002) for _ in range(4)]
    busy = [_mark(0.108, comm=0.006, rq=0.027) for _ in range(4)]
    m = step_figures([typical, busy], ceiling_buckets_s=[0.004, 0.006])["metrics"]
    assert m["straggler_run_queue_s"] == pytest.approx(0.025)
    assert m["straggler_wait_s"] == pytest.approx(0.0)
    assert m["run_queue_wait_s"] == pytest.approx(0.002)
    parts = m["step_work_s"] + 0.002 + m["exposed_comm_s"] + m["run_queue_wait_s"]
    assert parts + m["straggler_wait_s"] + m["straggler_run_queue_s"] == pytest.approx(0.108)
    # A rank that is slow at its own work (a sleep: not waiting for a core) stays a straggler,
    # even when the typical rank waits for a core more than it does.
    typical = [_mark(0.108, comm=0.036, rq=0.003) for _ in range(4)]
    slow = [_mark(0.108, comm=0.006, rq=0.0) for _ in range(4)]
    m = step_figures([typical, slow], ceiling_buckets_s=[0.004, 0.006])["metrics"]
    assert m["straggler_run_queue_s"] == 0.0 and m["straggler_wait_s"] == pytest.approx(0.030)
    # Never more than the wait itself: three ranks, the last one waited 35 ms longer for a
    # core than the typical one but arrived only 10 ms after it (it works less): 10 ms move.
    ranks = [
        [_mark(0.108, comm=0.016) for _ in range(4)],
        [_mark(0.108, comm=0.016, rq=0.005) for _ in range(4)],  # the typical rank
        [_mark(0.108, comm=0.006, rq=0.040) for _ in range(4)],  # the last
    ]
    m = step_figures(ranks, ceiling_buckets_s=[0.004, 0.006])["metrics"]
    assert m["straggler_run_queue_s"] == pytest.approx(0.010)
    assert m["straggler_wait_s"] == pytest.approx(0.0, abs=1e-12)


def test_an_all_reduce_slower_in_the_step_than_alone_is_contention_not_exposure():
    # Both ranks wait 16 ms for the last bucket, whose ceiling is 6 ms: 10 ms is contention.
    ranks = [[_mark(0.100, comm=0.016, rq=0.004) for _ in range(3)] for _ in range(2)]
    m = step_figures(ranks, ceiling_buckets_s=[0.004, 0.006])["metrics"]
    assert m["exposed_comm_s"] == pytest.approx(0.006)
    assert m["comm_contention_s"] == pytest.approx(0.010)
    assert m["run_queue_wait_s"] == pytest.approx(0.004)
    assert m["step_work_s"] == pytest.approx(0.100 - 0.002 - 0.016 - 0.004)
    assert m["straggler_wait_s"] == pytest.approx(0.0)


def test_what_the_hook_spends_before_issuing_the_collective_is_exposure_not_contention():
    # A planted 40 ms delay in the last bucket's hook (slow_comm): the last rank waits 46 ms,
    # all of it what the bucket costs its hook plus its 6 ms ceiling.
    buckets = [[0.020, 0.004, 0.0], [0.048, 0.046, 0.040]]
    ranks = [[_mark(0.150, comm=0.046, buckets=buckets) for _ in range(3)] for _ in range(2)]
    m = step_figures(ranks, ceiling_buckets_s=[0.004, 0.006])["metrics"]
    assert m["exposed_comm_s"] == pytest.approx(0.046)
    assert m["comm_contention_s"] == pytest.approx(0.0)


def test_ddps_forward_collective_counts_as_exposed_as_measured():
    ranks = [[_mark(0.100, fwd=0.003, comm=0.006) for _ in range(3)] for _ in range(2)]
    m = step_figures(ranks, ceiling_buckets_s=[0.004, 0.006])["metrics"]
    assert m["exposed_comm_s"] == pytest.approx(0.009)
    assert m["comm_contention_s"] == pytest.approx(0.0, abs=1e-12)


def test_one_rank_has_no_ceiling_so_its_whole_wait_is_exposed_and_buckets_are_medians():
    marks = [
        _mark(0.05, comm=0.001, buckets=[[0.010, 0.002], [0.030, 0.001]]),
        _mark(0.05, comm=0.003, buckets=[[0.012, 0.004], [0.034, 0.003]]),
        _mark(0.05, comm=0.002, buckets=[[0.011, 0.003], [0.032, 0.002]]),
    ]
    out = step_figures([marks], ceiling_buckets_s=None)
    m = out["metrics"]
    assert m["exposed_comm_s"] == pytest.approx(0.002) and m["comm_contention_s"] is None
    assert m["straggler_wait_s"] == 0.0 and m["step_work_s_rank_spread"] == 1.0
    assert out["buckets"] == [
        {"ready_s": pytest.approx(0.011), "step_allreduce_s": pytest.approx(0.003)},
        {"ready_s": pytest.approx(0.032), "step_allreduce_s": pytest.approx(0.002)},
    ]
    assert m["backward_time_s"] == pytest.approx(0.050)
    assert m["allreduce_step_time_s"] == pytest.approx(0.005)  # 3 + 2 ms, never overlapping


def test_no_run_queue_counter_means_the_wait_stays_in_work():
    ranks = [[{**_mark(0.1), "run_queue_s": None}] * 2]
    m = step_figures(ranks, ceiling_buckets_s=None)["metrics"]
    assert m["run_queue_wait_s"] is None and m["step_work_s"] == pytest.approx(0.098)
    with pytest.raises(ValueError):
        step_figures([[]], ceiling_buckets_s=None)


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
