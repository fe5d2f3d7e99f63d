"""What a reader meets first, and every chart glitch a reader reported (issue 24), each guarded.

Every report says what was measured before any number (HTML, text and JSON), names
configurations by what varies, answers how well (speedup and efficiency with intervals) and why
on its first screen, speaks of CPU ranks on a CPU sweep, and keeps expected absences quiet.
The glitches are checked on the plotly figure objects and the page model, in-process.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from harness import attribution, fmt, store
from harness.definitions import DEFINITIONS, SERVING_DEFINITIONS
from harness.report import figures, sections
from harness.report.measured import describe_data, measured_facts, measured_table
from tests.helpers_results import FakeSweep, write_sweep
from tests.unit.test_report import _axes, _cpu_sweep, _figures

from harness import report  # isort: skip

MACHINE = {
    "cpu_model": "Test CPU 9000",
    "cpu_count_logical": 2,
    "cpu_count_physical": 1,
    "mem_total_gib": 23.4,
}


def cpu_sweep(tmp_path, *, loads=(0.8, 3.1), **kw):
    """A CPU sweep (1 and 2 ranks, gloo, synthetic data, 64 fixed tokens) whose env.json has
    the machine-class fields and whose rows carry the load average at the window's end."""
    sweep = _cpu_sweep(tmp_path, precisions=("fp32",), **kw)
    rows = store.read_ledger(sweep)
    for i, r in enumerate(rows):
        r.update(backend="gloo", data="synthetic:1024", max_length=64, seq_policy="fixed",
                 model="tiny", load_avg_1m=loads[i % len(loads)])  # fmt: skip
    store.ledger_path(sweep).write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = json.loads((sweep / "env.json").read_text())
    env.update(MACHINE, gpu_names=[], hostname="box")
    (sweep / "env.json").write_text(json.dumps(env))
    return sweep


@pytest.fixture(scope="module")
def cpu(tmp_path_factory):
    """One CPU sweep and its report, loaded once for the tests that only read them."""
    sweep = cpu_sweep(tmp_path_factory.mktemp("cpu"))
    return sweep, report.load_report(sweep)


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    """One GPU sweep without telemetry that varies batch and compile (loaded once)."""
    spec = FakeSweep(world_sizes=(1, 2), batches=(16, 32), precisions=("bf16",),
                     compiles=(False, True), telemetry=False, failures=False)  # fmt: skip
    return report.load_report(write_sweep(tmp_path_factory.mktemp("gpu"), spec))


# -- 1. what was measured, said up front ----------------------------------------------------


def test_every_report_says_what_was_measured_before_any_number(cpu):
    sweep, rep = cpu
    measured = dict(rep.measured.rows)
    assert measured["devices"] == "1 and 2 CPU processes (ranks)"
    assert measured["backend"] == "gloo"
    assert measured["hosts"] == "1 node (sweep started on box)"
    assert measured["model"].startswith("tiny (DistilBERT's architecture, far smaller: 2 layers")
    assert "M parameters" in measured["model"]
    assert measured["data"].startswith("SYNTHETIC: 1,024 random token sequences")
    assert measured["sequence"] == "64 tokens, fixed: every sequence padded or cut to 64"
    assert measured["precision"].startswith("fp32; eager")
    # Item 4, the report's side: the machine class and the load during the windows.
    assert measured["machine"] == (
        "Test CPU 9000 (2 logical, 1 physical cores); 23 GiB memory; no GPU"
    )
    assert "1-minute load average median" in measured["load"] and "on 2 cores" in measured["load"]
    assert "other work competed" in measured["load"]  # 3.1 > 2 cores

    html = report.render_html(rep)
    assert html.index('id="measured"') < html.index('id="answer"') < html.index('id="headline"')
    text = report.render_text(rep)
    assert text.splitlines()[2] == "What was measured"
    assert text.index("SYNTHETIC") < text.index("Headline")
    body = json.loads(report.render_json(sweep))
    assert list(body)[:3] == ["title", "measured", "answer"]
    facts = body["measured"]
    assert facts["device"] == "cpu" and facts["device_counts"] == [1, 2]
    assert facts["synthetic_data"] is True and facts["backend"] == "gloo"
    assert facts["max_length"] == 64 and facts["seq_policy"] == "fixed"
    assert facts["precision"] == "fp32" and facts["model"] == "tiny"
    assert facts["cpu_model"] == "Test CPU 9000" and facts["load_avg_1m"]["max"] == 3.1


def test_machine_and_load_say_not_recorded_for_an_older_sweep():
    frame = pd.DataFrame(
        {"status": ["ok"], "device": ["cuda"], "world_size": [1], "config_key": ["k"]}
    )
    facts = measured_facts(frame, {"gpu_names": ["NVIDIA H100 80GB HBM3"] * 2})
    assert facts["cpu_model"] is None and facts["load_avg_1m"] is None
    table = dict(measured_table(facts).rows)
    assert table["load"].startswith("not recorded")
    assert table["machine"] == "CPU model not recorded; NVIDIA H100 80GB HBM3"
    assert table["devices"] == "1 GPU (NVIDIA H100 80GB HBM3)"


def test_real_data_is_not_called_synthetic():
    assert describe_data("../shared/data/ag_news_test.csv") == (
        "../shared/data/ag_news_test.csv (real text)",
        False,
    )
    assert describe_data("synthetic")[1] and describe_data("hub")[1] is False


def test_configurations_are_named_by_what_varies_never_by_a_tautology(cpu, gpu):
    _, only_n = cpu
    cells = " ".join(c for row in only_n.headline.rows for c in row)
    assert "world_size=" not in cells and "best configuration" not in cells
    rows = dict(gpu.headline.rows)
    assert rows["fastest configuration at N=2"] == "per_device_batch=32 torch.compile"


def test_the_first_screen_answers_how_well_and_why(cpu):
    sweep, rep = cpu
    how, why = rep.answer
    assert re.match(
        r"2 CPU ranks against 1 \(weak scaling\): speedup \d\.\d\d× \[\d\.\d\d, \d\.\d\d\] "
        r"\(ideal 2×\), scaling efficiency \d+\.\d% \[[\d.]+, [\d.]+%\], ",
        how,
    ), how
    # The why sentence is attribution.biggest_cause's, as the why section has it.
    (why_section,) = [s for s in rep.sections if s.id == "why"]
    assert why.startswith("Why: ") and why[5:] in why_section.intro
    headline = dict(rep.headline.rows)
    assert headline["its speedup (vs N=1; ideal 2×)"].endswith(" ×")
    assert json.loads(report.render_json(sweep))["headline"]["speedup"] > 0


def test_why_says_why_it_cannot_be_said(tmp_path):
    sweep = cpu_sweep(tmp_path)
    rows = [r for r in store.read_ledger(sweep) if r["world_size"] == 1]
    store.ledger_path(sweep).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert report.load_report(sweep).answer == (
        "Why: cannot be said: only one CPU rank count ran ok, so there is no scaling to explain.",
    )


# -- 2. words follow the device; expected absences are quiet --------------------------------


def test_a_cpu_sweep_speaks_of_cpu_ranks_in_every_chart_and_table_of_this_page(cpu):
    _, rep = cpu
    own = ("scaling", "stragglers", "mfu", "batch", "why")  # the projection charts: elsewhere
    figs = [f for sid, fs in _figures(rep).items() if sid in own for f in fs]
    assert len(figs) >= 3
    for fig in figs:
        texts = [fig.layout.title.text or ""]
        texts += [a.title.text or "" for a in _axes(fig)]
        texts += [a.text for a in fig.layout.annotations]
        assert not [t for t in texts if "GPU" in t], texts
    (throughput, _) = _figures(rep)["scaling"]
    assert throughput.layout.xaxis.title.text.startswith("CPU ranks (world size)")
    for section in rep.sections:
        if section.id in own:
            assert "GPU" not in section.intro and "GPU" not in section.title, section.id
    cells = [c for t in (rep.headline, rep.measured) for row in t.rows for c in row]
    assert not [c for c in cells if "GPU" in c and c != "no GPU" and "no GPU" not in c]


def test_expected_absences_are_a_quiet_note_and_real_gaps_still_warn(cpu, gpu):
    _, rep = cpu
    assert rep.notes == ()
    assert any(q.startswith("CPU run: no GPU telemetry") for q in rep.quiet_notes)
    html = report.render_html(rep)
    assert 'class="notes"' not in html and 'class="quiet"' in html
    assert "No GPU telemetry" in " ".join(gpu.notes)  # a GPU sweep without it still warns


# -- 3. the chart glitches --------------------------------------------------------------------


def _curves(values: list[float], n: tuple[int, ...] = (1, 2, 4)) -> pd.DataFrame:
    x0 = values[0]
    return pd.DataFrame(
        {
            "curve_id": "c", "curve": "weak", "scaling_mode": "weak",
            "world_size": list(n), "base_world_size": 1, "config_key": [f"k{i}" for i in n],
            "samples_per_s": values, "samples_per_s_lo": [v * 0.9 for v in values],
            "samples_per_s_hi": [v * 1.1 for v in values], "ideal": [x0 * i for i in n],
            "efficiency": [v / (x0 * i) for v, i in zip(values, n, strict=True)],
            "efficiency_lo": [0.9 * v / (x0 * i) for v, i in zip(values, n, strict=True)],
            "efficiency_hi": [1.05 * v / (x0 * i) for v, i in zip(values, n, strict=True)],
            "samples_per_s_level": 0.75, "efficiency_level": 0.5625,
        }
    )  # fmt: skip


def test_interval_bands_draw_no_dots_at_their_corners():
    fig = figures.fig_efficiency(_curves([213.0, 390.0, 500.0]))
    (band,) = [t for t in fig.data if t.fill == "toself"]
    # A filled outline only: markers at its corners read as measurements.
    assert band.mode == "lines" and "markers" not in band.mode
    (line,) = [t for t in fig.data if t.fill != "toself"]
    assert line.mode == "lines+markers" and len(line.x) == 3  # the measurements keep theirs


def test_a_narrow_throughput_range_gets_a_linear_axis_and_a_wide_one_a_log_axis():
    narrow = figures.fig_throughput(_curves([213.0, 390.0, 500.0], n=(1, 2, 3)))
    # 213..500 samples/s (and the ideal line's 639): under 10x, so linear from zero.
    assert narrow.layout.yaxis.type == "linear" and narrow.layout.yaxis.rangemode == "tozero"
    assert "log scale" not in narrow.layout.yaxis.title.text
    wide = figures.fig_throughput(_curves([100.0, 1_000.0, 10_000.0], n=(1, 8, 64)))
    assert wide.layout.yaxis.type == "log" and "log scale" in wide.layout.yaxis.title.text


def test_reference_rows_say_reference_not_a_zero_width_interval(cpu):
    _, rep = cpu
    points = next(s for s in rep.sections if s.id == "points").tables[0]
    (col,) = [i for i, c in enumerate(points.columns) if c.startswith("efficiency")]
    by_n = {row[0]: row[col] for row in points.rows}
    assert by_n["1"] == sections.REFERENCE_CELL == "100% (reference)"
    assert "[" in by_n["2"]
    assert "100.0% [100.0" not in report.render_html(rep)


def test_compile_reads_eager_or_torch_compile_never_false(gpu):
    points = next(s for s in gpu.sections if s.id == "points").tables[0]
    col = points.columns.index("compile")
    assert {row[col] for row in points.rows} == {"eager", "torch.compile"}


def test_columns_nothing_measured_are_left_out_on_cpu_and_kept_on_gpu(cpu, gpu):
    _, rep = cpu
    columns = next(s for s in rep.sections if s.id == "points").tables[0].columns
    assert "MFU" not in columns and "mem GiB" not in columns
    assert "samples/s/CPU rank" in columns
    columns = next(s for s in gpu.sections if s.id == "points").tables[0].columns
    assert "MFU" in columns and "mem GiB" in columns


def test_serving_latency_ticks_are_labelled_in_full():
    rows = [
        {"started_at": "t", "checkpoint": "c", "texts_per_request": 1, "batch_window_s": 0.0,
         "concurrency": c, "requests_per_s": 20.0 * c, "latency_s_p50": 0.008 * c,
         "latency_s_p95": 0.012 * c, "latency_s_p99": 0.02 * c}
        for c in (1, 4, 16)
    ]  # fmt: skip
    fig = figures.fig_serving(rows)
    axis = fig.layout.yaxis2
    assert axis.type == "log" and list(axis.tickvals) == [5, 10, 20, 50, 100, 200, 500]
    # Each tick reads as its value: plotly's own log ticks printed "5, 2, 100, 5, 2, 10".
    assert list(axis.ticktext) == ["5", "10", "20", "50", "100", "200", "500"]
    assert figures.log_ticks([0.3, 0.9]) == [0.2, 0.5, 1.0]
    assert len(figures.log_ticks([1, 1e9])) <= 12


def _serving_rows() -> list[dict]:
    from tests.unit.test_bench_serve import _row

    first = [_row(c, started="2026-01-01T00:00:00+00:00") for c in (1, 4)]
    rerun = [_row(c, started="2026-01-02T00:00:00+00:00") for c in (1, 4)]
    first[1]["requests_per_s"] = 4.7  # a broken level beside the rerun's 80
    return [*first, *rerun]


def test_a_serving_outlier_level_is_flagged_in_table_chart_and_intro(tmp_path):
    rows = _serving_rows()
    flags = sections.serving_outliers(rows)
    assert list(flags) == [1] and "17× below the other runs' 80 requests/s" in flags[1]
    section = sections.serving_section(rows)
    table = section.tables[0]
    flagged = [row for row in table.rows if row[-1]]
    assert len(flagged) == 1 and flagged[0][4] == "4.7"
    assert "1 level(s) are flagged as outliers" in section.intro
    (fig,) = section.figures
    (marks,) = [t for t in fig.data if t.name and t.name.startswith("outlier level")]
    assert list(marks.x) == [4] and list(marks.y) == [4.7] and marks.marker.symbol == "x"
    assert sections.serving_outliers(_serving_rows()[2:]) == {}  # one run: nothing to compare


def test_a_serving_report_defines_serving_terms_not_training_ones(tmp_path):
    from harness.serving_store import append_serving_row

    for row in _serving_rows():
        append_serving_row(tmp_path, row)
    rep = report.load_report(tmp_path)
    (defs,) = [s for s in rep.sections if s.id == "definitions"]
    assert defs.tables[0].rows == SERVING_DEFINITIONS
    assert "Measured window" not in report.render_html(rep)
    assert rep.measured is None and rep.answer == ()
    # What the folder holds is a fact, not a warning.
    assert rep.notes == () and "serving benchmarks only" in rep.quiet_notes[0]
    # -o may replace a serving report it wrote, as it replaces a scaling one.
    out = report.render_report(tmp_path, tmp_path / "serving.html")
    assert report.render_report(tmp_path, out) == out


def test_the_text_report_titles_why_once_and_holds_the_definitions_it_promises(cpu):
    text = report.render_text(cpu[1])
    assert text.count("Why efficiency drops\n---") == 1
    assert "definitions at the end of the report" in text
    tail = text[text.index("What the numbers mean\n---") :]
    for term, _ in (*DEFINITIONS, *attribution.DEFINITIONS):
        assert f"\n{term}: " in tail, term


def test_fig_builders_default_to_gpu_words_for_callers_that_pass_no_unit():
    curves = _curves([100.0, 190.0, 350.0])
    assert figures.fig_efficiency(curves).layout.xaxis.title.text.startswith("GPUs (world size)")
    assert fmt.device_count_title("CPU rank") == "CPU ranks (world size)"
    assert isinstance(figures.fig_throughput(curves, unit="CPU rank"), go.Figure)
    assert np.isclose(figures.LOG_AXIS_MIN_RATIO, 10.0)
