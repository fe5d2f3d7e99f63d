"""Issue 12, items 1 and 2: no write through a planted symlink; no -o replaces a foreign file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from distrinews.errors import UserError
from harness import analysis, report, serving_store, store
from tests.hostile.conftest import assert_refused, invoke, snapshot


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the sweep folder that a planted symlink points at."""
    path = tmp_path / "victim.txt"
    path.write_bytes(b"precious, not to be emptied\n")
    return path


# -- item 1: planted symlinks inside a results folder ----------------------------------------


def test_planted_lock_symlink_is_refused_and_its_target_untouched(sweep_dir, victim):
    (sweep_dir / ".lock").symlink_to(victim)
    before = snapshot(victim.parent)
    with pytest.raises(UserError, match=r"\.lock: is a symlink"), store.sweep_lock(sweep_dir):
        pass
    assert snapshot(victim.parent) == before


def test_a_sweep_into_a_folder_with_a_planted_lock_exits_2(tmp_path, victim):
    sweep = tmp_path / "results" / "x"
    sweep.mkdir(parents=True)
    (sweep / ".lock").symlink_to(victim)
    before = snapshot(tmp_path)
    result = invoke("sweep", "cpu-smoke", "--results", tmp_path / "results", "--name", "x")
    assert_refused(result, ".lock", "symlink")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["ledger.jsonl", "serving.jsonl"])
def test_appends_never_write_through_a_symlinked_ledger(tmp_path, victim, name):
    folder = tmp_path / "results" / "x"
    folder.mkdir(parents=True)
    (folder / name).symlink_to(victim)
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match=f"{name}: is a symlink"):
        if name == "ledger.jsonl":
            store.append_row(folder, {"run_id": "a", "status": "ok"})
        else:
            store.append_jsonl(serving_store.serving_path(folder), {"kind": "serving"})
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["env.json", "sweep.json", "report.html", "status.json"])
def test_atomic_writes_refuse_a_symlink_where_the_file_belongs(sweep_dir, victim, name):
    target = sweep_dir / name
    target.unlink(missing_ok=True)
    target.symlink_to(victim)
    before = snapshot(sweep_dir.parent.parent)
    with pytest.raises(UserError, match=f"{name}: is a symlink"):
        store.atomic_write_text(target, "{}")
    assert snapshot(sweep_dir.parent.parent) == before


def test_report_into_the_sweep_refuses_a_planted_report_symlink(sweep_dir, victim):
    (sweep_dir / "report.html").symlink_to(victim)
    before = snapshot(sweep_dir.parent.parent)
    assert_refused(invoke("report", sweep_dir), "report.html", "symlink")
    assert snapshot(sweep_dir.parent.parent) == before


@pytest.mark.parametrize("where", ["points", "point", "attempts"])
def test_point_folders_that_are_symlinks_are_refused(tmp_path, where):
    sweep = tmp_path / "s"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    if where == "points":
        sweep.mkdir()
        (sweep / "points").symlink_to(outside)
    elif where == "point":
        (sweep / "points").mkdir(parents=True)
        (sweep / "points" / "abc").symlink_to(outside)
    else:
        (sweep / "points" / "abc").mkdir(parents=True)
        (sweep / "points" / "abc" / "logs").mkdir()
        (sweep / "points" / "abc" / "attempts").symlink_to(outside)
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="is a symlink"):
        store.fresh_point_dir(sweep, "abc")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "point_dir",
    ["../../x", "points/../../../etc", "/etc", "points/a/../../.."],
)
def test_a_ledger_row_naming_a_folder_outside_the_sweep_is_refused(sweep_dir, point_dir):
    rows = store.read_ledger(sweep_dir)
    rows[1]["point_dir"] = point_dir
    store.ledger_path(sweep_dir).write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = snapshot(sweep_dir)
    for command in (("report", sweep_dir), ("report", sweep_dir, "--format", "text")):
        assert_refused(invoke(*command), "ledger.jsonl: line 2", "field point_dir")
    out = sweep_dir.parent / "x.csv"
    assert_refused(invoke("export", sweep_dir, "-o", out), "line 2", "point_dir")
    assert snapshot(sweep_dir) == before and not out.exists()


def test_a_point_folder_symlinked_outside_is_never_read(sweep_dir, tmp_path):
    row = store.read_ledger(sweep_dir)[0]
    pdir = sweep_dir / row["point_dir"]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "record.json").write_text(json.dumps({"step_times_s": [[1.0], [2.0]]}))
    (outside / "telemetry.jsonl").write_text(json.dumps({"t_unix": 1.0, "util_pct": 5}) + "\n")
    for child in pdir.iterdir():
        if child.is_file():
            child.unlink()
    os.rmdir(pdir / "logs")
    pdir.rmdir()
    pdir.symlink_to(outside)
    assert store.resolve_point_dir(sweep_dir, row["point_dir"]) is None
    assert analysis.load_rank_step_times(sweep_dir, [row["point_dir"]]) == {}
    assert analysis.load_telemetry(sweep_dir, [row["point_dir"]]).empty
    report.load_report(sweep_dir)  # renders, without the planted files


# -- item 2: output folders of other results -------------------------------------------------
# (output *files*, -o, are tested for every command at once in test_outputs.py)


@pytest.mark.parametrize("marker", ["ledger.jsonl", "serving.jsonl", "checkpoint.pt"])
def test_train_out_refuses_a_folder_of_other_results(tmp_path, marker):
    out = tmp_path / "out"
    out.mkdir()
    (out / marker).write_text("x\n")
    before = snapshot(tmp_path)
    result = invoke("train", "--data", "synthetic:64", "--out", out)
    assert_refused(result, str(out), marker)
    assert snapshot(tmp_path) == before


def test_bench_serve_refuses_a_foreign_or_linked_serving_file(tmp_path, victim):
    folder = tmp_path / "results" / "serving"
    folder.mkdir(parents=True)
    (folder / "serving.jsonl").write_text('{"run_id": "a", "status": "ok"}\n')
    before = snapshot(tmp_path)
    args = ("bench-serve", "--url", "http://127.0.0.1:9", "--results", tmp_path / "results")
    assert_refused(invoke(*args), "serving.jsonl: line 1", "field kind")
    (folder / "serving.jsonl").unlink()
    (folder / "serving.jsonl").symlink_to(victim)
    before = snapshot(tmp_path)
    assert_refused(invoke(*args), "serving.jsonl", "symlink")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["history.jsonl", "fit.json", "checkpoints"])
def test_train_refuses_a_symlink_planted_in_its_out_folder(tmp_path, victim, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(victim if name != "checkpoints" else tmp_path)
    before = snapshot(tmp_path)
    result = invoke("train", "--data", "synthetic:64", "--out", out)
    assert_refused(result, name, "symlink")
    assert snapshot(tmp_path) == before
