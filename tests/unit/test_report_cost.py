"""harness.report.cost from hand-made ledger rows: the energy sentence and chart, the memory
model against the device's capacity, and the largest-batch table."""

from __future__ import annotations

import pandas as pd

from distrinews.runspec import RunSpec
from harness import analysis, store
from harness import report as R
from harness.report import cost

ENV = {"gpus": [{"memory_total_gib": 79.6}] * 8, "gpu_count": 8}
#: Planted joules per sample per GPU count: bf16 costs 9% more at 8 GPUs, fp32 10% less.
JOULES = {"bf16": {1: 1.00, 2: 1.02, 4: 1.05, 8: 1.09}, "fp32": {1: 3.0, 2: 3.0, 4: 3.0, 8: 2.7}}


def row(spec: RunSpec, **metrics) -> dict:
    return {
        "schema_version": 1,
        "sweep": "cost",
        "run_id": spec.run_id,
        "config_key": spec.config_key,
        "repeat": spec.repeat,
        "status": "ok",
        "reason": None,
        "scaling_mode": "weak",
        "point_dir": f"points/{spec.run_id}",
        **store.config_columns(spec),
        "samples_per_s": 1000.0 * spec.world_size,
        **metrics,
    }


def energy_frame() -> pd.DataFrame:
    rows = []
    for precision, by_n in JOULES.items():
        for n, joules in by_n.items():
            spec = RunSpec(nproc_per_node=n, precision=precision, per_device_batch=64)
            rows.append(
                row(
                    spec,
                    energy_j_per_sample=joules,
                    samples_per_kwh=3.6e6 / joules,
                    power_w_mean_per_gpu=joules * 1000.0,
                    energy_method="counter",
                )
            )
    return analysis.frame_from_rows(rows)


def test_energy_section_says_what_more_gpus_cost_per_sample():
    report = R.build_report(energy_frame(), env=ENV, generated_at="t")
    ids = [s.id for s in report.sections]
    assert ids.index("energy") == ids.index("scaling") + 1  # beside the efficiency curve
    energy = next(s for s in report.sections if s.id == "energy")
    assert "going from 1 to 8 GPUs costs 9% more energy per sample" in energy.intro
    assert "going from 1 to 8 GPUs costs 10% less energy per sample" in energy.intro
    (fig,) = energy.figures
    assert sorted(len(t.x) for t in fig.data) == [4, 4]
    bf16 = next(t for t in fig.data if "bf16" in t.name)
    assert list(bf16.y) == [1.00, 1.02, 1.05, 1.09]
    assert len(energy.tables[0].rows) == 8
    html = R.render_html(report)
    assert 'id="energy"' in html and "J/sample" in html
    text = R.render_text(report)
    assert "Energy per sample" in text and "costs 9% more energy per sample" in text


def test_no_energy_no_section():
    frame = energy_frame()
    for col in ("energy_j_per_sample", "samples_per_kwh", "power_w_mean_per_gpu"):
        frame[col] = float("nan")
    report = R.build_report(frame, env=ENV, generated_at="t")
    assert "energy" not in [s.id for s in report.sections]


def memory_rows() -> list[dict]:
    rows = []
    for b in (32, 64, 128):
        spec = RunSpec(per_device_batch=b)  # base bf16 fixed@128, 1 GPU
        rows.append(row(spec, mem_peak_gib=2.0 + 0.25 * b))
    return rows


def test_memory_section_fits_the_line_and_shows_the_capacity():
    frame = analysis.frame_from_rows(memory_rows())
    report = R.build_report(frame, env=ENV, generated_at="t")
    memory = next(s for s in report.sections if s.id == "memory")
    (table,) = memory.tables
    (cells,) = table.rows
    assert cells[0] == "base bf16 fixed@128 x1 cuda"
    assert cells[1:4] == ("2.00", "256.0", "3")  # fixed GiB, MiB per sample, runs
    assert cells[-1] == "310"  # (79.6 - 2) / 0.25 = 310.4
    (fig,) = memory.figures
    assert any("79.6 GiB" in a.text for a in fig.layout.annotations)
    assert "79.6 GiB" in memory.intro


def test_max_batch_table_lists_every_search():
    search = {
        **{k: v for k, v in store.config_columns(RunSpec()).items() if k != "per_device_batch"},
        "search_key": "abc",
        "largest_batch_ok": 384,
        "smallest_batch_oom": 385,
        "stopped": "converged",
        "reason": None,
        "trials": 11,
        "search_s": 312.5,
        "trial_log": "32:ok 64:ok",
    }
    failed = {
        **search,
        "search_key": "def",
        "precision": "fp32",
        "largest_batch_ok": None,
        "smallest_batch_oom": None,
        "stopped": "failed",
        "reason": "batch 8: crashed",
    }
    frame = analysis.frame_from_rows(memory_rows())
    report = R.build_report(frame, env=ENV, generated_at="t", max_batch_rows=[search, failed])
    section = next(s for s in report.sections if s.id == "max-batch")
    rows = {r[0]: r for r in section.tables[0].rows}
    assert rows["base bf16 fixed@128 x1 cuda"][1:6] == ("384", "385", "exact", "11", "312.5")
    assert rows["base fp32 fixed@128 x1 cuda"][1:4] == (
        "none",
        "none seen",
        "failed: batch 8: crashed",
    )
    assert "Largest batch that fits" in R.render_text(report)


def test_trials_feed_the_memory_model():
    trials = analysis.frame_from_rows(memory_rows())
    merged = cost.memory_frame(analysis.frame_from_rows([]), trials)
    assert len(merged) == 3
