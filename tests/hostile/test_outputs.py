"""Issue 25, item 3: no output option replaces a file its command did not write.

The tests walk the CLI (and the tools) for every ``-o/--output`` option instead of naming
commands, so a command added later -- with an output option of its own -- is tested here the
day it appears: it must use :class:`harness.cli.OutputFile` (the check at parse time) and
:func:`harness.outputs.write_output` (the write), or these tests fail for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness import outputs, store
from harness.cli import OutputFile
from tests.hostile.conftest import (
    assert_refused,
    every_command,
    invoke,
    run_command,
    snapshot,
)

OUTPUT_OPTIONS = [
    (path, option)
    for path, command in every_command()
    for option in command.params
    if {"-o", "--output"} & set(option.opts)
]


def _id(value: object) -> str:
    return " ".join(value) if isinstance(value, tuple) else getattr(value, "name", str(value))


def test_the_walk_sees_the_output_options_there_are_today():
    """The discovery can fail: these four commands write through -o now."""
    found = {" ".join(path) for path, _ in OUTPUT_OPTIONS}
    assert {"report", "export", "sbatch", "project"} <= found, found


@pytest.mark.parametrize(("path", "option"), OUTPUT_OPTIONS, ids=_id)
def test_every_output_option_goes_through_the_one_check(path, option):
    assert isinstance(option.type, OutputFile), (
        f"{' '.join(path)} {option.opts}: declare it with type=OutputFile(kind) and write with "
        "harness.outputs.write_output"
    )


def _aim(kind: str, sweep: Path, tmp: Path) -> Path:
    """A path an output option is aimed at, which it must refuse."""
    record = next((sweep / "points").glob("*/record.json"))
    if kind == "ledger":
        return sweep / "ledger.jsonl"
    if kind == "record":
        return record
    if kind == "users-file":
        path = tmp / "my-notes.txt"
        path.write_text("three weeks of notes\n")
        return path
    if kind == "symlink-to-ledger":
        path = tmp / "out.html"
        path.symlink_to(sweep / "ledger.jsonl")
        return path
    if kind == "dangling-symlink":  # would create the file wherever it points
        path = tmp / "out.csv"
        path.symlink_to(tmp / "elsewhere.csv")
        return path
    if kind == "error-file":
        path = record.parent / "error.rank3.json"
        path.write_text("{}")
        return path
    if kind == "name-too-long":  # the file system says no: still one line, at parse time
        return tmp / ("a" * 300 + ".txt")
    if kind == "folder":
        path = tmp / "out.json"
        path.mkdir()
        return path
    if kind == "fifo":  # opening it to look inside would block forever
        path = tmp / "pipe.json"
        os.mkfifo(path)
        return path
    raise AssertionError(kind)


TARGETS = [
    "ledger", "record", "users-file", "symlink-to-ledger", "dangling-symlink", "error-file",
    "folder", "fifo", "name-too-long",
]  # fmt: skip


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("path", "option"), OUTPUT_OPTIONS, ids=_id)
def test_no_output_option_replaces_what_its_command_did_not_write(
    shared_sweep, tmp_path, path, option, target
):
    """Aimed first on the command line, the option is refused before anything else is looked
    at (so this needs no other argument): one line naming the path, exit 2, nothing changed."""
    aim = _aim(target, shared_sweep, tmp_path)
    before = snapshot(tmp_path), snapshot(shared_sweep)
    result = run_command(path, option.opts[0], aim)
    assert_refused(result, str(aim))
    assert (snapshot(tmp_path), snapshot(shared_sweep)) == before
    assert not (tmp_path / "elsewhere.csv").exists()


def test_an_output_option_from_the_environment_is_checked_too(sweep_dir):
    ledger = sweep_dir / "ledger.jsonl"
    before = ledger.read_bytes()
    result = invoke("report", sweep_dir, env={"DISTRINEWS_REPORT_OUTPUT": str(ledger)})
    assert_refused(result, str(ledger), "results file")
    assert ledger.read_bytes() == before


# -- each command writes where -o says, and replaces its own earlier output ----------------


def _writes(path: tuple[str, ...], sweep: Path, out: Path) -> list[list[str | Path]]:
    """Invocations of a command that write ``out`` (several: each format the command has)."""
    name = " ".join(path)
    if name == "report":
        return [[sweep, "-o", out, "--format", f] for f in ("text", "json", "html")]
    if name == "export":
        return [[sweep, "-o", out]]
    if name == "sbatch":
        return [["cpu-smoke", "--nodes", "1", "-o", out]]
    if name == "project":
        pure = ["--step-time-ms", "120", "--grad-mb", "255", "--gpus", "8,16", "-o", out]
        return [[*pure, "--format", f] for f in ("text", "markdown", "json")]
    if name == "history report":
        db = out.with_name("history.db")
        assert invoke("history", "ingest", sweep, "--db", db).exit_code == 0
        return [["--db", db, "-o", out]]
    return []


@pytest.mark.parametrize(("path", "option"), OUTPUT_OPTIONS, ids=_id)
def test_each_command_writes_its_output_where_o_says_and_replaces_only_its_own(
    sweep_dir, tmp_path, path, option
):
    out = tmp_path / ("out.csv" if path == ("export",) else "out.txt")
    calls = _writes(path, sweep_dir, out)
    if not calls:
        pytest.skip(f"no cheap invocation of {' '.join(path)} known here: add one to _writes")
    written = set()
    for args in [*calls, calls[0]]:  # every format, then the first again: each replaces
        result = run_command(path, *args)
        assert result.exit_code == 0, result.output
        written.add(out.read_bytes())
        assert len(result.stdout.splitlines()) <= 1, result.stdout  # a confirmation at most
    assert len(written) >= len(calls) - 1  # the formats differ (html/text/json, ...)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_report_json_and_text_go_to_o_not_to_stdout(sweep_dir, tmp_path):
    """Issue 25: `report --format json -o out.json` printed to stdout and ignored -o."""
    out = tmp_path / "out.json"
    result = invoke("report", sweep_dir, "--format", "json", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"report: {out}\n"
    assert set(json.loads(out.read_text())) >= {"headline", "curves", "decomposition"}
    text = invoke("report", sweep_dir, "--format", "text", "-o", out)
    assert text.exit_code == 0 and out.read_text().startswith("Scaling report: ")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_o_refuses_a_foreign_table_of_the_same_suffix(sweep_dir, tmp_path, suffix):
    import pandas as pd

    foreign = tmp_path / f"data{suffix}"
    frame = pd.DataFrame({"text": ["a"], "label": [1]})
    frame.to_csv(foreign, index=False) if suffix == ".csv" else frame.to_parquet(foreign)
    before = snapshot(tmp_path)
    assert_refused(invoke("export", sweep_dir, "-o", foreign), str(foreign), "not a")
    assert snapshot(tmp_path) == before


def test_a_file_that_appears_during_the_write_is_kept(tmp_path):
    """The path was free at the check; a file put there before the rename wins, and the
    output is dropped (the new file is linked in, which fails when the name exists)."""
    out = tmp_path / "r.txt"
    kind = outputs.OutputKind(name="thing", recognizes=None)

    def writer(fh):
        fh.write(b"ours\n")
        out.write_text("theirs\n")  # someone else, between the check and the rename

    with pytest.raises(outputs.UserError, match="appeared there"):
        outputs.write_output(out, writer, kind)
    assert out.read_text() == "theirs\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_every_results_file_name_is_protected_whatever_it_holds(tmp_path):
    """A ledger named by -o is refused even when a recognizer would accept its content."""
    kind = outputs.OutputKind(name="anything", recognizes=lambda _p, _h: True)
    for name in [*sorted(outputs.PROTECTED_NAMES), "error.json", "error.rank12.json"]:
        path = tmp_path / name
        path.write_text("x")
        with pytest.raises(outputs.UserError, match="is a results file"):
            outputs.check_output(path, kind)
    assert store.LEDGER_NAME in outputs.PROTECTED_NAMES
