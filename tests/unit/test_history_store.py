"""The history store on a real SQLite file and a real PostgreSQL server (the same tests on
both; the PostgreSQL variants skip without DISTRINEWS_TEST_POSTGRES_URL): ingest once, ingest
again (nothing added), two writers at once (nothing lost), schema versions, series keys."""

from __future__ import annotations

import shutil
import threading

import pytest
import sqlalchemy as sa

from distrinews.errors import UserError
from distrinews.runspec import RunSpec
from harness import envinfo, store
from harness.history import commands, ingest, schema
from tests.helpers_history import night_sweep


def counts(db: str) -> dict[str, int]:
    st = schema.open_store(db)
    try:
        with st.read() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in (schema.sweeps, schema.series, schema.runs)
            }
    finally:
        st.close()


def test_ingest_stores_every_run_once_and_again_adds_nothing(history_db, tmp_path):
    folder = night_sweep(tmp_path, 0)
    rows = store.latest_by_run_id(store.read_ledger(folder))
    (first,) = commands.ingest(history_db, [folder])
    assert (first.added, first.known, first.new_sweep) == (len(rows), 0, True)
    (again,) = commands.ingest(history_db, [folder])
    assert (again.added, again.known, again.new_sweep) == (0, len(rows), False)
    # A copy of the folder elsewhere (a CI artifact downloaded twice) is the same sweep.
    copy = tmp_path / "copy" / "nightly"
    shutil.copytree(folder, copy)
    (third,) = commands.ingest(history_db, [copy])
    assert third.added == 0 and not third.new_sweep
    assert counts(history_db) == {
        "history_sweeps": 1,
        "history_series": 2,  # world sizes 1 and 2
        "history_runs": len(rows),
    }
    st = schema.open_store(history_db)
    with st.read() as conn:
        sweep = conn.execute(sa.select(schema.sweeps)).one()
        stored = conn.execute(sa.select(schema.runs.c.row)).scalars().all()
    st.close()
    assert sweep.git_sha.startswith("0000000") and sweep.env["torch"] == "2.13.0+cu128"
    assert sweep.definition == {"name": "nightly", "repeats": 3}
    assert sorted(r["run_id"] for r in stored) == sorted(rows)


def test_a_resumed_folder_adds_only_its_new_runs(history_db, tmp_path):
    folder = night_sweep(tmp_path, 0)
    rows = store.read_ledger(folder)
    ledger = store.ledger_path(folder)
    head = ledger.read_text().splitlines(keepends=True)
    ledger.write_text("".join(head[:4]))  # the sweep was interrupted after four points
    (part,) = commands.ingest(history_db, [folder])
    ledger.write_text("".join(head))  # ... and resumed
    (rest,) = commands.ingest(history_db, [folder])
    assert (part.added, rest.added, rest.new_sweep) == (4, len(rows) - 4, False)
    assert counts(history_db)["history_sweeps"] == 1


def test_a_folder_wiped_and_run_again_is_a_new_sweep(history_db, tmp_path):
    night_sweep(tmp_path / "a", 0)
    folder = night_sweep(tmp_path / "b", 1)
    (one,) = commands.ingest(history_db, [tmp_path / "a" / "n000" / "nightly"])
    (two,) = commands.ingest(history_db, [folder])
    assert one.new_sweep and two.new_sweep
    assert counts(history_db)["history_sweeps"] == 2


def test_two_writers_at_once_lose_nothing(history_db, tmp_path):
    """Four threads, each with its own connection (as two processes would), ingest two
    different sweeps and the same sweep twice, released at the same instant."""
    folders = [night_sweep(tmp_path, n) for n in range(3)]
    commands.ingest(history_db, [folders[2]])  # the schema exists; the race is on the rows
    expected = sum(len(store.latest_by_run_id(store.read_ledger(f))) for f in folders)
    plan = [folders[0], folders[1], folders[0], folders[1]]
    start = threading.Barrier(len(plan))
    errors: list[BaseException] = []
    results = []

    def write(folder):
        try:
            batch = ingest.read_sweep(folder)
            st = schema.open_store(history_db, create=True)
            start.wait()
            results.append(ingest.write_batch(st, batch, folder=folder))
            st.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f,)) for f in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert counts(history_db) == {
        "history_sweeps": 3,
        "history_series": 2,
        "history_runs": expected,
    }
    # Each sweep's runs were added by exactly one of its two writers.
    added = sorted(r.added for r in results)
    assert added[:2] == [0, 0] and added[2] == added[3] > 0


def test_a_fresh_store_on_first_open_by_two_writers(history_db, tmp_path):
    """Both writers find no tables and create them at the same moment: one does, the other
    waits (SQLite's write lock, PostgreSQL's advisory lock) and finds them."""
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def open_it():
        try:
            start.wait()
            schema.open_store(history_db, create=True).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert counts(history_db) == {"history_sweeps": 0, "history_series": 0, "history_runs": 0}


def _set_version(db: str, version: str) -> None:
    st = schema.open_store(db)
    with st.write() as conn:
        conn.execute(
            sa.update(schema.meta)
            .where(schema.meta.c.key == "schema_version")
            .values(value=version)
        )
    st.close()


def test_a_store_of_a_newer_schema_is_refused_and_left_alone(history_db, tmp_path):
    commands.ingest(history_db, [night_sweep(tmp_path, 0)])
    _set_version(history_db, str(schema.SCHEMA_VERSION + 1))
    before = _dump(history_db)
    with pytest.raises(UserError, match=r"schema version 2 is newer .* not changed"):
        commands.ingest(history_db, [night_sweep(tmp_path, 1)])
    with pytest.raises(UserError, match="schema version 2 is newer"):
        commands.changes(history_db, metric="samples_per_s", fmt="text")
    assert _dump(history_db) == before


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0", "older than"),
        ("-1", "not a version"),
        ("one", "not a version"),
        ("²", "not a version"),
    ],
)
def test_an_older_or_garbled_version_without_an_upgrade_is_refused(
    history_db, tmp_path, value, says
):
    commands.ingest(history_db, [night_sweep(tmp_path, 0)])
    _set_version(history_db, value)
    before = _dump(history_db)
    with pytest.raises(UserError, match=says):
        commands.ingest(history_db, [night_sweep(tmp_path, 1)])
    assert _dump(history_db) == before


def test_an_older_store_is_upgraded_by_its_migration(history_db, tmp_path, monkeypatch):
    """The upgrade path: code of version 2 opens a version-1 store and migrates it in place."""
    commands.ingest(history_db, [night_sweep(tmp_path, 0)])

    def add_note_column(conn):
        conn.execute(sa.text("ALTER TABLE history_sweeps ADD COLUMN note TEXT"))

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(schema, "MIGRATIONS", {1: add_note_column})
    with pytest.raises(UserError, match=r"older .* run `distrinews-bench history ingest`"):
        commands.changes(history_db, metric="samples_per_s", fmt="text")  # reading never migrates
    commands.ingest(history_db, [night_sweep(tmp_path, 1)])
    st = schema.open_store(history_db)
    with st.read() as conn:
        version = conn.execute(sa.select(schema.meta.c.value)).scalar_one()
        cols = {c["name"] for c in sa.inspect(conn).get_columns("history_sweeps")}
    st.close()
    assert version == "2" and "note" in cols
    assert counts(history_db)["history_sweeps"] == 2


def test_a_database_with_foreign_history_tables_is_refused(history_db):
    st = schema.open_store(history_db, create=True)
    with st.write() as conn:
        conn.execute(sa.text("DROP TABLE history_meta"))
    st.close()
    with pytest.raises(UserError, match="not a store this distrinews wrote"):
        schema.open_store(history_db, create=True)


def test_reading_an_empty_store_says_to_ingest_first(history_db):
    with pytest.raises(UserError, match="ingest a sweep first"):
        commands.changes(history_db, metric="samples_per_s", fmt="text")


def _dump(db: str) -> list:
    """Every row of every table, read past the version check (what "unchanged" compares)."""
    engine = sa.create_engine(schema.resolve(db), poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return [
                sorted(map(tuple, conn.execute(sa.select(t)).all()), key=repr)
                for t in schema.TABLES
            ]
    finally:
        engine.dispose()


# -- series ----------------------------------------------------------------------------------


def _key(row_changes=None, env_changes=None):
    row = {c: v for c, v in store.config_columns(RunSpec()).items()}
    row.update(row_changes or {})
    env = {
        "gpu_names": ["NVIDIA H100 80GB HBM3"],
        "gpu_count": 8,
        "hostname": "a",
        **(env_changes or {}),
    }
    return ingest.series_key(row, ingest.machine_class(env)).key


def test_a_series_is_a_configuration_on_a_machine_class_never_a_host_or_a_version():
    base = _key()
    # Not part of a series: what the history exists to find.
    assert _key(env_changes={"hostname": "b", "torch": "2.14.0", "driver": "580"}) == base
    assert _key({"fault": "slow_comm", "fault_ms": 50.0}) == base
    assert (
        _key({"world_size": float(RunSpec().world_size)}) == base
    )  # an int and a float of the same value
    # Part of it: the configuration and the class of machine.
    assert _key({"nproc_per_node": 2, "world_size": 2}) != base
    assert _key({"precision": "fp16" if RunSpec().precision != "fp16" else "fp32"}) != base
    assert _key(env_changes={"gpu_count": 4}) != base
    assert _key(env_changes={"gpu_names": ["NVIDIA A100-SXM4-80GB"]}) != base
    # A column added later keeps old rows' series while it holds its default.
    row = store.config_columns(RunSpec())
    old = {
        k: v for k, v in row.items() if k not in ("tokenizer", "lr", "seed", "ddp_powersgd_rank")
    }
    env = {"gpu_names": ["NVIDIA H100 80GB HBM3"], "gpu_count": 8}
    assert ingest.series_key(old, ingest.machine_class(env)).key == base


def test_the_env_fields_checked_are_the_ones_envinfo_writes():
    written = set(envinfo.collect()) - {"fingerprint_fields"}
    # load_avg_end is written by the sweep when its runs end, after collect().
    assert written | {"load_avg_end"} == set(ingest.ENV_TYPES)
