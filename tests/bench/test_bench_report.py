"""Benchmark: rendering the HTML report of a 1,000-point sweep (target: < 5 s, < 10 MB).

pytest tests/bench/test_bench_report.py --benchmark-enable -s
"""

from __future__ import annotations

import time

import pytest

from harness import report
from tests.helpers_results import thousand_point_sweep, write_sweep


@pytest.fixture(scope="module")
def big_sweep(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("bench-report"), thousand_point_sweep())


def test_bench_render_report_1000_points(benchmark, big_sweep, tmp_path):
    out = tmp_path / "report.html"
    start = time.perf_counter()
    report.render_report(big_sweep, out)
    seconds = time.perf_counter() - start
    size_mb = out.stat().st_size / 1e6
    rows = sum(1 for _ in (big_sweep / "ledger.jsonl").open())
    print(f"\nreport of {rows} ledger rows: {seconds:.2f} s (one cold run), {size_mb:.2f} MB")
    assert rows == 1000
    assert size_mb < 10.0  # deterministic, so asserted; the time is only printed
    benchmark.pedantic(report.render_report, args=(big_sweep, out), rounds=3, iterations=1)


def test_bench_render_text_1000_points(benchmark, big_sweep):
    text = benchmark(lambda: report.render_text(report.load_report(big_sweep)))
    assert "Headline" in text
