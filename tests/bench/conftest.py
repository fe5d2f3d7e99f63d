"""Benchmarks: run with `pytest tests/bench --benchmark-enable` (nox -s bench) to get figures.

Under the default test run (benchmarks disabled) each benchmark body runs once, as a test;
the big-input ones then run on a smaller input (:func:`measuring`), so the suite checks that
the code works at the scale of the figure without paying for the figure.
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


def measuring(config: pytest.Config) -> bool:
    """Whether this run measures (--benchmark-enable) or only runs each body once."""
    return not config.getoption("benchmark_disable") or config.getoption("benchmark_enable")
