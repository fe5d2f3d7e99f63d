"""File modes: what the umask says a new file or folder gets, for files made by mkstemp/mkdtemp.

``open()`` and ``mkdir()`` create files 0666 and folders 0777 minus the umask (usually 0022:
-rw-r--r--, drwxr-xr-x), so teammates on a shared cluster can read results. ``tempfile.mkstemp``
and ``mkdtemp`` ignore that and create 0600 / 0700 on purpose (a temp file is private until it is
renamed). Everything written atomically here -- a temp file, fsync, rename -- calls
:func:`ordinary_mode` on the temp path before the rename, so the result looks like any other
file the user makes.
"""

from __future__ import annotations

import os
from pathlib import Path


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
