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

from pathlib import Path
from typing import Any

from distrinews.errors import UserError
from distrinews.layout import SERVING_LEDGER
from harness import store

SERVING_SCHEMA_VERSION = 1

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
    """Append one row to ``results_dir/serving.jsonl`` durably (the ledger's append-only rules)."""
    missing = [key for key in SERVING_KEYS if key not in row]
    if missing:
        raise ValueError(f"serving row lacks {missing}")
    if row["kind"] != "serving":
        raise ValueError(f"serving row kind must be 'serving', got {row['kind']!r}")
    store.append_jsonl(serving_path(results_dir), row)


def read_serving_rows(results_dir: Path) -> list[dict[str, Any]]:
    """Committed rows of ``results_dir/serving.jsonl`` in append order ([] when absent).

    An unterminated last line is a write cut short and is ignored; any other bad line is
    corruption and raises :class:`UserError` naming the file and line.
    """
    return store.read_jsonl(serving_path(results_dir), validate=validate_serving_row)


#: Serving row fields that hold counts (integers) and measurements (numbers); null allowed.
_INT_KEYS = ("concurrency", "texts_per_request", "requests", "errors")
_NUMBER_KEYS = (
    "batch_window_s",
    "duration_s",
    "requests_per_s",
    "texts_per_s",
    "latency_s_p50",
    "latency_s_p95",
    "latency_s_p99",
    "latency_s_mean",
)


def validate_serving_row(row: dict[str, Any], *, where: str) -> None:
    """UserError naming the field when a row is not a serving row or holds a wrong type."""
    if row.get("kind") != "serving":
        raise UserError(f"{where}: field kind = {row.get('kind')!r}: not a serving row")
    for key in _INT_KEYS:
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UserError(f"{where}: field {key} = {str(value)[:40]!r}: expected an integer")
    for key in _NUMBER_KEYS:
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise UserError(f"{where}: field {key} = {str(value)[:40]!r}: expected a number")
    for key in ("started_at", "checkpoint", "device", "url"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise UserError(f"{where}: field {key} = {str(row[key])[:40]!r}: expected text")
