"""Benchmarks: run with `pytest tests/bench --benchmark-enable` (nox -s bench) to get figures.

Under the default test run (benchmarks disabled) each benchmark body runs once, as a test.
"""

from __future__ import annotations

import pytest


def report(benchmark, name: str, value: float, unit: str) -> None:
    """Print a derived figure (e.g. samples/s from the median time) and store it in the JSON."""
    benchmark.extra_info[name] = value
    print(f"\n[bench] {name} = {value:,.1f} {unit}")


@pytest.fixture
def bench_report():
    return report
