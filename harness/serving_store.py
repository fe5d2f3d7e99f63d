"""results/<name>/serving.jsonl: the append-only ledger of inference-service benchmarks.

One row per concurrency level of one ``bench-serve`` run (all keys flat, null when unknown,
never text in a number field)::

    schema_version     int, 1
    kind               "serving"
    started_at         ISO-8601 UTC start of the bench-serve run (shared by its levels: it
                       groups the rows of one run)
    checkpoint         the checkpoint the server reported on /readyz
    device             the server's device ("cpu", "cuda", ...)
    batch_window_s     float, the server's micro-batching window (0.0: off; null if unknown)
    url                the server's base URL
    concurrency        int, requests in flight at once
    texts_per_request  int, texts in each POST /predict
    requests           int, requests completed (ok + errors)
    errors             int, requests that failed (non-200 or transport error)
    duration_s         float, wall time of the level (first send to last answer)
    requests_per_s     float, successful requests per second
    texts_per_s        float, requests_per_s * texts_per_request
    latency_s_p50, latency_s_p95, latency_s_p99, latency_s_mean
                       float | null, end-to-end latency of successful requests (null if none)

Same durability rules as the sweep ledger (harness.store): each row is one ``write`` of
``json + "\\n"`` then fsync; a torn last line from a kill is ignored on read and cut off by the
next append. Kept apart from ``ledger.jsonl`` because its rows describe a different thing
(a server under load, not a training point) and carry no ``run_id``/``status``.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any

from distrinews.errors import UserError

SERVING_SCHEMA_VERSION = 1
SERVING_LEDGER = "serving.jsonl"

#: Keys every serving row carries, in display order.
SERVING_KEYS = (
    "schema_version",
    "kind",
    "started_at",
    "checkpoint",
    "device",
    "batch_window_s",
    "url",
    "concurrency",
    "texts_per_request",
    "requests",
    "errors",
    "duration_s",
    "requests_per_s",
    "texts_per_s",
    "latency_s_p50",
    "latency_s_p95",
    "latency_s_p99",
    "latency_s_mean",
)


def serving_path(results_dir: Path) -> Path:
    return Path(results_dir) / SERVING_LEDGER


def append_serving_row(results_dir: Path, row: dict[str, Any]) -> None:
    """Append one row to ``results_dir/serving.jsonl`` durably (one write, then fsync)."""
    missing = [key for key in SERVING_KEYS if key not in row]
    if missing:
        raise ValueError(f"serving row lacks {missing}")
    if row["kind"] != "serving":
        raise ValueError(f"serving row kind must be 'serving', got {row['kind']!r}")
    for key, value in row.items():
        if isinstance(value, (dict, list, tuple)):
            raise ValueError(f"serving rows are flat; {key!r} holds a {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"serving value {key!r} = {value} is not finite; store null instead")
    data = (json.dumps(row, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    path = serving_path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        _cut_torn_tail(fd)
        if os.write(fd, data) != len(data):  # a regular file only writes short when full
            raise OSError(errno.ENOSPC, f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_serving_rows(results_dir: Path) -> list[dict[str, Any]]:
    """Committed rows of ``results_dir/serving.jsonl`` in append order ([] when absent).

    An unterminated last line is a write cut short and is ignored; any other bad line is
    corruption and raises :class:`UserError` naming the file and line.
    """
    path = serving_path(results_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    rows = []
    for lineno, line in enumerate(raw.split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(
                f"{path}: line {lineno} is not valid JSON; the file is corrupt"
            ) from None
        if not isinstance(row, dict) or row.get("kind") != "serving":
            raise UserError(f"{path}: line {lineno} is not a serving row")
        rows.append(row)
    return rows


def _cut_torn_tail(fd: int) -> None:
    """Truncate back to the last newline, dropping a row a kill left half-written."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    pos = size
    while pos > 0:
        start = max(0, pos - 4096)
        idx = os.pread(fd, pos - start, start).rfind(b"\n")
        if idx >= 0:
            os.ftruncate(fd, start + idx + 1)
            return
        pos = start
    os.ftruncate(fd, 0)
