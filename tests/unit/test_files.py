"""The one atomic writer (distrinews/files.py): modes, same-folder temp files, links refused,
nothing partial left behind -- and no second implementation anywhere in the source tree."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from distrinews import files
from distrinews.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def test_no_other_module_replaces_or_fsyncs_files():
    """A twin of the atomic writer cannot creep in: os.replace, fsync and mkstemp live in
    distrinews/files.py only."""
    pattern = re.compile(r"os\.replace\(|fsync\(|mkstemp\(")
    home = ROOT / "distrinews" / "files.py"
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for package in ("distrinews", "harness")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != home
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, "use distrinews.files instead:\n" + "\n".join(offenders)
    assert pattern.search(home.read_text())  # the check itself still sees the real one


def test_the_file_gets_the_umasks_ordinary_mode(tmp_path):
    old = os.umask(0o002)  # not the usual 0022, so the mode is seen to follow the umask
    try:
        files.atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o664  # mkstemp alone gives 0600


def test_the_temp_file_is_hidden_in_the_same_folder_and_the_old_file_stays_until_the_rename(
    tmp_path,
):
    path = tmp_path / "record.json"
    path.write_text("old")
    seen = {}

    def writer(fh):
        seen["temp"] = Path(os.readlink(f"/proc/self/fd/{fh.fileno()}"))  # Linux
        seen["during"] = path.read_text()
        fh.write(b"new")

    assert files.atomic_write(path, writer) is True
    assert seen["temp"].parent == tmp_path and seen["temp"].name.startswith(".record.json.")
    assert seen["during"] == "old" and path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_symlink_where_the_file_belongs_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("keep")
    link = tmp_path / "record.json"
    link.symlink_to(target)
    with pytest.raises(UserError, match=r"record\.json: is a symlink .*refusing to write"):
        files.atomic_write_text(link, "new")
    assert target.read_text() == "keep" and link.is_symlink()
    with pytest.raises(UserError, match="is a folder"):
        files.atomic_write_text(tmp_path, "x")


def test_a_failing_writer_leaves_the_old_file_and_no_partial_file(tmp_path):
    path = tmp_path / "cache.npz"
    path.write_bytes(b"complete old cache")

    def half_then_fail(fh):
        fh.write(b"half a ca")
        raise RuntimeError("disk pulled")

    with pytest.raises(RuntimeError, match="disk pulled"):
        files.atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"complete old cache"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_a_writer_callback_takes_numpy_and_an_os_error_names_the_file(tmp_path):
    path = tmp_path / "cache.npz"
    files.atomic_write(path, lambda fh: np.savez(fh, ids=np.arange(3)))
    assert np.load(path)["ids"].tolist() == [0, 1, 2]

    def full_disk(fh):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as err:
        files.atomic_write(path, full_disk)
    assert err.value.filename == str(path)
    assert np.load(path)["ids"].tolist() == [0, 1, 2]


def test_create_only_keeps_the_first_writers_file(tmp_path):
    path = tmp_path / "error.json"
    assert files.atomic_write_text(path, "first", replace=False) is True
    assert files.atomic_write_text(path, "second", replace=False) is False
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["error.json"]


def test_json_is_written_as_the_harness_reads_it_and_nan_is_refused(tmp_path):
    path = tmp_path / "env.json"
    files.atomic_write_json(path, {"b": 1, "a": [1.5]})
    assert path.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        files.atomic_write_json(path, {"a": float("nan")})
    assert path.read_text().startswith('{\n  "a"')  # the old file survives the refusal


def test_an_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "checkpoints" / "step-1"
    with pytest.raises(RuntimeError), files.atomic_folder(final) as tmp:
        (tmp / "weights").write_bytes(b"w")
        raise RuntimeError("killed mid-save")
    assert not final.exists() and list(final.parent.iterdir()) == []
    with files.atomic_folder(final) as tmp:
        (tmp / "weights").write_bytes(b"one")
    with files.atomic_folder(final) as tmp:  # the same name again: swapped in, old one gone
        (tmp / "weights").write_bytes(b"two")
    assert (final / "weights").read_bytes() == b"two"
    assert [p.name for p in final.parent.iterdir()] == ["step-1"]
    assert final.stat().st_mode & 0o777 == 0o777 & ~files.umask()  # not mkdtemp's 0700


def test_a_durable_append_cuts_a_torn_line_first_and_refuses_links(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')  # a kill tore the last line
    files.append_durably(path, b'{"c":3}\n')
    assert path.read_bytes() == b'{"a":1}\n{"c":3}\n'
    link = tmp_path / "serving.jsonl"
    link.symlink_to(path)
    with pytest.raises(UserError, match="is a symlink"):
        files.append_durably(link, b"{}\n")
    assert path.read_bytes() == b'{"a":1}\n{"c":3}\n'
