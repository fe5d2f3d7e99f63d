"""Benchmarks: the pandas analysis and the regression gate (160 points x 3 repeats per side)."""

from __future__ import annotations

import pytest

from harness import analysis, compare
from tests.helpers_results import thousand_point_sweep, write_sweep


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-analysis")
    spec = {"side_files_limit": 0, "repeats": 3, "batches": (8, 32), "bucket_caps": (25.0, 100.0)}
    base = write_sweep(root / "b", thousand_point_sweep(seed=1, **spec))
    cur = write_sweep(root / "c", thousand_point_sweep(seed=2, **spec))
    return base, cur


def test_bench_summarize(benchmark, sweeps):
    frame = analysis.load_frame(sweeps[0])
    summary = benchmark(analysis.per_configuration, frame)
    assert len(summary) == frame["config_key"].nunique()


def test_bench_scaling(benchmark, sweeps):
    frame = analysis.load_frame(sweeps[0])
    curves = benchmark(analysis.scaling, frame)
    assert curves["curve_id"].nunique() > 10


def test_bench_compare(benchmark, sweeps):
    base, cur = (compare.load_side(p) for p in sweeps)
    result = benchmark(compare.compare, base, cur)
    assert result.verdict in ("unchanged", "improved", "regressed", "inconclusive")
    assert len(result.points) == base.frame["config_key"].nunique()
