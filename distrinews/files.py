"""Writing files that others read: atomically, durably, with ordinary modes, never through links.

This is the one module that replaces, renames or fsyncs files (a test greps the source tree for
``os.replace`` and ``fsync`` elsewhere). Everything that writes results, caches or checkpoints
comes through here:

- **Atomic replace** (:func:`atomic_write`, and its text/bytes/JSON forms): the content goes
  to a temp file in the *same folder* (a rename is atomic only within one file system), is
  fsynced, gets the file's ordinary mode, then one ``os.replace`` swaps it in. A reader sees
  the old file or the new one, never a mix; a kill or a failing writer leaves the old file
  untouched and no temp file behind. With ``replace=False`` the temp file is *linked* in
  instead, which fails when the name exists: the first writer wins (how the first failing rank
  claims ``error.json``).
- **Atomic folders** (:func:`atomic_folder`): a checkpoint is several files that must appear
  together, so they are written into a temp folder beside the final one, every file and the
  folder are fsynced, then one rename makes it appear (an existing folder of the same name is
  swapped out, never deleted before the new one is in).
- **Durable appends** (:func:`append_durably`): an append-only JSONL file (ledger, serving
  ledger) gets each record with one ``write`` and an fsync; a torn last line left by an earlier
  kill is cut off first, so the new record starts on a line of its own.
- **Ordinary modes** (:func:`ordinary_mode`): ``open()`` and ``mkdir()`` create files 0666 and
  folders 0777 minus the umask (usually 0022: -rw-r--r--, drwxr-xr-x), so teammates on a shared
  cluster can read results. ``tempfile.mkstemp``/``mkdtemp`` create 0600/0700 on purpose (a
  temp file is private until renamed), so the temp file gets the ordinary mode before the rename.
- **No writing through planted symlinks** (:func:`refuse_symlink`, :func:`open_nofollow`): a
  results folder on a cluster is writable by colleagues; a symlink where a file belongs would
  redirect the write (or silently drop what the user put there), so it is refused with one
  :class:`~distrinews.errors.UserError` line.

Pure standard library, so the workload (``distrinews``) and the harness share it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import UserError

# -- modes and links -------------------------------------------------------------------------


def umask() -> int:
    """The process umask, read without changing it (Linux /proc), else by a set-and-restore."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def ordinary_mode(path: Path | str) -> None:
    """chmod ``path`` to what open()/mkdir() would have given it: 0666 (file) or 0777 (folder)
    minus the umask."""
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~umask())


def refuse_symlink(path: Path, *, what: str = "file") -> None:
    """UserError when ``path`` is a symlink (it would redirect a write somewhere else)."""
    if Path(path).is_symlink():
        raise UserError(
            f"{path}: is a symlink (to {os.readlink(path)}); refusing to write a {what} "
            "through it -- remove the link"
        )


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symlink at ``path`` with one UserError line."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_symlink(path)
        raise


def named_os_error(exc: BaseException, path: Path) -> BaseException:
    """``exc`` carrying ``path`` when it is an OSError that names no file (a write hitting a
    full disk says only "No space left on device"); anything else unchanged."""
    if isinstance(exc, OSError) and exc.filename is None:
        return OSError(exc.errno, exc.strerror or str(exc), str(path))
    return exc


# -- atomic files ----------------------------------------------------------------------------

#: errno of os.link on a file system that has no hard links.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


#: errno of os.link on a file system that has no hard links.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def atomic_write(path: Path, writer: Callable[[IO[bytes]], Any], *, replace: bool = True) -> bool:
    """Write ``path`` atomically: ``writer`` fills a binary temp file in the same folder, which
    is fsynced, given the ordinary file mode and renamed over ``path``.

    ``writer`` gets the open temp file (``np.savez(fh, ...)``, ``torch.save(obj, fh)``,
    ``fh.write(data)``). If it raises, the temp file is removed and ``path`` is untouched.
    With ``replace=False`` an existing ``path`` is kept and False returned (the first writer
    wins); otherwise True. A symlink or a folder at ``path`` is refused (UserError); an
    OSError names ``path``.
    """
    path = Path(path)
    refuse_symlink(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; expected a file here")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        ordinary_mode(tmp)  # mkstemp made it 0600; results are for the team to read
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # atomic and exclusive: fails when the name exists
        except FileExistsError:
            os.unlink(tmp)
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # A file system without hard links (FAT, some network and FUSE mounts): claim the
            # name exclusively, then rename over the claim. Still never replaces a file that
            # was there; a reader may see the claim empty for an instant.
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW))
            except FileExistsError:
                os.unlink(tmp)
                return False
            try:
                os.replace(tmp, path)
            except BaseException:
                os.unlink(path)  # our empty claim, not a file anyone else put there
                raise
            return True
        os.unlink(tmp)
        return True
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise named_os_error(exc, path) from None


def atomic_write_bytes(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda fh: fh.write(data), replace=replace)


def atomic_write_text(path: Path, text: str, *, replace: bool = True) -> bool:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), replace=replace)


def atomic_write_json(path: Path, data: Any) -> None:
    """:func:`atomic_write_text` of ``data`` as the harness writes JSON files: indented, keys
    sorted, a final newline; NaN and infinity are refused (ValueError: they are not JSON)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


# -- atomic folders --------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_folder(final: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; when the block ends, make it ``final`` atomically.

    Every file and folder inside is fsynced, the folder gets its ordinary mode, then one
    rename puts it in place; an existing ``final`` is renamed aside first and removed only
    after the new one is in. With ``replace=False`` an existing ``final`` (or one that appears
    while the block runs) is a UserError instead, and is left as it is. If the block raises,
    the temp folder is removed and ``final`` is untouched. A kill leaves at worst a ``.tmp-*``
    folder beside it, which readers ignore.
    """
    final = Path(final)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{final.name}-"))
    try:
        yield tmp
        for folder, _dirs, names in os.walk(tmp):
            for name in names:
                _fsync_path(Path(folder) / name)
            _fsync_path(Path(folder))
        ordinary_mode(tmp)  # mkdtemp made it 0700; like any folder the user makes
        if not replace:
            _rename_no_replace(tmp, final)
        elif final.exists():  # swap: never delete the old one before the new one is in
            old = root / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_path(root)  # a rename is durable once the directory entry is on disk
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rename_no_replace(tmp: Path, final: Path) -> None:
    """Rename folder ``tmp`` to ``final`` unless something is there (rename(2) would replace an
    empty folder, so look first; a non-empty folder or a file makes the rename itself fail)."""
    if final.exists() or final.is_symlink():
        raise UserError(f"{final}: already exists; refusing to replace it")
    try:
        os.rename(tmp, final)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise UserError(f"{final}: appeared while it was being written; left as it is") from exc
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY:
            raise
        raise UserError(f"{final}: appeared while it was being written; left as it is") from exc


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- durable appends -------------------------------------------------------------------------


def append_durably(path: Path, data: bytes) -> None:
    """Append ``data`` (whole newline-terminated lines) to ``path`` with one write, then fsync.

    A torn last line (no final newline, left by a kill) is cut off first. A short write (a full
    disk) is cut off again and raised as ENOSPC, so committed lines stay exactly as they were.
    A symlink at ``path`` is refused; an OSError names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        _repair_torn_tail(fd)
        written = os.write(fd, data)
        if written != len(data):  # a regular file only writes short when the disk is full
            _repair_torn_tail(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        os.fsync(fd)
    except OSError as exc:
        raise named_os_error(exc, path) from None
    finally:
        os.close(fd)


def _repair_torn_tail(fd: int) -> None:
    """Truncate the file back to its last newline (drops an uncommitted, torn line)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    if os.pread(fd, 1, size - 1) == b"\n":
        return
    # Scan backwards in blocks for the last newline; lines are small, so this is one read.
    pos = size
    block = 4096
    while pos > 0:
        start = max(0, pos - block)
        chunk = os.pread(fd, pos - start, start)
        idx = chunk.rfind(b"\n")
        if idx >= 0:
            os.ftruncate(fd, start + idx + 1)
            return
        pos = start
    os.ftruncate(fd, 0)
