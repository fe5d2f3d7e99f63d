"""The decomposition of lost efficiency (harness.attribution) on hand-made frames: exact sums,
weak and strong scaling, unmeasured parts left blank, and the sentence naming the biggest cause."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness import analysis, attribution
from tests.unit.test_analysis import runs

STEPS = 10


def _point(n, step_s, compute, data, straggler=None, exposed=None, **extra):
    batch = extra.pop("per_device_batch", 32)
    return {
        "world_size": n,
        "per_device_batch": batch,
        "samples_per_s": [n * batch / step_s],
        "measured_steps": STEPS,
        "measured_time_s": step_s * STEPS,
        "compute_step_time_s": compute,
        "data_wait_s": data,
        "straggler_wait_s": straggler,
        "exposed_comm_s": exposed,
        "allreduce_time_s": None if n == 1 else 0.020,
        "overlap_share": None if exposed is None else 1 - exposed / 0.020,
        **extra,
    }


def _decompose(frame):
    summary = analysis.per_configuration(frame)
    return attribution.decompose(summary, analysis.scaling(frame, summary=summary)), summary


def test_weak_scaling_parts_sum_exactly_to_the_lost_efficiency():
    frame = runs(
        [
            _point(1, 0.100, compute=0.095, data=0.005),  # one rank: comm and straggler null
            _point(4, 0.125, compute=0.100, data=0.005, straggler=0.010, exposed=0.008),
        ]
    )
    decomp, _ = _decompose(frame)
    assert len(decomp) == 1  # N0 itself loses nothing and is not a row
    row = decomp.iloc[0]
    assert row["efficiency"] == pytest.approx(0.8)
    assert row["loss_pp"] == pytest.approx(20.0)
    assert row["compute_pp"] == pytest.approx(4.0)  # 5 ms more compute in a 125 ms step
    assert row["data_wait_pp"] == pytest.approx(0.0)
    assert row["straggler_pp"] == pytest.approx(8.0)
    assert row["exposed_comm_pp"] == pytest.approx(6.4)
    assert row["unexplained_pp"] == pytest.approx(1.6)
    parts = sum(row[f"{c}_pp"] for c in attribution.COMPONENTS)
    assert parts == row["loss_pp"]  # exact, not approximately
    assert bool(row["explained"])


def test_strong_scaling_measures_against_the_shrunken_ideal_and_names_the_batch_effect():
    frame = runs(
        [
            _point(1, 0.80, compute=0.78, data=0.02, per_device_batch=256),
            _point(
                4,
                0.25,
                compute=0.21,
                data=0.005,
                straggler=0.010,
                exposed=0.020,
                per_device_batch=64,
            ),
        ],
        scaling_mode="strong",
        global_batch=256,
    )
    decomp, summary = _decompose(frame)
    row = decomp.iloc[0]
    assert row["scaling_mode"] == "strong"
    assert row["loss_pp"] == pytest.approx(20.0)
    # ideal compute at N=4 is 0.78/4 = 0.195 s: 15 ms over it in a 250 ms step
    assert row["compute_pp"] == pytest.approx(6.0)
    assert row["data_wait_pp"] == pytest.approx(0.0)
    assert row["straggler_pp"] == pytest.approx(4.0)
    assert row["exposed_comm_pp"] == pytest.approx(8.0)
    assert row["unexplained_pp"] == pytest.approx(2.0)
    assert sum(row[f"{c}_pp"] for c in attribution.COMPONENTS) == row["loss_pp"]
    assert attribution.part_name("compute", "strong") == "compute (smaller per-device batch)"
    point = summary.set_index("config_key").loc[row["config_key"]].to_dict()
    base = summary.set_index("config_key").loc[row["base_key"]].to_dict()
    sentence = attribution.biggest_cause(row.to_dict(), point, base)
    assert sentence.startswith("At N=4, 8.0 of the 20.0 points lost are exposed all-reduce")
    assert "backward hides 0% of a 20.0 ms all-reduce" in sentence


def test_a_negative_remainder_is_shown_not_clipped():
    frame = runs(
        [
            _point(1, 0.100, compute=0.095, data=0.005),
            _point(2, 0.110, compute=0.100, data=0.005, straggler=0.010, exposed=0.010),
        ]
    )
    row = _decompose(frame)[0].iloc[0]
    assert row["unexplained_pp"] < 0
    assert sum(row[f"{c}_pp"] for c in attribution.COMPONENTS) == pytest.approx(row["loss_pp"])


def test_unmeasured_parts_stay_blank_and_the_sentence_says_so():
    frame = runs(
        [
            _point(1, 0.100, compute=None, data=0.005),  # explain was off
            _point(2, 0.125, compute=None, data=0.005),
        ]
    )
    row = _decompose(frame)[0].iloc[0]
    assert not row["explained"]
    assert all(math.isnan(row[f"{c}_pp"]) for c in attribution.COMPONENTS)
    assert row["loss_pp"] == pytest.approx(20.0)
    assert "not measured" in attribution.biggest_cause(row.to_dict(), {}, {})


@pytest.mark.parametrize(
    ("part", "phrase"),
    [
        ("straggler", "straggler wait: the typical rank waits 30.0 ms per step"),
        ("data_wait", "data wait: 35.0 ms per step waiting for the next batch"),
        ("compute", "compute slowdown: a compute-only step takes 130.0 ms"),
    ],
)
def test_the_sentence_names_the_biggest_cause_with_its_numbers(part, phrase):
    big = {"straggler": {"straggler": 0.030}, "data_wait": {"data": 0.035},
           "compute": {"compute": 0.130}}[part]  # fmt: skip
    kw = {"compute": 0.100, "data": 0.005, "straggler": 0.001, "exposed": 0.001, **big}
    frame = runs([_point(1, 0.105, compute=0.100, data=0.005), _point(2, 0.150, **kw)])
    decomp, summary = _decompose(frame)
    row = attribution.headline_row(decomp, summary, "samples_per_s")
    by_key = summary.set_index("config_key")
    sentence = attribution.biggest_cause(
        row, by_key.loc[row["config_key"]].to_dict(), by_key.loc[row["base_key"]].to_dict()
    )
    assert phrase in sentence, sentence


def test_the_why_page_carries_the_definitions_word_for_word():
    readme = (Path(__file__).resolve().parents[2] / "docs" / "why.md").read_text()
    flat = " ".join(readme.split())  # line wrapping aside
    for term, text in attribution.DEFINITIONS:
        assert f"**{term}**: {text}" in flat, term
