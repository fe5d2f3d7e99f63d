"""Issue 25, item 6: the history commands meet hostile input, as a user would try it.

Values (metrics, levels, env.json fields, times), files (not a sweep, a corrupt ledger, a store
that is not a store or of a newer schema), URLs (unreachable, unsupported, with a password that
must never be printed back), symlinks (a store or an output that is a link), outputs aimed at
results files, and concurrency (a writer holding the store). Each: one line naming the thing,
exit 2, no traceback, and nothing already stored or written changed.
"""

from __future__ import annotations

import json
import os
import threading

import pytest
import sqlalchemy as sa

from harness.history import commands, schema
from tests.conftest import POSTGRES_URL
from tests.helpers_history import night_sweep
from tests.hostile.conftest import assert_refused, invoke, snapshot

SECRET = "Sup3r-S3cret-pw"


@pytest.fixture
def stored(tmp_path):
    """A store holding two nights, and a third night not yet ingested."""
    db = tmp_path / "store" / "history.db"
    commands.ingest(str(db), [night_sweep(tmp_path, 0), night_sweep(tmp_path, 1)])
    return db, night_sweep(tmp_path, 2)


# -- files -----------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_sweep(stored, tmp_path):
    db, _ = stored
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "plain.txt").write_text("hello")
    before = snapshot(db.parent)
    assert_refused(invoke("history", "ingest", empty, "--db", db), str(empty), "ledger.jsonl")
    assert_refused(invoke("history", "ingest", tmp_path / "nope", "--db", db), "no such")
    assert_refused(invoke("history", "check", tmp_path / "plain.txt", "--db", db), "plain.txt")
    assert snapshot(db.parent) == before


def test_a_corrupt_ledger_line_stores_nothing_from_any_folder(stored):
    db, fresh = stored
    ledger = fresh / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    lines[2] = '{"run_id": "x", "status": "ok", "samples_per_s": NaN}\n'
    ledger.write_text("".join(lines))
    good = night_sweep(db.parent.parent / "other", 5)
    before = snapshot(db.parent)
    # The good folder comes first: it is not stored either (all are checked before any write).
    result = invoke("history", "ingest", good, fresh, "--db", db)
    assert_refused(result, "ledger.jsonl: line 3")
    assert snapshot(db.parent) == before


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("gpu_count", "8", "field gpu_count"),
        ("gpu_count", -1, "field gpu_count"),
        ("gpu_count", 10**12, "field gpu_count"),
        ("gpu_names", "H100", "field gpu_names"),
        ("gpu_names", [1, 2], "field gpu_names"),
        ("git_dirty", "no", "field git_dirty"),
        ("torch", 2.13, "field torch"),
    ],
)
def test_hostile_env_json_values(stored, field, value, needle):
    db, fresh = stored
    env = json.loads((fresh / "env.json").read_text())
    env[field] = value
    (fresh / "env.json").write_text(json.dumps(env))
    before = snapshot(db.parent)
    assert_refused(invoke("history", "ingest", fresh, "--db", db), "env.json", needle)
    assert snapshot(db.parent) == before


@pytest.mark.parametrize("text", ["", "[1, 2]", '{"torch": NaN}', "{not json"])
def test_an_env_json_that_is_not_an_object(stored, text):
    db, fresh = stored
    (fresh / "env.json").write_text(text)
    assert_refused(invoke("history", "ingest", fresh, "--db", db), "env.json", "not a JSON object")


def test_a_sweep_without_env_json(stored):
    db, fresh = stored
    (fresh / "env.json").unlink()
    assert_refused(invoke("history", "ingest", fresh, "--db", db), "env.json", "missing")


@pytest.mark.parametrize("value", ["yesterday", 1700000000, "0001-01-01T00:00:00"])
def test_a_run_with_a_bad_start_time(stored, value):
    db, fresh = stored
    rows = [json.loads(line) for line in (fresh / "ledger.jsonl").read_text().splitlines()]
    rows[1]["started_at"] = value
    (fresh / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = snapshot(db.parent)
    assert_refused(invoke("history", "ingest", fresh, "--db", db), "field started_at")
    assert snapshot(db.parent) == before


def test_a_sweep_json_whose_spec_is_not_an_object(stored):
    db, fresh = stored
    (fresh / "sweep.json").write_text(json.dumps({"name": "x", "spec": [1]}))
    assert_refused(invoke("history", "ingest", fresh, "--db", db), "sweep.json", "field spec")


# -- the store -------------------------------------------------------------------------------


def test_a_store_of_a_newer_schema_is_refused_by_every_command(stored):
    db, fresh = stored
    st = schema.open_store(str(db))
    with st.write() as conn:
        conn.execute(schema.meta.update().values(value="7"))
    st.close()
    before = snapshot(db.parent)
    for args in (
        ("ingest", fresh),
        ("changes",),
        ("check", fresh),
        ("report", "-o", db.parent / "h.html"),
    ):
        assert_refused(invoke("history", *args, "--db", db), "schema version 7 is newer")
    assert snapshot(db.parent) == before


@pytest.mark.parametrize("content", [b"not a database at all\n", b"\x00" * 100])
def test_a_file_that_is_not_a_store_is_never_touched(tmp_path, content):
    db = tmp_path / "notes.db"
    db.write_bytes(content)
    fresh = night_sweep(tmp_path, 0)
    assert_refused(invoke("history", "ingest", fresh, "--db", db), "not an SQLite database")
    assert db.read_bytes() == content


def test_the_store_is_never_a_results_file_a_folder_or_a_symlink(stored, tmp_path):
    db, fresh = stored
    before = snapshot(tmp_path)
    ledger = fresh / "ledger.jsonl"
    assert_refused(invoke("history", "ingest", fresh, "--db", ledger), "is a results file")
    assert_refused(invoke("history", "ingest", fresh, "--db", tmp_path), "is a folder")
    link = tmp_path / "link.db"
    link.symlink_to(db)
    assert_refused(invoke("history", "ingest", fresh, "--db", link), "link.db", "symlink")
    # A URL naming the same file is checked the same way.
    url = f"sqlite:///{ledger}"
    assert_refused(invoke("history", "ingest", fresh, "--db", url), "is a results file")
    os.unlink(link)
    assert snapshot(tmp_path) == before


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path):
    db = tmp_path / "none" / "history.db"
    assert_refused(invoke("history", "changes", "--db", db), "no history store here")
    assert_refused(invoke("history", "report", "--db", db), "no history store here")
    assert not (tmp_path / "none").exists()


# -- URLs and passwords ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        (f"postgresql+psycopg://bench:{SECRET}@127.0.0.1:1/history", "127.0.0.1"),
        (f"postgresql://bench:{SECRET}@127.0.0.1:1/history", "127.0.0.1"),
        (f"mysql://bench:{SECRET}@db.example/history", "unsupported database 'mysql'"),
        (f"postgresql+asyncpg://bench:{SECRET}@127.0.0.1:1/h", "unsupported database"),
        (f"postgresql+psycopg://bench:{SECRET}@127.0.0.1:notaport/h", "not a database URL"),
        ("sqlite://", "in-memory"),
    ],
)
def test_an_unusable_url_is_one_line_and_the_password_never_printed(stored, url, needle):
    _, fresh = stored
    for args in (("ingest", fresh), ("changes",), ("check", fresh), ("report",)):
        result = invoke("history", *args, "--db", url)
        line = assert_refused(result, needle)
        assert SECRET not in result.output and SECRET not in result.stderr, line
        if "bench:" in line:
            assert "bench:***@" in line


def test_the_password_is_masked_when_the_environment_names_the_store(stored, monkeypatch):
    _, fresh = stored
    monkeypatch.setenv("DISTRINEWS_HISTORY_DB", f"postgresql://bench:{SECRET}@127.0.0.1:1/h")
    result = invoke("history", "ingest", fresh)
    assert_refused(result, "bench:***@127.0.0.1")
    assert SECRET not in result.output + result.stderr


@pytest.mark.skipif(not POSTGRES_URL, reason="no PostgreSQL server (DISTRINEWS_TEST_POSTGRES_URL)")
def test_a_wrong_password_on_a_real_server_is_masked(stored):
    _, fresh = stored
    url = sa.make_url(POSTGRES_URL).set(password=SECRET)
    result = invoke("history", "ingest", fresh, "--db", url.render_as_string(hide_password=False))
    line = assert_refused(result, "password authentication failed")
    assert SECRET not in result.output + result.stderr and "***@" in line


# -- options and outputs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--metric", "loss; DROP TABLE history_runs"), "--metric"),
        (("--metric", "status"), "--metric"),
        (("--max-pvalue", "nan"), "nan"),
        (("--max-pvalue", "0"), "--max-pvalue"),
        (("--max-pvalue", "0.9"), "--max-pvalue"),
        (("--max-pvalue", "inf"), "--max-pvalue"),
        (("--format", "yaml"), "--format"),
    ],
)
def test_bad_options_are_one_line(stored, args, needle):
    db, _ = stored
    before = snapshot(db.parent)
    result = invoke("history", "changes", "--db", db, *args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert needle in result.stderr
    assert snapshot(db.parent) == before


def test_report_never_replaces_a_file_it_did_not_write(stored, tmp_path):
    db, fresh = stored
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my own notes</html>")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "link.html"
    link.symlink_to(victim)
    before = snapshot(tmp_path)
    assert_refused(invoke("history", "report", "--db", db, "-o", mine), "refusing to replace")
    ledger = fresh / "ledger.jsonl"
    assert_refused(invoke("history", "report", "--db", db, "-o", ledger), "refusing to replace")
    assert_refused(invoke("history", "report", "--db", db, "-o", link), "symlink")
    assert_refused(invoke("history", "report", "--db", db, "-o", tmp_path), "is a directory")
    assert snapshot(tmp_path) == before


def test_check_refuses_a_results_root_of_several_sweeps(stored, tmp_path):
    db, _ = stored
    root = tmp_path / "root"
    root.mkdir()
    for n in (7, 8):
        night_sweep(tmp_path / "parts", n).rename(root / f"s{n}")
    assert_refused(invoke("history", "check", root, "--db", db), "holds 2 sweeps")


# -- concurrency -----------------------------------------------------------------------------


def test_a_writer_waits_for_another_holding_the_store(stored):
    """One process holds SQLite's write lock (mid-ingest); a second ingest waits its turn and
    then stores its runs: nothing lost, no "database is locked"."""
    db, fresh = stored
    st = schema.open_store(str(db))
    held = threading.Event()
    release = threading.Event()

    def hold():
        with st.write() as conn:
            conn.execute(sa.select(1))
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    timer = threading.Timer(1.0, release.set)
    timer.start()
    result = invoke("history", "ingest", fresh, "--db", db)
    holder.join()
    st.close()
    assert result.exit_code == 0, result.output
    assert "6 run(s) added" in result.output
