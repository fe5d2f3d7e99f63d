"""results/<sweep>/: the per-point folders and the append-only ledger (see notes/contracts.md).

A sweep folder looks like::

    results/<sweep>/
      ledger.jsonl        one JSON object per line, one line per finished point (append-only)
      env.json            the environment the sweep ran in (harness.envinfo), with a fingerprint
      sweep.json          the expanded sweep as written at start
      .lock               held (fcntl.flock) by the one sweep writing here
      points/<run_id>/    run.json, record.json, error.json, status.json, telemetry.jsonl, logs/,
                          attempts/<n>/ (earlier attempts of the point, kept as they were)

(the names are constants of :mod:`distrinews.layout`, their one home).

The ledger is the source of truth. A line is *committed* once it ends with a newline: each row
is written with one ``write`` of ``json + "\\n"`` and fsynced, so a kill can at worst leave an
unterminated last line, which readers ignore and the next append cuts off. A point's folder
without a ledger row is an unfinished point: resume runs it again from scratch.

Rows are never edited. Re-running a point (``--retry-failed``) appends a new row; readers take
the **latest row per run_id** (:func:`latest_by_run_id`), which is how a retry supersedes a
failure without rewriting history.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from distrinews import files
from distrinews.errors import UserError
from distrinews.files import append_durably, open_nofollow, refuse_symlink
from distrinews.layout import ATTEMPTS_DIR, LEDGER_NAME, LOCK_NAME, POINTS_DIR
from distrinews.metrics import LEDGER_METRIC_KEYS, rank_spread
from distrinews.runspec import RunSpec
from distrinews.safeio import decimal, loads_strict

from . import outputs
from .outputs import OutputKind

LEDGER_SCHEMA_VERSION = 1

#: Every status a ledger row can carry; all but "ok" have a reason.
STATUSES = ("ok", "oom", "timeout", "nccl_error", "crashed", "invalid", "skipped")
#: Statuses that mean the point ran and failed (re-run only with --retry-failed).
FAILED_STATUSES = ("oom", "timeout", "nccl_error", "crashed", "invalid")


# -- atomic files ----------------------------------------------------------------------------

# The one implementation lives in distrinews.files; the harness's writers reach it through
# these names (store.atomic_write_text, store.atomic_write_json).
atomic_write_text = files.atomic_write_text
atomic_write_json = files.atomic_write_json


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file is missing or not a whole object.

    Strict (:func:`distrinews.safeio.loads_strict`): NaN, Infinity, integers beyond int64 and
    lone surrogates make the file unreadable (None), like a torn file.
    """
    try:
        data = loads_strict(Path(path).read_bytes(), where=str(path))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, UserError):
        return None
    return data if isinstance(data, dict) else None


# -- the ledger ------------------------------------------------------------------------------


def ledger_path(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / LEDGER_NAME


def point_dir(sweep_dir: Path, run_id: str) -> Path:
    return Path(sweep_dir) / POINTS_DIR / run_id


def fresh_point_dir(sweep_dir: Path, run_id: str) -> Path:
    """``points/<run_id>/`` ready for a new attempt; returns it.

    Whatever an earlier attempt left there (no row: interrupted; a failed row: being retried)
    is moved to ``attempts/<n>/`` -- never deleted, it is the evidence of that failure -- so no
    stale record.json or error.json can be mistaken for the new attempt's. A symlink where the
    points folder, the point folder or its attempts folder belongs is refused: it would
    redirect the point's files outside the sweep.
    """
    points = Path(sweep_dir) / POINTS_DIR
    pdir = points / run_id
    for path in (points, pdir, pdir / ATTEMPTS_DIR):
        refuse_symlink(path, what="point's files")
    if pdir.exists():
        leftovers = sorted(p for p in pdir.iterdir() if p.name != ATTEMPTS_DIR)
        if leftovers:
            attempts = pdir / ATTEMPTS_DIR
            attempts.mkdir(exist_ok=True)
            # Numbered by this function in ASCII; any other name (a user's, '²') is left alone.
            taken = {n for p in attempts.iterdir() if (n := decimal(p.name)) is not None}
            dest = attempts / str(max(taken, default=0) + 1)
            dest.mkdir()
            for path in leftovers:
                os.rename(path, dest / path.name)
    pdir.mkdir(parents=True, exist_ok=True)
    return pdir


def read_ledger(sweep_dir: Path) -> list[dict[str, Any]]:
    """All committed rows of ``sweep_dir/ledger.jsonl`` in append order (raw dicts).

    A missing ledger is an empty one; see :func:`read_jsonl` for torn and corrupt lines.
    """
    return read_jsonl(ledger_path(sweep_dir), validate=validate_row)


def read_jsonl(path: Path, *, validate: Callable[..., Any] | None = None) -> list[dict[str, Any]]:
    """All committed rows of an append-only JSONL file, in append order ([] when missing).

    An unterminated last line (a write cut short by a kill) is ignored. Any other line that is
    not a JSON object raises :class:`UserError` naming the file and the line: that is
    corruption, and guessing past it could silently drop results. Lines are parsed strictly
    (:func:`distrinews.safeio.loads_strict`), and ``validate(row, where=...)``, when given,
    checks each row's fields (it raises UserError naming the field).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = raw.split(b"\n")
    # split() leaves the text after the last newline as the final element: b"" when the file
    # ends cleanly, else a torn row that was never committed.
    body = lines[:-1]
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(body, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        try:
            row = loads_strict(line, where=where)
        except UserError as exc:
            detail = str(exc).removeprefix(f"{where}: ")
            raise UserError(
                f"{where} is not valid JSON ({detail}); the file is corrupt -- fix or remove "
                "that line"
            ) from None
        if not isinstance(row, dict):
            raise UserError(f"{where} is not a JSON object; the file is corrupt")
        if validate is not None:
            validate(row, where=where)
        rows.append(row)
    return rows


def validate_row(row: dict[str, Any], *, where: str) -> dict[str, Any]:
    """Check the fields every reader of a ledger row relies on; UserError naming the field.

    ``run_id`` a non-empty string, ``status`` one of STATUSES, ``point_dir`` null or a path
    inside the sweep folder (see :func:`resolve_point_dir`), ``reason``/``config_key`` text or
    null, ``repeat`` an integer or null. (Text in a metric column is not refused: the analysis
    shows it blank with a note, see ``harness.analysis.normalize_frame``.)
    """
    run_id = row.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise UserError(f"{where}: field run_id = {_short(run_id)}: expected a non-empty string")
    if row.get("status") not in STATUSES:
        raise UserError(
            f"{where}: field status = {_short(row.get('status'))}: expected one of "
            f"{', '.join(STATUSES)}"
        )
    for key in ("reason", "config_key", "point_dir", "sweep"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise UserError(f"{where}: field {key} = {_short(row[key])}: expected text or null")
    repeat = row.get("repeat")
    if repeat is not None and (not isinstance(repeat, int) or isinstance(repeat, bool)):
        raise UserError(f"{where}: field repeat = {_short(repeat)}: expected an integer or null")
    if isinstance(row.get("point_dir"), str) and not _inside(row["point_dir"]):
        raise UserError(
            f"{where}: field point_dir = {_short(row['point_dir'])}: must be a path inside "
            "the sweep folder (points/<run_id>)"
        )
    return row


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _inside(rel: str) -> bool:
    """A relative path with no '..' and no leading '/': it cannot name a place outside."""
    # Plain string checks: this runs for every ledger row read, and pathlib is slow.
    return bool(rel) and not rel.startswith("/") and "\0" not in rel and ".." not in rel.split("/")


def resolve_point_dir(sweep_dir: Path, rel: str) -> Path | None:
    """``sweep_dir/rel`` when it stays inside ``sweep_dir`` after resolving symlinks, else None.

    A ledger row names its point folder; a hostile row (``../../x``) or a planted symlink
    (``points/abc -> /elsewhere``) must not make a reader open files outside the sweep.
    """
    if not isinstance(rel, str) or not _inside(rel):
        return None
    base = Path(sweep_dir).resolve()
    target = (base / rel).resolve()
    return target if target.is_relative_to(base) else None


def append_row(sweep_dir: Path, row: dict[str, Any]) -> None:
    """Append one row to the ledger durably (see :func:`append_jsonl`).

    Rows must be flat JSON objects with a ``run_id`` and a known ``status``.
    """
    if not isinstance(row, dict):
        raise TypeError(f"a ledger row must be a dict, got {type(row).__name__}")
    if not isinstance(row.get("run_id"), str) or not row["run_id"]:
        raise ValueError("a ledger row needs a non-empty string run_id")
    if row.get("status") not in STATUSES:
        raise ValueError(f"ledger status {row.get('status')!r} is not one of {STATUSES}")
    append_jsonl(ledger_path(sweep_dir), row)


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one flat row to an append-only JSONL file durably: one write, then fsync.

    A torn last line left by an earlier kill is cut off first, so the new row starts on a line
    of its own. NaN and infinity are refused (they are not JSON, and a reader would choke on
    them), and so are nested values (rows stay flat, one column per key).
    """
    for key, value in row.items():
        if isinstance(value, (dict, list, tuple)):
            raise ValueError(f"rows are flat; {key!r} holds a {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"value {key!r} = {value} is not finite; store null instead")
    data = json.dumps(row, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n"
    append_durably(path, data.encode("utf-8"))


def latest_by_run_id(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last row per run_id (later rows supersede earlier ones: a retry replaces a failure)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest[row["run_id"]] = row
    return latest


# -- one writer per sweep folder -------------------------------------------------------------


@contextlib.contextmanager
def sweep_lock(sweep_dir: Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``sweep_dir`` for the life of a sweep.

    ``fcntl.flock`` on ``.lock``: the kernel drops it when the process dies, even by SIGKILL, so
    a killed sweep's leftover file locks nothing. A second sweep into the same folder gets a
    UserError. A clean end removes the file while still holding the lock; a sweep that opened
    the old file in that instant finds, once it holds the lock, that the path no longer names
    the file it locked, and starts over on a fresh one -- so two sweeps never both hold it.
    """
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / LOCK_NAME
    while True:
        # O_NOFOLLOW: a .lock symlink planted by someone else must not make us truncate its
        # target.
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{sweep_dir} is in use by another sweep (pid {holder}); wait for it or use "
                "another --name/--results"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # we locked a file the last holder had already removed: try again
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # still locked here: nobody can take the file we remove
        os.close(fd)  # closing the descriptor releases the flock


# -- export ----------------------------------------------------------------------------------


def sweep_dirs(results: Path) -> list[Path]:
    """``results`` itself if it is a sweep folder, else its sweep subfolders (sorted)."""
    results = Path(results)
    if not results.is_dir():
        raise UserError(f"{results}: no such results folder")
    if ledger_path(results).is_file():
        return [results]
    found = sorted(p for p in results.iterdir() if ledger_path(p).is_file())
    if not found:
        raise UserError(f"{results}: no {LEDGER_NAME} here or in its subfolders; run a sweep first")
    return found


def export_ledger(results: Path, out: Path) -> int:
    """Write the latest row per point of every sweep under ``results`` to .parquet or .csv.

    Rows of different schema versions mix: the columns are the union, a key a row lacks is
    null. Returns the number of rows written.
    """
    import pandas as pd

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise UserError(f"{out}: export writes .parquet or .csv, not {out.suffix or 'no suffix'!r}")
    kind = dataclasses.replace(EXPORT_KIND, name=f"{suffix[1:]} export")
    outputs.check_output(out, kind)  # before the rows are read: a bad -o costs nothing
    rows: list[dict[str, Any]] = []
    for sweep in sweep_dirs(results):
        for row in latest_by_run_id(read_ledger(sweep)).values():
            rows.append({"sweep": sweep.name, **row} if "sweep" not in row else row)
    frame = pd.DataFrame.from_records(rows)
    # Columns first seen in later rows are appended by pandas in order of appearance; sort the
    # tail so two exports of the same data are byte-identical.
    frame = frame.reindex(columns=sorted(frame.columns, key=_column_order))
    frame = _one_type_per_column(frame)
    if suffix == ".parquet":
        outputs.write_output(out, lambda fh: frame.to_parquet(fh, index=False), kind)
    else:
        outputs.write_output(out, frame.to_csv(index=False), kind)
    return len(frame)


def is_export(out: Path, head: bytes) -> bool:
    """Whether an existing file at ``out`` is an earlier export (which may be replaced)."""
    if out.suffix.lower() == ".csv":
        return head.startswith(b"sweep,run_id,")
    if not head.startswith(b"PAR1"):
        return False
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(out).names
    except Exception:
        return False
    return names[:2] == ["sweep", "run_id"]


#: What ``export -o`` writes: a table an earlier export wrote may be replaced, nothing else.
EXPORT_KIND = OutputKind(name="csv or parquet export", recognizes=is_export)


def _one_type_per_column(frame: Any) -> Any:
    """Columns holding values of mixed kinds (a number in one row, text in another) as text.

    Parquet stores one type per column; rows of different schema versions or a hand-edited
    ledger can disagree. Text keeps every value readable instead of failing the export.
    """
    for col in frame.columns:
        values = frame[col]
        if values.dtype != object:
            continue
        kinds = {type(v) for v in values if v is not None and v == v}
        if len(kinds) > 1 and not kinds <= {int, float}:
            frame[col] = values.map(lambda v: None if v is None or v != v else str(v))
    return frame


_LEAD_COLUMNS = ("sweep", "run_id", "config_key", "repeat", "status", "reason")


def _column_order(name: str) -> tuple[int, str]:
    if name in _LEAD_COLUMNS:
        return (_LEAD_COLUMNS.index(name), "")
    return (len(_LEAD_COLUMNS), name)


# -- building a row --------------------------------------------------------------------------

#: record.json "metrics" keys the ledger carries as columns: derived from the one list,
#: distrinews.metrics.RunMetrics (notes/contracts.md §1, §3). Null unless status is ok.
METRIC_KEYS: tuple[str, ...] = LEDGER_METRIC_KEYS

#: Ledger columns computed from the spec, and the RunSpec field each follows (placed after it).
_DERIVED_COLUMNS = {
    "nproc_per_node": ("world_size", lambda spec: spec.world_size),
    "grad_accum": ("global_batch", lambda spec: spec.global_batch),
}


def config_columns(spec: RunSpec) -> dict[str, Any]:
    """The flat configuration columns of a ledger row, from the point's RunSpec.

    Every field ``config_key`` hashes (all RunSpec fields but ``RunSpec.KEY_EXCLUDE``), in the
    RunSpec's order, flattened: the DDP knobs as ``ddp_<knob>``, ``nccl_env`` as
    ``NAME=value,...`` text ("" when unset), ``backend`` as the one the run uses (nccl or gloo,
    never auto), numbers that may be written as integers (bucket_cap_mb, lr) as floats. Plus
    the derived ``world_size`` and ``global_batch``. A field added to RunSpec becomes a column
    here by itself.
    """
    out: dict[str, Any] = {}
    for spec_field in dataclasses.fields(spec):
        name = spec_field.name
        if name in RunSpec.KEY_EXCLUDE:
            continue
        value = getattr(spec, name)
        if name == "ddp":
            for knob in dataclasses.fields(value):
                out[f"ddp_{knob.name}"] = getattr(value, knob.name)
            out["ddp_bucket_cap_mb"] = float(value.bucket_cap_mb)
        elif name == "nccl_env":
            out[name] = ",".join(f"{k}={v}" for k, v in sorted(value))
        elif name == "backend":
            out[name] = spec.resolved_backend
        elif name == "lr":
            out[name] = float(value)
        else:
            out[name] = value
        if name in _DERIVED_COLUMNS:
            column, derive = _DERIVED_COLUMNS[name]
            out[column] = derive(spec)
    return out


#: The configuration columns of every ledger row, in order (harness.analysis groups and
#: labels points by them).
CONFIG_COLUMNS: tuple[str, ...] = tuple(config_columns(RunSpec()))


def make_row(
    *,
    sweep: str,
    spec: RunSpec,
    status: str,
    reason: str | None,
    started_at: str,
    finished_at: str,
    duration_s: float,
    scaling_mode: str,
    point_dir: str,
    record: dict[str, Any] | None,
    telemetry: dict[str, Any],
    env_fingerprint: str | None,
) -> dict[str, Any]:
    """One ledger row (notes/contracts.md): identity, status, config, metrics, telemetry.

    Metrics are copied only for ok points and only when they are finite numbers: a failed
    point's row has nulls there, never text or NaN.
    """
    metrics = (record or {}).get("metrics") or {}
    ok = status == "ok"
    row: dict[str, Any] = {
        "schema_version": LEDGER_SCHEMA_VERSION,
        "sweep": sweep,
        "run_id": spec.run_id,
        "config_key": spec.config_key,
        "repeat": spec.repeat,
        "status": status,
        "reason": reason,
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_s": round(float(duration_s), 3),
        "scaling_mode": scaling_mode,
        "point_dir": point_dir,
        **config_columns(spec),
    }
    for key in METRIC_KEYS:
        row[key] = _number(metrics.get(key)) if ok else None
    if ok:  # metrics the worker added later (schema growth): kept, same rules
        for key, value in metrics.items():
            if key not in row and key != "measured_steps":
                row[key] = _number(value)
    row["step_time_s_rank_spread"] = rank_spread((record or {}).get("step_times_s")) if ok else None
    row.update(telemetry)
    row["env_fingerprint"] = env_fingerprint
    return row


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None
