"""The "Why efficiency drops" section, its text form, and ``report --format json``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness import attribution, report
from harness.cli import cli
from tests.helpers_results import FakeSweep, write_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("why"), FakeSweep(world_sizes=(1, 2, 4, 8)))


def test_report_has_the_why_section_with_bars_ceiling_and_sentence(sweep):
    rep = report.load_report(sweep)
    why = {s.id: s for s in rep.sections}["why"]
    assert why.title == "Why efficiency drops"
    assert why.intro.startswith("At N=8, ") and "points of efficiency are lost" in why.intro
    assert "the biggest cause is" in why.intro and "Checks that failed" not in why.intro
    bars, ceiling = why.figures
    names = [attribution.NAMES[c] for c in attribution.COMPONENTS]
    assert [t.name for t in bars.data][: len(names)] == names
    assert bars.layout.barmode == "relative"  # negative parts stack below zero
    assert {t.name.split(":")[0] for t in ceiling.data} >= {"ceiling"}
    table = why.tables[0]
    assert table.columns[:4] == ("curve", "N", "efficiency", "pp lost")
    # Every row: the parts add up to the points lost (to the printed rounding).
    for row in table.rows:
        parts = [float(c) for c in row[4:]]
        assert sum(parts) == pytest.approx(float(row[3]), abs=0.3)
    terms = {r[0] for s in rep.sections if s.id == "definitions" for r in s.tables[0].rows}
    assert {t for t, _ in attribution.DEFINITIONS} <= terms


def test_text_report_prints_the_same_sentence(sweep):
    rep = report.load_report(sweep)
    why = {s.id: s for s in rep.sections}["why"]
    text = report.render_text(rep)
    assert "Why efficiency drops" in text and why.intro in text


def test_json_report_keys_and_exact_decomposition(sweep):
    result = CliRunner().invoke(cli, ["report", str(sweep), "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)  # one JSON object, no NaN
    assert {"headline", "curves", "decomposition"} <= set(body)
    assert body["headline"]["why"].startswith("At N=8")
    assert body["headline"]["largest_world_size"] == 8
    assert {"curve_id", "world_size", "efficiency", "efficiency_lo"} <= set(body["curves"][0])
    rows = body["decomposition"]
    assert rows and {r["world_size"] for r in rows} == {2, 4, 8}
    for row in rows:
        assert {"fault", "precision", "per_device_batch", "world_size", "efficiency",
                "loss_pp"} <= set(row)  # fmt: skip
        assert set(row["loss_pp"]) == {"compute", "contention", "exposed_comm", "data_wait",
                                       "straggler", "unexplained"}  # fmt: skip
        assert row["checks"] == []  # the fabricated sweep is consistent
        assert sum(row["loss_pp"].values()) == pytest.approx(100 * (1 - row["efficiency"]))


def test_json_report_of_a_results_root_is_one_line_exit_2(sweep):
    result = CliRunner().invoke(cli, ["report", str(sweep.parent), "--format", "json"])
    assert result.exit_code == 2
    assert "not a sweep folder" in result.output and "Traceback" not in result.output


def test_a_check_that_fails_is_printed_beside_the_chart_and_marks_its_bar(tmp_path):
    # The same fabricated sweep, but at N=8 the all-reduce was in flight for only 0.1 ms of a
    # step whose exposed all-reduce is several ms: a measurement disagrees with another.
    sweep_dir = write_sweep(tmp_path, FakeSweep(world_sizes=(1, 2, 4, 8)))
    ledger = sweep_dir / "ledger.jsonl"
    rows = [json.loads(line) for line in ledger.read_text().splitlines()]
    for row in rows:
        if row.get("world_size") == 8 and row.get("status") == "ok":
            row["allreduce_step_time_s"] = 1e-4
    ledger.write_text("".join(json.dumps(r) + "\n" for r in rows))
    why = {s.id: s for s in report.load_report(sweep_dir).sections}["why"]
    assert "Checks that failed" in why.intro
    assert "is longer than the all-reduce was in flight inside the step (0.1 ms)" in why.intro
    bars = why.figures[0]
    assert "N=8 (!)" in list(bars.data[0].x) and "N=4" in list(bars.data[0].x)
    body = json.loads(
        CliRunner().invoke(cli, ["report", str(sweep_dir), "--format", "json"]).output
    )
    flagged = [r for r in body["decomposition"] if r["checks"]]
    assert flagged and all(r["world_size"] == 8 for r in flagged)


def test_the_first_screen_the_why_section_and_the_json_say_the_same_why(tmp_path):
    """One decomposition (each point's median run) behind all three: the first screen's used
    the column medians and named other figures than the section beside it. Planted: at N = 8
    the median-throughput run carries the largest exposed all-reduce, so a column median of it
    differs from the median run's."""
    sweep = write_sweep(tmp_path, FakeSweep(world_sizes=(1, 2, 4, 8), cv=0.1, failures=False))
    ledger = sweep / "ledger.jsonl"
    rows = [json.loads(line) for line in ledger.read_text().splitlines()]
    by_key: dict[str, list[dict]] = {}
    for row in rows:
        if row["world_size"] == 8 and row["status"] == "ok":
            by_key.setdefault(row["config_key"], []).append(row)
    for runs in by_key.values():
        runs.sort(key=lambda r: r["samples_per_s"])
        for i, run in enumerate(runs):  # the median run's exposure is 4x the others'
            run["exposed_comm_s"] = 0.004 if i == len(runs) // 2 else 0.001
    ledger.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = report.load_report(sweep)
    (first,) = [a for a in rep.answer if a.startswith("Why: ")]
    sentence = first.removeprefix("Why: ")
    assert {s.id: s for s in rep.sections}["why"].intro.startswith(sentence)
    body = json.loads(CliRunner().invoke(cli, ["report", str(sweep), "--format", "json"]).output)
    assert body["headline"]["why"] == sentence
