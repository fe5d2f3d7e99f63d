"""The decomposition of lost efficiency (harness.attribution) on hand-made frames: exact sums,
weak and strong scaling, unmeasured parts left blank, the sentences naming the biggest cause
and contention, and every check that compares a part with what else the run measured -- each
with a planted disagreement that must be named, and a consistent point that must pass."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import analysis, attribution
from tests.unit.test_analysis import runs

STEPS = 10


def _point(n, step_s, work, data, straggler=None, exposed=None, **extra):
    """A point whose instrumented steps agree with its window unless ``extra`` says otherwise."""
    batch = extra.pop("per_device_batch", 32)
    rq, comm = extra.pop("rq", 0.0), extra.pop("comm", None if n == 1 else 0.0)
    parts = sum(x or 0.0 for x in (work, data, rq, straggler, exposed, comm))
    return {
        "world_size": n,
        "per_device_batch": batch,
        "samples_per_s": [n * batch / step_s],
        "measured_steps": STEPS,
        "measured_time_s": step_s * STEPS,
        "step_work_s": work,
        "compute_step_time_s": None if work is None else 0.98 * work,
        "data_wait_s": data,
        "run_queue_wait_s": rq,
        "comm_contention_s": comm,
        "straggler_wait_s": straggler,
        "exposed_comm_s": exposed,
        "step_work_s_rank_spread": 1.0 if straggler is None else 1 + straggler / work,
        "step_time_instrumented_s": parts,
        "allreduce_time_s": None if n == 1 else 0.020,
        "allreduce_bucketed_time_s": None if n == 1 else 0.022,
        "allreduce_step_time_s": None if n == 1 else 0.025,
        "overlap_share": None if exposed is None or n == 1 else 1 - exposed / 0.022,
        **extra,
    }


def _decompose(frame):
    summary = analysis.per_configuration(frame)
    return attribution.decompose(summary, analysis.scaling(frame, summary=summary)), summary


def _sentence(decomp, summary):
    row = attribution.headline_row(decomp, summary, "samples_per_s")
    by_key = summary.set_index("config_key")
    point, base = by_key.loc[row["config_key"]].to_dict(), by_key.loc[row["base_key"]].to_dict()
    return row, point, attribution.biggest_cause(row, point, base)


def test_weak_scaling_parts_sum_exactly_to_the_lost_efficiency():
    frame = runs(
        [
            _point(1, 0.100, work=0.094, data=0.005, exposed=0.001),  # DDP's reducer over one
            _point(4, 0.125, work=0.099, data=0.005, straggler=0.010, exposed=0.009, rq=0.002),
        ]
    )
    decomp, _ = _decompose(frame)
    assert len(decomp) == 1  # N0 itself loses nothing and is not a row
    row = decomp.iloc[0]
    assert row["efficiency"] == pytest.approx(0.8)
    assert row["loss_pp"] == pytest.approx(20.0)
    assert row["compute_pp"] == pytest.approx(4.0)  # 5 ms more work in a 125 ms step
    assert row["contention_pp"] == pytest.approx(1.6)
    assert row["data_wait_pp"] == pytest.approx(0.0)
    assert row["straggler_pp"] == pytest.approx(8.0)
    assert row["exposed_comm_pp"] == pytest.approx(6.4)  # 9 ms against N0's 1 ms
    assert row["unexplained_pp"] == pytest.approx(0.0, abs=1e-9)
    parts = sum(row[f"{c}_pp"] for c in attribution.COMPONENTS)
    assert parts == row["loss_pp"]  # exact, not approximately
    assert bool(row["explained"]) and row["checks"] == ()


def test_strong_scaling_measures_against_the_shrunken_ideal_and_names_the_batch_effect():
    frame = runs(
        [
            _point(1, 0.80, work=0.78, data=0.02, per_device_batch=256),
            _point(4, 0.25, work=0.21, data=0.005, straggler=0.010, exposed=0.020,
                   per_device_batch=64),
        ],
        scaling_mode="strong",
        global_batch=256,
    )  # fmt: skip
    decomp, summary = _decompose(frame)
    row = decomp.iloc[0]
    assert row["scaling_mode"] == "strong"
    assert row["loss_pp"] == pytest.approx(20.0)
    # ideal work at N=4 is 0.78/4 = 0.195 s: 15 ms over it in a 250 ms step
    assert row["compute_pp"] == pytest.approx(6.0)
    assert row["data_wait_pp"] == pytest.approx(0.0)
    assert row["straggler_pp"] == pytest.approx(4.0)
    assert row["exposed_comm_pp"] == pytest.approx(8.0)
    assert row["unexplained_pp"] == pytest.approx(2.0)
    assert sum(row[f"{c}_pp"] for c in attribution.COMPONENTS) == row["loss_pp"]
    assert attribution.part_name("compute", "strong") == "compute (smaller per-device batch)"
    _row, _, sentence = _sentence(decomp, summary)
    assert sentence.startswith(
        "At N=4, 20.0 points of efficiency are lost; the biggest cause is exposed all-reduce, "
        "40% of them (8.0 pp)"
    ), sentence
    assert "backward hides 9% of a 22.0 ms all-reduce" in sentence


def test_a_negative_remainder_is_shown_not_clipped_and_named_by_its_check():
    frame = runs(
        [
            _point(1, 0.100, work=0.095, data=0.005),
            # the instrumented steps add up to 125 ms, the window to 110 ms
            _point(2, 0.110, work=0.100, data=0.005, straggler=0.010, exposed=0.010),
        ]
    )
    row = _decompose(frame)[0].iloc[0]
    assert row["unexplained_pp"] < -5
    assert sum(row[f"{c}_pp"] for c in attribution.COMPONENTS) == pytest.approx(row["loss_pp"])
    assert any("add up to" in c for c in row["checks"]), row["checks"]


def test_unmeasured_parts_stay_blank_and_the_sentence_says_so():
    frame = runs(
        [
            _point(1, 0.100, work=None, data=0.005),  # explain was off (or results too old)
            _point(2, 0.125, work=None, data=0.005),
        ]
    )
    row = _decompose(frame)[0].iloc[0]
    assert not row["explained"]
    assert all(math.isnan(row[f"{c}_pp"]) for c in attribution.COMPONENTS)
    assert row["loss_pp"] == pytest.approx(20.0)
    assert "not measured" in attribution.biggest_cause(row.to_dict(), {}, {})


def test_a_missing_run_queue_counter_is_measured_as_zero_its_time_stays_in_compute():
    frame = runs(
        [
            _point(1, 0.100, work=0.095, data=0.005, rq=None),
            _point(2, 0.125, work=0.110, data=0.005, straggler=0.005, exposed=0.005, rq=None),
        ]
    )
    row = _decompose(frame)[0].iloc[0]
    assert row["explained"] and row["contention_pp"] == pytest.approx(0.0)
    assert row["compute_pp"] == pytest.approx(12.0)


@pytest.mark.parametrize(
    ("part", "phrase"),
    [
        ("straggler", "straggler wait, 96% of them (18.5 pp): the typical rank waits 24.0 ms"),
        ("data_wait", "data wait, 86% of them (21.4 pp): 35.0 ms per step waiting"),
        ("compute", "compute slowdown, 86% of them (21.4 pp): a rank's own work takes 130.0 ms"),
    ],
)
def test_the_sentence_names_the_biggest_cause_as_a_share_with_its_numbers(part, phrase):
    big = {"straggler": {"straggler": 0.024}, "data_wait": {"data": 0.035},
           "compute": {"work": 0.130}}[part]  # fmt: skip
    kw = {"work": 0.100, "data": 0.005, "straggler": 0.004, "exposed": 0.001, **big}
    step = kw["work"] + kw["data"] + kw["straggler"] + kw["exposed"]
    frame = runs([_point(1, 0.105, work=0.100, data=0.005), _point(2, step, **kw)])
    _row, _, sentence = _sentence(*_decompose(frame))
    assert phrase in sentence, sentence


def test_a_part_larger_than_the_loss_is_never_more_than_all_of_it():
    # Exposed all-reduce costs 32 pp while compute got cheaper than at N0: the loss is 29 pp.
    frame = runs(
        [
            _point(1, 0.071, work=0.066, data=0.005),
            _point(2, 0.100, work=0.063, data=0.005, straggler=0.0, exposed=0.032),
        ]
    )
    row, _, sentence = _sentence(*_decompose(frame))
    assert row["exposed_comm_pp"] > row["loss_pp"] > 0
    assert "32.0 of the 29.0" not in sentence
    assert "100% of the 32.0 pp the parts above zero add up to (32.0 pp)" in sentence, sentence


def test_contention_is_named_in_words_with_what_to_do():
    frame = runs(
        [
            _point(1, 0.100, work=0.095, data=0.005, cpu_cores=2, cpu_oversubscription=0.5),
            _point(2, 0.150, work=0.100, data=0.005, straggler=0.0, exposed=0.005, rq=0.025,
                   comm=0.015, cpu_cores=2, cpu_oversubscription=1.0, load_avg_1m=3.2),
        ]
    )  # fmt: skip
    decomp, summary = _decompose(frame)
    row, point, sentence = _sentence(decomp, summary)
    assert row["contention_pp"] == pytest.approx(40 / 150 * 100)
    assert "the biggest cause is contention, " in sentence
    assert "ranks competing for 2 cores: 26.7 pp" in sentence and "To win it back" in sentence
    assert "waited 25.0 ms per step for a core" in sentence
    assert "the all-reduce ran 15.0 ms longer inside the step than alone" in sentence
    words = attribution.contention_sentence(row, point)
    assert words.startswith("At N=2, ranks competing for 2 cores: 26.7 pp (2 ranks × 1 thread")
    assert "load average 3.2" in words and "OMP_NUM_THREADS" in words
    # Below 1 pp there is nothing to say.
    assert attribution.contention_sentence({**row, "contention_pp": 0.5}, point) is None


def test_waiting_for_a_last_rank_that_waited_for_a_core_is_contention():
    # N=2: 20 ms of the typical rank's wait for the last one was the last rank waiting for a
    # core (straggler_run_queue_s): contention, named in words; the straggler keeps 10 ms.
    frame = runs(
        [
            _point(1, 0.100, work=0.095, data=0.005, cpu_cores=2, cpu_oversubscription=0.5),
            _point(2, 0.140, work=0.095, data=0.005, straggler=0.010, exposed=0.010,
                   straggler_run_queue_s=0.020, cpu_cores=2, cpu_oversubscription=1.0),
        ]
    )  # fmt: skip
    frame.loc[frame["world_size"] == 2, "step_time_instrumented_s"] = 0.140
    decomp, summary = _decompose(frame)
    row = decomp.iloc[0]
    assert row["contention_pp"] == pytest.approx(20 / 140 * 100)
    assert row["straggler_pp"] == pytest.approx(10 / 140 * 100)
    assert abs(row["unexplained_pp"]) < 1e-9
    point = summary.set_index("config_key").loc[row["config_key"]].to_dict()
    assert "waited 20.0 ms per step for a last rank that was waiting for a core" in (
        attribution.contention_cause(point)
    )


def test_gpu_clock_throttling_moves_work_from_compute_to_contention():
    frame = runs(
        [
            _point(1, 0.100, work=0.095, data=0.005, gpu_clock_loss_share=0.0),
            _point(2, 0.120, work=0.110, data=0.005, straggler=0.0, exposed=0.005,
                   gpu_clock_loss_share=0.1, gpu_throttle_reasons="sw_power_cap"),
        ]
    )  # fmt: skip
    decomp, summary = _decompose(frame)
    row = decomp.iloc[0]
    assert row["contention_pp"] == pytest.approx(0.011 / 0.120 * 100)
    assert row["compute_pp"] == pytest.approx((0.099 - 0.095) / 0.120 * 100)
    point = summary.set_index("config_key").loc[row["config_key"]].to_dict()
    assert "the GPUs ran 10% below their maximum clock" in attribution.contention_cause(point)
    assert "power limit" in attribution.contention_sentence(row.to_dict(), point)


# -- checks: each can fail on its own ---------------------------------------------------------

CONSISTENT = dict(work=0.100, data=0.005, straggler=0.005, exposed=0.010)


@pytest.mark.parametrize(
    ("planted", "says"),
    [
        ({"allreduce_step_time_s": 0.004}, "longer than the all-reduce was in flight"),
        ({"allreduce_bucketed_time_s": 0.006}, "exceeds the whole all-reduce at its ceiling"),
        ({"step_work_s_rank_spread": 1.30}, "disagrees with the ranks' spread of work"),
        ({"step_time_instrumented_s": 0.200}, "is unlike the window's"),
        # the window's step is 100 ms, yet the instrumented steps' parts add up to 120 ms
        (
            {
                "samples_per_s": [64 / 0.100],
                "measured_time_s": 0.100 * STEPS,
                "step_time_instrumented_s": 0.105,
            },
            "add up to",
        ),
    ],
)
def test_each_check_names_the_measurements_that_disagree(planted, says):
    base = _point(1, 0.105, work=0.100, data=0.005)
    ok = runs([dict(base), _point(2, 0.120, **CONSISTENT)])
    assert _decompose(ok)[0].iloc[0]["checks"] == ()  # the consistent twin passes every check
    bad = runs([dict(base), {**_point(2, 0.120, **CONSISTENT), **planted}])
    found = _decompose(bad)[0].iloc[0]["checks"]
    assert len(found) >= 1 and any(says in c for c in found), found


def test_a_part_below_minus_five_points_is_named():
    frame = runs(
        [
            _point(1, 0.100, work=0.095, data=0.005),
            _point(2, 0.110, work=0.080, data=0.005, straggler=0.010, exposed=0.015),
        ]
    )
    checks = _decompose(frame)[0].iloc[0]["checks"]
    assert any("compute slowdown is -13.6 pp" in c for c in checks), checks


def test_the_why_page_carries_the_definitions_word_for_word():
    # `python -m harness.attribution` prints them, for pasting.
    page = (Path(__file__).resolve().parents[2] / "docs" / "why.md").read_text()
    flat = " ".join(page.split())  # line wrapping aside
    for term, text in attribution.DEFINITIONS:
        assert f"**{term}**: {text}" in flat, term


def test_with_the_runs_each_point_is_its_median_run_whose_parts_add_up():
    # Three repeats of N=2 whose parts trade places: the column-wise medians (work 0.100,
    # straggler 0.010, exposed 0.010) add up to 120 ms, not to the median run's 130 ms step.
    repeats = [  # (step, work, straggler, exposed); data 5 ms each
        (0.130, 0.110, 0.005, 0.010),  # the median run
        (0.120, 0.100, 0.010, 0.005),
        (0.140, 0.090, 0.020, 0.025),
    ]
    two = _point(2, 0.130, work=0.110, data=0.005, straggler=0.005, exposed=0.010)
    two["samples_per_s"] = [2 * 32 / step for step, *_ in repeats]
    frame = runs([_point(1, 0.100, work=0.095, data=0.005), two])
    for i, (step, work, straggler, exposed) in enumerate(repeats):
        at = (frame["world_size"] == 2) & (frame["repeat"] == i)
        frame.loc[at, ["measured_time_s", "step_work_s", "straggler_wait_s", "exposed_comm_s"]] = (
            step * STEPS, work, straggler, exposed,
        )  # fmt: skip
    summary = analysis.per_configuration(frame)
    curves = analysis.scaling(frame, summary=summary)
    by_medians = attribution.decompose(summary, curves).iloc[0]
    by_run = attribution.decompose(summary, curves, frame).iloc[0]
    assert by_run["loss_pp"] == by_medians["loss_pp"] == pytest.approx(100 * (1 - 100 / 130))
    assert abs(by_medians["unexplained_pp"]) > 3  # columns' medians come from different runs
    assert by_run["unexplained_pp"] == pytest.approx(0.0, abs=1e-9)  # one run's parts
    assert by_run["compute_pp"] == pytest.approx((0.110 - 0.095) / 0.130 * 100)


def test_median_runs_picks_the_median_run_and_averages_the_two_middle_ones():
    """Odd count: the run with the median throughput, whole. Even count: the mean of the two
    middle runs for every number both have; text and lists from the lower one."""
    frame = pd.DataFrame(
        {
            "config_key": ["a", "a", "a", "b", "b", "b", "b", "c"],
            "status": ["ok"] * 7 + ["failed"],
            "samples_per_s": [30.0, 10.0, 20.0, 4.0, 1.0, 3.0, 2.0, 9.0],
            "step_work_s": [0.3, 0.1, 0.2, 0.04, 0.01, 0.03, 0.02, 0.9],
            "note": ["x3", "x1", "x2", "y4", "y1", "y3", "y2", "z"],
            "only_some": [1.0, 1.0, 5.0, np.nan, 1.0, 6.0, 2.0, 0.0],
        }
    )
    runs = attribution.median_runs(frame).set_index("config_key")
    assert list(runs.index) == ["a", "b"]  # first-seen order; the failed-only "c" is gone
    assert runs.loc["a", "samples_per_s"] == 20.0 and runs.loc["a", "note"] == "x2"
    assert runs.loc["a", "step_work_s"] == pytest.approx(0.2)
    # b's middle runs are 2.0 and 3.0 samples/s
    assert runs.loc["b", "samples_per_s"] == pytest.approx(2.5)
    assert runs.loc["b", "step_work_s"] == pytest.approx(0.025)
    assert runs.loc["b", "note"] == "y2" and runs.loc["b", "only_some"] == pytest.approx(4.0)
