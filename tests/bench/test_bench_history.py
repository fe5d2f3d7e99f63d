"""Benchmarks of the history store (issue 23, item 7): ingest 10,000 rows (target < 2 s), and
``history changes`` over 1,000 series x 200 runs (target < 10 s), both on SQLite.

    python -m pytest tests/bench/test_bench_history.py --benchmark-enable -s

The 200,000-run store is written straight into the tables (as 40 ingests of 5,000 runs would
write it, ledger-sized rows included: the scan reads them), with a 12% slowdown planted in one
series in ten, so the timing includes finding, sizing and describing 100 changes. In the test
suite (benchmarks disabled: each body runs once, as a test) the store holds 50 series, so the
suite checks the path without paying for the figure.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import sqlalchemy as sa

from harness.history import commands, ingest, schema
from tests.bench.conftest import measuring
from tests.helpers_results import fake_rows, thousand_point_sweep, write_ledger

N_SERIES, N_NIGHTS, REPEATS = 1000, 40, 5


enabled = measuring


@pytest.fixture(scope="module")
def big_sweep(tmp_path_factory, pytestconfig):
    repeats = 10 if enabled(pytestconfig) else 1  # the suite: 1,000 rows
    rows, side = fake_rows(thousand_point_sweep(repeats=repeats, side_files_limit=0))
    folder = tmp_path_factory.mktemp("bench-history") / "big"
    folder.mkdir()
    write_ledger(folder, rows)
    (folder / "env.json").write_text(json.dumps(side["env"]))
    return folder, len(rows)


def test_bench_ingest_10000_rows(benchmark, big_sweep, tmp_path, bench_report):
    folder, n = big_sweep
    rounds = iter(range(100))

    def fresh():
        return (str(tmp_path / f"h{next(rounds)}.db"),), {}

    def run(db):
        return commands.ingest(db, [folder])

    (result,) = benchmark.pedantic(run, setup=fresh, rounds=3, iterations=1)
    assert result.added == n and (n == 10_000 or not benchmark.enabled)
    if benchmark.stats:
        bench_report(benchmark, "rows_ingested_per_s", n / benchmark.stats["median"], "rows/s")


@pytest.fixture(scope="module")
def big_store(tmp_path_factory, big_sweep, pytestconfig):
    """1,000 series x 40 nights x 5 runs, one series in ten 12% slower from night 30."""
    folder, _ = big_sweep
    n_series = N_SERIES if enabled(pytestconfig) else 50
    template = ingest.read_sweep(folder).runs[0]["row"]  # a real ledger-sized row
    db = str(tmp_path_factory.mktemp("bench-store") / "history.db")
    st = schema.open_store(db, create=True)
    rng = np.random.default_rng(0)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with st.write() as conn:
        conn.execute(
            sa.insert(schema.series),
            [
                {"key": f"s{i:05d}", "label": f"series {i}", "world_size": 1 + i % 8,
                 "config": {"world_size": 1 + i % 8}, "machine": {"gpu_count": 8}}
                for i in range(n_series)
            ],
        )  # fmt: skip
        level = rng.uniform(500, 5000, n_series)
        for night in range(N_NIGHTS):
            when = (t0 + dt.timedelta(days=night)).isoformat(timespec="seconds")
            sweep_id = conn.execute(
                sa.insert(schema.sweeps).returning(schema.sweeps.c.id),
                [{"uid": f"u{night}", "name": "bench", "folder": f"/r/n{night}",
                  "git_sha": f"{night:040x}", "hostname": "node", "started_at": when,
                  "finished_at": when, "env": {"torch": "2.13.0" if night < 30 else "2.14.0"},
                  "definition": {}, "ingested_at": when}],
            ).scalar_one()  # fmt: skip
            drift = rng.normal(0, 0.03, n_series)  # the night's own conditions
            slow = np.where((np.arange(n_series) % 10 == 0) & (night >= 30), 0.88, 1.0)
            values = level * np.exp(drift) * slow
            runs = []
            for i in range(n_series):
                for r in range(REPEATS):
                    x = float(values[i] * rng.lognormal(0, 0.02))
                    runs.append(
                        {"sweep_id": sweep_id, "series_id": i + 1, "run_id": f"{i}.{r}",
                         "started_at": when, "status": "ok", "repeat": r, "samples_per_s": x,
                         "efficiency": None, "row": {**template, "samples_per_s": x}}
                    )  # fmt: skip
            conn.execute(sa.insert(schema.runs), runs)
    st.close()
    return db, n_series


def test_bench_changes_1000_series_x_200_runs(benchmark, big_store, bench_report):
    db, n_series = big_store
    text = benchmark.pedantic(
        commands.changes,
        args=(db,),
        kwargs={"metric": "samples_per_s", "fmt": "json"},
        rounds=3,
        iterations=1,
    )
    found = json.loads(text)["changes"]
    planted = [
        c
        for c in found
        if c["started_at"].startswith("2026-01-31") and int(c["series"].split()[1]) % 10 == 0
    ]
    assert json.loads(text)["series"] == n_series
    assert len(planted) >= 0.9 * n_series / 10
    assert all(c["kind"] == "regression" for c in planted)
    assert all(c["what_changed"]["torch"] == ["2.13.0", "2.14.0"] for c in planted)
    if benchmark.stats:
        bench_report(benchmark, "changes_seconds", benchmark.stats["median"], "s")
