"""Benchmark: reading a 10,000-row ledger (store.read_ledger, then the analysis frame)."""

from __future__ import annotations

import json

import pytest

from harness import analysis, store
from tests.helpers_results import fake_rows, thousand_point_sweep


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory):
    rows, _ = fake_rows(thousand_point_sweep(repeats=10, side_files_limit=0))
    sweep = tmp_path_factory.mktemp("bench-ledger")
    # The exact bytes store.append_row writes, without 10,000 fsyncs.
    text = "".join(
        json.dumps(r, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n" for r in rows
    )
    store.ledger_path(sweep).write_text(text)
    return sweep, len(rows)


def test_bench_read_ledger_10000_rows(benchmark, big_ledger):
    sweep, n = big_ledger
    rows = benchmark(store.read_ledger, sweep)
    assert len(rows) == n == 10_000


def test_bench_load_frame_10000_rows(benchmark, big_ledger):
    sweep, n = big_ledger
    frame = benchmark(analysis.load_frame, sweep)
    assert len(frame) == n
