"""Benchmark: rendering the HTML report of a 1,000-point sweep (target: < 5 s, < 10 MB).

pytest tests/bench/test_bench_report.py --benchmark-enable -s

Without --benchmark-enable (the test suite) the sweep has 40 points (every GPU count, fewer
batches, precisions and bucket sizes): the same code paths, a twentieth of the time.
"""

from __future__ import annotations

import time

import pytest

from harness import report
from tests.bench.conftest import measuring
from tests.helpers_results import thousand_point_sweep, write_sweep

#: The suite's smaller sweep (5 GPU counts x 2 batches x 2 precisions x 2 bucket sizes).
SMALL = {"batches": (8, 64), "precisions": ("fp32", "bf16"), "compiles": (False,),
         "bucket_caps": (25.0, 100.0)}  # fmt: skip


@pytest.fixture(scope="module")
def big_sweep(tmp_path_factory, pytestconfig):
    fake = thousand_point_sweep(**({} if measuring(pytestconfig) else SMALL))
    return write_sweep(tmp_path_factory.mktemp("bench-report"), fake)


def test_bench_render_report_1000_points(benchmark, big_sweep, tmp_path, request):
    out = tmp_path / "report.html"
    start = time.perf_counter()
    report.render_report(big_sweep, out)
    seconds = time.perf_counter() - start
    size_mb = out.stat().st_size / 1e6
    rows = sum(1 for _ in (big_sweep / "ledger.jsonl").open())
    print(f"\nreport of {rows} ledger rows: {seconds:.2f} s (one cold run), {size_mb:.2f} MB")
    assert rows == (1000 if measuring(request.config) else 40)
    assert size_mb < 10.0  # deterministic, so asserted; the time is only printed
    benchmark.pedantic(report.render_report, args=(big_sweep, out), rounds=3, iterations=1)


def test_bench_render_text_1000_points(benchmark, big_sweep):
    text = benchmark(lambda: report.render_text(report.load_report(big_sweep)))
    assert "Headline" in text
