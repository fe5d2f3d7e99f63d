"""The metric definitions have one home: the report prints them, docs/metrics.md carries them."""

from __future__ import annotations

from pathlib import Path

from harness import attribution, definitions, report
from tests.helpers_results import FakeSweep, write_sweep

METRICS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_the_metrics_page_carries_the_generated_definitions_verbatim():
    text = METRICS_PAGE.read_text()
    assert definitions.markdown() in text, (
        "docs/metrics.md is out of date: paste `python -m harness.definitions`"
    )


def test_the_terms_a_reader_meets_in_the_report_are_defined():
    terms = {term for term, _ in definitions.DEFINITIONS}
    for needed in (
        "Padding waste",
        "data_wait_share",
        "mem_peak_gib",
        "Step-time percentiles",
        "Rank spread",
        "MFU / HFU",
    ):
        assert needed in terms


def test_the_report_prints_the_same_definitions(tmp_path):
    sweep = write_sweep(tmp_path / "s", FakeSweep(world_sizes=(1, 2), batches=(8,)))
    rep = report.load_report(sweep)
    (defs,) = [s for s in rep.sections if s.id == "definitions"]
    # The metric definitions, then the decomposition's (harness.attribution keeps those).
    assert defs.tables[0].rows == (*definitions.DEFINITIONS, *attribution.DEFINITIONS)
