"""The worker's progress lines: stderr, prefixed, flushed at once.

torchrun interleaves every rank's output (and tees it into the launcher log); the
``[distrinews]`` prefix tells the workload's own lines apart from library noise, and the flush
keeps them when a rank is killed a moment later.
"""

from __future__ import annotations

import sys


def log(msg: str) -> None:
    print(f"[distrinews] {msg}", file=sys.stderr, flush=True)
