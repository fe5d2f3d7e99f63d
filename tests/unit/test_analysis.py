"""harness.analysis: medians and intervals, weak/strong scaling efficiency, ledger loading."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from distrinews.errors import UserError
from harness import analysis, fmt, store
from tests.helpers_results import FakeSweep, write_sweep


def runs(points: list[dict], **common) -> pd.DataFrame:
    """Hand-made runs: each dict gives world_size, samples_per_s (a list: one per repeat), ..."""
    rows = []
    for p in points:
        values = p.pop("samples_per_s")
        for repeat, x in enumerate(values):
            cfg = {
                "nodes": 1,
                "nproc_per_node": p["world_size"],
                "per_device_batch": 32,
                "grad_accum": 1,
                "precision": "bf16",
                "scaling_mode": "weak",
                **common,
                **p,
            }
            cfg.setdefault("global_batch", cfg["world_size"] * cfg["per_device_batch"])
            key = analysis.config_digest({k: v for k, v in cfg.items() if k != "status"})
            rows.append(
                {
                    "run_id": f"{key}-{repeat}",
                    "config_key": key,
                    "repeat": repeat,
                    "status": cfg.pop("status", "ok") if x is not None else "oom",
                    "samples_per_s": x,
                    "point_dir": f"points/{key}-{repeat}",
                    **cfg,
                }
            )
    return analysis.frame_from_rows(rows)


def test_weak_scaling_efficiency_is_x_n_over_n_x1():
    frame = runs(
        [
            {"world_size": 1, "samples_per_s": [100.0]},
            {"world_size": 2, "samples_per_s": [190.0]},
            {"world_size": 4, "samples_per_s": [360.0]},
        ]
    )
    curves = analysis.scaling(frame).set_index("world_size")
    assert list(curves["scaling_mode"].unique()) == ["weak"]
    assert curves.loc[1, "efficiency"] == pytest.approx(1.0)
    assert curves.loc[2, "speedup"] == pytest.approx(1.9)
    assert curves.loc[2, "efficiency"] == pytest.approx(0.95)
    assert curves.loc[4, "efficiency"] == pytest.approx(0.90)
    assert curves.loc[4, "ideal"] == pytest.approx(400.0)
    # Single runs: no interval is invented.
    assert curves["efficiency_lo"].isna().all()


def test_strong_scaling_groups_by_global_batch_not_per_device_batch():
    # Strong: global batch 256 fixed, per-device batch shrinks; weak: per-device 32 fixed.
    strong = runs(
        [
            {"world_size": 1, "per_device_batch": 256, "samples_per_s": [1000.0]},
            {"world_size": 2, "per_device_batch": 128, "samples_per_s": [1800.0]},
            {"world_size": 4, "per_device_batch": 64, "samples_per_s": [3000.0]},
        ],
        scaling_mode="strong",
    )
    weak = runs(
        [
            {"world_size": 1, "samples_per_s": [500.0]},
            {"world_size": 4, "samples_per_s": [1900.0]},
        ]
    )
    frame = analysis.normalize_frame(pd.concat([strong, weak], ignore_index=True))
    curves = analysis.scaling(frame)
    assert curves["curve_id"].nunique() == 2
    s = curves[curves["scaling_mode"] == "strong"].set_index("world_size")
    w = curves[curves["scaling_mode"] == "weak"].set_index("world_size")
    assert s.loc[4, "efficiency"] == pytest.approx(3000 / (4 * 1000))
    assert w.loc[4, "efficiency"] == pytest.approx(1900 / (4 * 500))
    names = fmt.curve_names(curves, frame)  # the report's name for each curve
    assert all(names[c].startswith("strong") for c in s["curve_id"])
    assert all(names[c].startswith("weak") for c in w["curve_id"])


def test_curve_without_one_gpu_uses_its_smallest_count_as_reference():
    frame = runs(
        [
            {"world_size": 2, "samples_per_s": [200.0]},
            {"world_size": 8, "samples_per_s": [640.0]},
        ]
    )
    curves = analysis.scaling(frame).set_index("world_size")
    assert curves.loc[8, "base_world_size"] == 2
    assert curves.loc[8, "efficiency"] == pytest.approx(640 * 2 / (8 * 200))


def test_single_gpu_count_gives_no_curve():
    frame = runs([{"world_size": 4, "samples_per_s": [1.0, 2.0]}])
    assert analysis.scaling(frame).empty


def test_repeats_give_median_and_an_interval_with_its_level():
    frame = runs(
        [
            {"world_size": 1, "samples_per_s": [100.0, 104.0, 98.0, 101.0, 99.0]},
            {"world_size": 2, "samples_per_s": [180.0, 186.0, 184.0, 190.0, 182.0]},
        ]
    )
    summary = analysis.per_configuration(frame).set_index("world_size")
    assert summary.loc[1, "samples_per_s"] == 100.0  # median, not mean (100.4)
    # 5 repeats: the order-statistic interval is [min, max], which covers 93.75%, not 95%.
    lo, hi = summary.loc[1, "samples_per_s_lo"], summary.loc[1, "samples_per_s_hi"]
    assert (lo, hi, summary.loc[1, "samples_per_s_level"]) == (98.0, 104.0, 0.9375)
    curves = analysis.scaling(frame).set_index("world_size")
    e = curves.loc[2]
    assert e["efficiency"] == pytest.approx(184.0 / 200.0)
    # The ratio's interval divides the two intervals end to end; its level is their product.
    assert e["efficiency_lo"] == pytest.approx(180.0 / (2 * 104.0))
    assert e["efficiency_hi"] == pytest.approx(190.0 / (2 * 98.0))
    assert e["efficiency_level"] == pytest.approx(0.9375**2)
    assert e["speedup_lo"] == pytest.approx(180.0 / 104.0)
    base = curves.loc[1]
    assert (base["efficiency_lo"], base["efficiency_hi"], base["efficiency_level"]) == (1, 1, 1)


def test_median_ci_single_value_has_no_interval():
    assert np.isnan(analysis.median_ci([5.0])[1])
    assert np.isnan(analysis.median_ci([5.0])[3])
    assert analysis.median_ci([])[0] != analysis.median_ci([])[0]  # NaN


def test_all_failed_point_is_kept_with_its_statuses():
    frame = runs(
        [
            {"world_size": 1, "samples_per_s": [100.0, 101.0]},
            {"world_size": 2, "samples_per_s": [None, None]},
        ]
    )
    summary = analysis.per_configuration(frame).set_index("world_size")
    assert len(summary) == 2
    assert np.isnan(summary.loc[2, "samples_per_s"])
    assert summary.loc[2, "failed"] == "oom"
    assert summary.loc[2, "n_ok"] == 0 and summary.loc[2, "n_runs"] == 2


def test_precision_speedup_against_fp32():
    fp32 = runs([{"world_size": 1, "precision": "fp32", "samples_per_s": [100.0, 100.0]}])
    bf16 = runs([{"world_size": 1, "precision": "bf16", "samples_per_s": [310.0, 290.0]}])
    frame = analysis.normalize_frame(pd.concat([fp32, bf16], ignore_index=True))
    effect = analysis.factor_effect(frame, "precision", reference="fp32")
    assert len(effect) == 1
    row = effect.iloc[0]
    assert (row["level"], row["reference"]) == ("bf16", "fp32")
    assert row["speedup"] == pytest.approx(3.0)
    # Two runs a side: [min, max] each, so [290/100, 310/100], covering at least 25%.
    assert (row["speedup_lo"], row["speedup_hi"]) == pytest.approx((2.9, 3.1))
    assert row["speedup_level"] == pytest.approx(0.25)


def test_load_frame_takes_latest_row_per_run_and_ignores_torn_tail(tmp_path):
    sweep = write_sweep(
        tmp_path, FakeSweep(world_sizes=(1, 2), batches=(16,), precisions=("bf16",))
    )
    rows = store.read_ledger(sweep)
    failed = next(r for r in rows if r["status"] != "ok")
    retry = {**failed, "status": "ok", "reason": None, "samples_per_s": 123.0}
    store.append_row(sweep, retry)
    with store.ledger_path(sweep).open("a") as f:
        f.write('{"run_id": "torn", "sta')  # a kill mid-append
    frame = analysis.load_frame(sweep)
    assert len(frame) == len(rows)  # the retry superseded, the torn line is ignored
    got = frame.set_index("run_id").loc[failed["run_id"]]
    assert got["status"] == "ok" and got["samples_per_s"] == 123.0
    assert frame.attrs["notes"] == []


def test_load_frame_notes_mixed_schema_and_non_numbers(tmp_path):
    sweep = write_sweep(tmp_path, FakeSweep(world_sizes=(1,), batches=(16,), failures=False))
    lines = store.ledger_path(sweep).read_text().splitlines()
    first = json.loads(lines[0])
    first["schema_version"] = 2
    first["samples_per_s"] = "fast"  # a contract violation a reader must survive
    lines[0] = json.dumps(first)
    store.ledger_path(sweep).write_text("\n".join(lines) + "\n")
    frame = analysis.load_frame(sweep)
    notes = " ".join(frame.attrs["notes"])
    assert "schema versions 1, 2" in notes
    assert "samples_per_s held non-numbers in 1 row" in notes
    assert frame["samples_per_s"].dtype == float


def test_load_frame_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no such results folder"):
        analysis.load_frame(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ledger.jsonl").write_text('{"run_id": "a", "status": "ok"}\nnot json\n')
    with pytest.raises(UserError, match="line 2"):
        analysis.load_frame(bad)


def test_empty_ledger_gives_empty_frames(tmp_path):
    (tmp_path / "ledger.jsonl").write_text("")
    frame = analysis.load_frame(tmp_path)
    assert frame.empty
    assert analysis.per_configuration(frame).empty
    assert analysis.scaling(frame).empty
    assert analysis.factor_effect(frame, "precision").empty
