"""harness.report: what the report contains for each kind of sweep, and its failure modes."""

from __future__ import annotations

import json
import re

import pandas as pd
import plotly.offline
import pytest
from click.testing import CliRunner

from distrinews.errors import UserError
from harness import report, store
from harness.cli import cli
from harness.definitions import DEFINITIONS
from harness.report.sections import env_table
from tests.helpers_results import FakeSweep, write_sweep

FULL = FakeSweep(
    world_sizes=(1, 2, 4),
    batches=(16, 32),
    precisions=("fp32", "bf16"),
    compiles=(False, True),
    bucket_caps=(25.0, 100.0),
    nccl_envs=("", "NCCL_ALGO=Tree"),
    repeats=3,
)


@pytest.fixture(scope="module")
def full_sweep(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("full"), FULL)


@pytest.fixture(scope="module")
def full_report(full_sweep):
    """The full sweep's report, loaded once for the tests that only read it (about a second of
    CPU each time: the projection section's draws)."""
    return report.load_report(full_sweep)


def section_ids(rep: report.Report) -> list[str]:
    return [s.id for s in rep.sections]


def test_full_sweep_has_every_section(full_report):
    rep = full_report
    assert section_ids(rep) == [
        "scaling",
        "why",
        "projection",
        "memory",  # the fake sweep has peak memory at three batch sizes
        "precision",
        "batch",
        "knobs",
        "stragglers",
        "telemetry",
        "mfu",
        "failures",
        "points",
        "environment",
        "definitions",
    ]
    figures = {s.id: len(s.figures) for s in rep.sections}
    assert figures["scaling"] == 2 and figures["precision"] == 2  # precision and compile
    knobs = next(s for s in rep.sections if s.id == "knobs").figures[0]
    assert knobs.data[0].type == "heatmap"  # two knobs varied: bucket size and NCCL_ALGO
    headline = dict(rep.headline.rows)
    assert headline["largest GPU count"] == "4"
    assert "[" in headline["its throughput (samples/s)"]  # repeats -> an interval
    assert headline["its scaling efficiency (weak, vs N=1)"].endswith("%]")
    failures = next(s for s in rep.sections if s.id == "failures").tables[0]
    assert {r[0] for r in failures.rows} == {"oom", "timeout", "crashed"}
    assert all(r[4].startswith("points/") and r[4].endswith("/logs/") for r in failures.rows)


def test_html_is_self_contained_with_plotly_once(full_sweep, full_report, tmp_path):
    out = report.render_report(full_sweep, tmp_path / "r.html")
    text = out.read_text()
    signature = plotly.offline.get_plotlyjs()[:300]
    assert text.count(signature) == 1
    assert not re.search(r"<script[^>]+src=", text)  # nothing loaded from anywhere
    assert not re.search(r"<link[^>]+href=", text)
    n_figs = sum(len(s.figures) for s in full_report.sections)
    assert text.count('class="plotly-graph-div"') == n_figs
    for term, _ in DEFINITIONS:
        assert term in text
    assert text.count('class="sortable"') >= 2
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temp file left behind


def test_untrusted_text_is_escaped(tmp_path):
    sweep = write_sweep(tmp_path, FakeSweep(world_sizes=(1, 2), batches=(16,), repeats=1))
    rows = store.read_ledger(sweep)
    rows[0].update(status="crashed", reason="<script>alert(1)</script>", samples_per_s=None)
    store.ledger_path(sweep).write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = report.render_html(report.load_report(sweep))
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_empty_ledger_says_so(tmp_path):
    (tmp_path / "ledger.jsonl").write_text("")
    rep = report.load_report(tmp_path)
    assert "no finished points" in rep.notes[0]
    assert section_ids(rep) == ["environment", "definitions"]
    html = report.render_html(rep)
    assert "no finished points" in html and "plotly-graph-div" not in html
    assert "no finished points" in report.render_text(rep)


def test_missing_ledger_is_an_empty_sweep_and_missing_folder_an_error(tmp_path):
    (tmp_path / "sweep.json").write_text("{}")  # a sweep that has started, no row yet
    assert "no finished points" in report.load_report(tmp_path).notes[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a sweep folder"):
        report.load_report(tmp_path / "empty")  # an empty folder is not a sweep (issue 12)
    with pytest.raises(UserError, match="no such results folder"):
        report.load_report(tmp_path / "nope")
    write_sweep(tmp_path / "root", FakeSweep(name="a", world_sizes=(1,), batches=(8,)))
    with pytest.raises(UserError, match="not a sweep folder; it holds the sweeps a"):
        report.load_report(tmp_path / "root")


def test_all_failed_shows_failures_and_no_charts(tmp_path):
    sweep = write_sweep(tmp_path, FakeSweep(world_sizes=(1, 2), batches=(16,), repeats=2))
    rows = store.read_ledger(sweep)
    for r in rows:
        r.update(status="nccl_error", reason="NCCL watchdog timeout", samples_per_s=None)
    store.ledger_path(sweep).write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = report.load_report(sweep)
    assert (
        rep.notes[0]
        == f"All {len(rows)} runs failed: no throughput to show. See the failures table."
    )
    assert section_ids(rep) == ["failures", "points", "environment", "definitions"]
    assert all(not s.figures for s in rep.sections)
    assert "NCCL watchdog timeout" in report.render_html(rep)


def test_mixed_schema_and_missing_telemetry_and_env_are_told(tmp_path):
    sweep = write_sweep(tmp_path, FakeSweep(world_sizes=(1, 2), batches=(16,), failures=False))
    rows = store.read_ledger(sweep)
    rows[-1]["schema_version"] = 2
    store.ledger_path(sweep).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for path in sweep.glob("points/*/telemetry.jsonl"):
        path.unlink()
    (sweep / "env.json").unlink()
    rep = report.load_report(sweep)
    notes = " ".join(rep.notes)
    assert "schema versions 1, 2" in notes
    assert "no telemetry.jsonl file could be read" in notes
    assert "env.json is missing" in notes
    assert "telemetry" not in section_ids(rep)


def test_cpu_sweep_without_telemetry_or_mfu(tmp_path):
    sweep = write_sweep(
        tmp_path, FakeSweep(world_sizes=(1, 2), batches=(16,), telemetry=False, failures=False)
    )
    rows = store.read_ledger(sweep)
    for r in rows:
        r.update(mfu=None, hfu=None, mem_peak_gib=None, device="cpu")
    store.ledger_path(sweep).write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = report.load_report(sweep)
    # Expected absences on CPU ranks are one quiet line, not a warning, and no blank MFU row.
    assert rep.notes == ()
    assert "CPU run: no GPU telemetry, MFU" in " ".join(rep.quiet_notes)
    assert "its MFU" not in dict(rep.headline.rows)
    assert "largest CPU rank count" in dict(rep.headline.rows)


def test_single_gpu_count_and_strong_scaling_labels(tmp_path):
    one = write_sweep(tmp_path / "one", FakeSweep(world_sizes=(2,), batches=(16, 32)))
    scaling = next(s for s in report.load_report(one).sections if s.id == "scaling")
    assert "Only one GPU count" in scaling.intro and not scaling.figures
    strong = write_sweep(
        tmp_path / "strong",
        FakeSweep(world_sizes=(1, 2, 4), batches=(64,), scaling_mode="strong", failures=False),
    )
    rep = report.load_report(strong)
    scaling = next(s for s in rep.sections if s.id == "scaling")
    assert "strong scaling (global batch fixed" in scaling.intro
    assert all(r[0].startswith("strong") for r in scaling.tables[0].rows)


def test_cli_report_html_text_and_errors(full_sweep, tmp_path):
    runner = CliRunner()
    out = tmp_path / "sub" / "report.html"
    r = runner.invoke(cli, ["report", str(full_sweep), "-o", str(out)], catch_exceptions=False)
    assert r.exit_code == 0 and out.is_file() and str(out) in r.output
    r = runner.invoke(cli, ["report", str(full_sweep), "--format", "text"])
    assert r.exit_code == 0
    assert "Headline" in r.output and "Scaling" in r.output and "Failures" in r.output
    assert "eff. N=4" in r.output
    r = runner.invoke(cli, ["report", str(tmp_path / "missing")])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "Traceback" not in r.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ledger.jsonl").write_text("[1, 2]\n")
    r = runner.invoke(cli, ["report", str(bad)])
    assert r.exit_code == 2 and "not a JSON object" in r.output


def test_default_output_is_inside_the_sweep_and_overwrites_atomically(tmp_path):
    sweep = write_sweep(tmp_path, FakeSweep(world_sizes=(1, 2), batches=(16,)))
    first = report.render_report(sweep)
    assert first == sweep / "report.html"
    first.write_text("stale")
    report.render_report(sweep)
    assert first.read_text().startswith("<!DOCTYPE html>")
    assert not list(sweep.glob(".report.html.*"))


def test_serving_rows_get_a_section_of_their_own(tmp_path):
    from harness.serving_store import append_serving_row
    from tests.unit.test_bench_serve import _row

    serving_only = tmp_path / "serving"
    for concurrency in (1, 4, 16):
        append_serving_row(serving_only, _row(concurrency))
    html = report.render_report(serving_only).read_text()
    assert 'id="serving"' in html and "serving benchmarks only" in html
    text = report.render_text(report.load_report(serving_only))
    assert "Serving" in text and " 320 " in text  # requests/s at concurrency 16

    # beside a training sweep, the serving section joins the scaling sections
    sweep = write_sweep(tmp_path / "sweep", FULL)
    append_serving_row(sweep, _row(4))
    both = report.load_report(sweep)
    ids = [s.id for s in both.sections]
    assert "serving" in ids and "scaling" in ids


def test_environment_table_shows_each_field_once():
    # A real env.json (the committed CPU baseline's): envinfo repeats the fingerprint's fields
    # among its own keys, and the table must not list them twice.
    from pathlib import Path

    env = json.loads(
        (Path(__file__).parents[2] / "results/baselines/cpu-smoke/env.json").read_text()
    )
    assert set(env["fingerprint_fields"]) & (set(env) - {"fingerprint_fields"})
    table = env_table(env, pd.DataFrame())
    fields = [row[0] for row in table.rows]
    assert fields[0] == "fingerprint" and "torch" in fields and "hostname" in fields
    assert len(fields) == len(set(fields))


# -- legibility: what a reader sees without hovering --------------------------------------------


def _figures(rep: report.Report) -> dict[str, list]:
    return {s.id: list(s.figures) for s in rep.sections}


def _axes(fig) -> list:
    out = []
    fig.for_each_xaxis(out.append)
    fig.for_each_yaxis(out.append)
    return out


def _cpu_sweep(tmp_path, **kw):
    sweep = write_sweep(
        tmp_path,
        FakeSweep(world_sizes=(1, 2), batches=(16,), telemetry=False, failures=False, **kw),
    )
    rows = store.read_ledger(sweep)
    for r in rows:
        r.update(mfu=None, hfu=None, mem_peak_gib=None, device="cpu")
    store.ledger_path(sweep).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return sweep


def test_every_log_axis_says_so(full_report):
    figs = [f for fs in _figures(full_report).values() for f in fs]
    log_axes = [a for f in figs for a in _axes(f) if a.type == "log"]
    assert len(log_axes) >= 3  # throughput and efficiency device counts, batch ...
    assert all("log scale" in (a.title.text or "") for a in log_axes)
    (throughput, _) = _figures(full_report)["scaling"]
    assert throughput.layout.xaxis.type == "log"
    assert "log scale" in throughput.layout.xaxis.title.text
    lin = [a for f in figs for a in _axes(f) if a.type != "log"]
    assert not any("log scale" in (a.title.text or "") for a in lin)


def test_straggler_boxes_and_token_bars_have_category_labels(full_report):
    figs = _figures(full_report)
    (stragglers,) = figs["stragglers"]
    boxes = [t for t in stragglers.data if t.type == "box"]
    # One code, one meaning: S1.. are the runs with the widest rank spread, F1.. the fastest
    # points (both charts once said P1, meaning the worst in one and the fastest in the other).
    assert boxes and all(t.x[0].startswith("S") and " rank " in t.x[0] for t in boxes)
    box_axis = stragglers.layout[f"xaxis{boxes[0].xaxis[1:]}"]
    assert box_axis.showticklabels is not False and box_axis.type == "category"
    assert "S1 = widest rank spread" in box_axis.title.text
    assert all(t.name.startswith("S") and ": " in t.name for t in boxes)  # legend: S1: run
    # A run is its configuration and its repeat in words (a bare "#3" was never explained).
    assert all(", repeat " in t.name and "#" not in t.name for t in boxes)
    (mfu,) = figs["mfu"]
    bars = [t for t in mfu.data if t.type == "bar"]
    assert bars and list(bars[0].x) == [f"F{i + 1}" for i in range(len(bars[0].x))]
    bar_axis = mfu.layout[f"xaxis{bars[0].xaxis[1:]}"]
    assert bar_axis.showticklabels is not False and "F1 fastest" in bar_axis.title.text


def test_efficiency_title_promises_a_band_only_when_one_is_drawn(tmp_path):
    many = write_sweep(
        tmp_path / "many", FakeSweep(world_sizes=(1, 2, 4), batches=(16,), failures=False)
    )
    once = write_sweep(
        tmp_path / "once", FakeSweep(world_sizes=(1, 2, 4), batches=(16,), repeats=1)
    )
    (_, eff) = _figures(report.load_report(many))["scaling"]
    # Three repeats: the band is the ratio of two [min, max] intervals, covering >= 56.2%.
    assert "band: interval, covers ≥ 56.2%" in eff.layout.title.text
    assert any(t.fill == "toself" for t in eff.data)
    (_, eff) = _figures(report.load_report(once))["scaling"]
    assert "band" not in eff.layout.title.text.replace("no interval band", "")
    assert "single runs: no interval band" in eff.layout.title.text
    assert not any(t.fill == "toself" for t in eff.data)


def test_cpu_runs_are_ranks_not_gpus_and_mfu_absence_is_explained(tmp_path):
    rep = report.load_report(_cpu_sweep(tmp_path))
    headline = dict(rep.headline.rows)
    assert headline["largest CPU rank count"] == "2"
    assert "its samples/s per CPU rank" in headline
    assert not any("GPU" in k for k in headline)
    (mfu,) = _figures(rep)["mfu"]
    titles = [a.text for a in mfu.layout.annotations]
    assert any("no MFU: CPU ranks have no peak FLOP/s" in t for t in titles), titles
    points = next(s for s in rep.sections if s.id == "points").tables[0]
    assert not any("GPU" in c for c in points.columns)


def test_environment_values_are_readable():
    env = {
        "fingerprint": "abc",
        "fingerprint_fields": {"gpu_names": [], "gpu_count": 0, "driver": None, "nccl": None},
        "git_dirty": False,
        "topology": None,
        "gpus": [],
        "cpu_count": 2,
        "hostname": "box",
    }
    cells = dict(env_table(env, pd.DataFrame()).rows)
    assert cells["gpu_names"] == "none" and cells["gpus"] == "none"
    assert cells["driver"] == "not available" and cells["topology"] == "not available"
    assert cells["git_dirty"] == "no" and cells["gpu_count"] == "0"
    assert not {"None", "[]", "{}", "False", "True"} & set(cells.values())


def test_serving_only_report_is_titled_for_serving(tmp_path):
    from harness.serving_store import append_serving_row
    from tests.unit.test_bench_serve import _row

    for concurrency in (1, 4):
        append_serving_row(tmp_path, _row(concurrency))
    rep = report.load_report(tmp_path)
    html = report.render_html(rep)
    assert rep.kind == "Serving" and "<h1>Serving report:" in html and "Scaling report" not in html
    assert report.render_text(rep).startswith("Serving report:")
    cells = [c for row in rep.headline.rows for c in row]
    assert "0 / 0" not in cells and "points / runs" not in cells
    assert dict(rep.headline.rows)["best requests/s"] == "80"
    assert "env.json" not in " ".join(rep.notes)
    assert "environment" not in section_ids(rep)


def test_skipped_is_not_failed_and_no_link_to_missing_logs(tmp_path):
    sweep = write_sweep(tmp_path, FakeSweep(world_sizes=(1, 2), batches=(16,), repeats=2))
    rows = store.read_ledger(sweep)
    for r in rows:
        r.update(status="skipped", reason="needs 2 GPUs per node; this machine has 0",
                 samples_per_s=None)  # fmt: skip
    store.ledger_path(sweep).write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = report.load_report(sweep)
    text = report.render_text(rep)
    assert rep.notes[0].startswith(f"All {len(rows)} points were skipped")
    assert "failed" not in " ".join(rep.notes).replace("Nothing failed", "")
    assert "failures" not in section_ids(rep) and "skipped" in section_ids(rep)
    assert "Failures" not in text and "runs failed" not in text
    # A failed run whose logs folder is gone is not pointed at.
    rows[0].update(status="crashed", reason="boom")
    store.ledger_path(sweep).write_text("".join(json.dumps(r) + "\n" for r in rows))
    import shutil

    shutil.rmtree(sweep / rows[0]["point_dir"] / "logs")
    rep = report.load_report(sweep)
    (failures,) = next(s for s in rep.sections if s.id == "failures").tables
    assert [r[4] for r in failures.rows] == ["no logs"]
    assert "1 failed" in rep.notes[0] and f"{len(rows) - 1} were skipped" in rep.notes[0]
