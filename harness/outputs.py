"""Output options (``-o``): whether a file may be written there, and writing it. One home.

Every command that writes a file the user names (``report -o``, ``export -o``, ``sbatch -o``,
``project -o``, and any command added later) goes through :func:`write_output`, and its click
option through :class:`harness.cli.OutputFile`, which runs :func:`check_output` while the
command line is parsed -- so a bad ``-o`` is refused before any work, whatever else is wrong.

The rule: **an output option never replaces a file the command did not write.** The file at
the path may be replaced only when it is an earlier output of the same command, which its
:class:`OutputKind` recognizes from its content (a report replaces an older report). Refused,
each with one :class:`~distrinews.errors.UserError` line naming the path:

- a symlink (the write would land wherever it points: a ledger, a colleague's file);
- a folder, a FIFO, a device or a socket (opening a FIFO to look at it would block forever);
- any file named like a results, training or checkpoint file (ledger.jsonl, record.json,
  checkpoint.pt, ...: :data:`PROTECTED_NAMES`), whatever it holds;
- any other existing file the kind does not recognize (a user's notes, a data set).

The write itself is atomic (:mod:`distrinews.files`): a reader sees the old file or the new
one, never half of either, and a failing renderer leaves nothing behind. When the path was
free at the check, the new file is *linked* in, which fails if a file appeared there meanwhile
(the new file is then dropped, and the one that appeared is kept). Replacing an earlier output
is a plain atomic rename; a file swapped in between the check and that rename (microseconds)
would be replaced -- the one window left, and it needs someone racing the command on purpose.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from distrinews import files, layout
from distrinews.errors import UserError

#: Files of a results, training or checkpoint folder that no output option may replace, by
#: name (whatever they hold: a truncated ledger is still the ledger).
PROTECTED_NAMES = frozenset(
    {
        layout.LEDGER_NAME,
        layout.LOCK_NAME,
        layout.ENV_JSON,
        layout.SWEEP_JSON,
        layout.POOL_JSON,
        layout.RUN_JSON,
        layout.RECORD_JSON,
        layout.STATUS_JSON,
        layout.TELEMETRY_JSONL,
        layout.SERVING_LEDGER,
        layout.MAX_BATCH_LEDGER,
        layout.HISTORY_JSONL,
        layout.FIT_JSON,
        layout.FIT_RESULT_JSON,
        layout.WEIGHTS_FILE,
        layout.CONFIG_FILE,
        layout.LAUNCHER_LOG,
        layout.TELEMETRY_LOG,
    }
)
#: ... and these patterns (error.json, error.rank3.json).
PROTECTED_GLOBS = (layout.ERROR_FILES_GLOB,)
#: How much of an existing file a recognizer is shown (it may read more from the path).
HEAD_BYTES = 4096

#: ``recognizes(path, head)``: whether the existing file at ``path``, whose first
#: :data:`HEAD_BYTES` are ``head``, is an earlier output of the command (it may be replaced).
Recognizer = Callable[[Path, bytes], bool]


@dataclass(frozen=True, kw_only=True)
class OutputKind:
    """What a command writes through its output option."""

    name: str
    """Named in messages: "HTML report", "sbatch script"."""
    recognizes: Recognizer | None = None
    """Tells the command's own earlier output from anything else; None: no existing file is
    ever replaced (the user removes it, or picks another path)."""


def is_protected(path: Path) -> bool:
    """Whether ``path`` is named like a file of a results, training or checkpoint folder."""
    name = Path(path).name
    return name in PROTECTED_NAMES or any(fnmatch.fnmatch(name, g) for g in PROTECTED_GLOBS)


def check_output(path: Path, kind: OutputKind) -> bool:
    """Refuse ``path`` unless writing ``kind`` there replaces nothing the command did not write.

    Returns whether a file is there now (an earlier output, to be replaced). Never follows a
    symlink and never opens anything but a regular file, so it neither writes nor blocks.
    """
    path = Path(path)
    files.refuse_symlink(path, what=kind.name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:  # a parent is a file: the write fails and says so
        return False
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{path}: is a folder; give the path of the {kind.name} file to write")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(
            f"{path}: is not a regular file (a FIFO, device or socket); refusing to write a "
            f"{kind.name} there"
        )
    if is_protected(path):
        raise UserError(
            f"{path}: is a results file ({path.name}); refusing to replace it with a "
            f"{kind.name} -- choose another path"
        )
    if kind.recognizes is None or not kind.recognizes(path, _head(path)):
        raise UserError(
            f"{path}: exists and is not a {kind.name} written by distrinews-bench; refusing to "
            "replace it -- choose another path or remove it first"
        )
    return True


def write_output(
    path: Path, content: str | bytes | Callable[[IO[bytes]], Any], kind: OutputKind
) -> Path:
    """Write ``content`` (text, bytes, or a writer filling a binary file) to ``path`` atomically,
    after :func:`check_output`; returns ``path``. Nothing is written when it refuses."""
    path = Path(path)
    existed = check_output(path, kind)
    if isinstance(content, str):
        content = content.encode("utf-8")
    if isinstance(content, bytes):
        data = content

        def writer(fh: IO[bytes]) -> None:
            fh.write(data)

    else:
        writer = content
    if existed:
        files.atomic_write(path, writer)
    elif not files.atomic_write(path, writer, replace=False):
        raise UserError(
            f"{path}: a file appeared there while the {kind.name} was being written; refusing "
            "to replace it -- choose another path"
        )
    return path


def _head(path: Path) -> bytes:
    """The first HEAD_BYTES of a regular file, opened without following a link or blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the existing file ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the lstat
            raise UserError(f"{path}: is not a regular file; refusing to write there")
        return os.read(fd, HEAD_BYTES)
    finally:
        os.close(fd)


def read_small(path: Path, limit: int = 16 << 20) -> bytes | None:
    """The whole file when it is at most ``limit`` bytes (for recognizers that must parse it),
    else None: an output this large is not one the command wrote."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(limit + 1)
    finally:
        os.close(fd)
