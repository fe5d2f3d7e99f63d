"""Put a sweep folder into the history store: its runs, its environment, its definition.

A **series** is one configuration on one class of machine: the run's configuration columns
(:data:`harness.store.CONFIG_COLUMNS`, which include the GPU count and the node count) less
the planted causes (``fault``, ``fault_ms``: a known slowdown switched on is an event in the
series' history, not another series), plus the machine class from env.json (GPU model names
and count). The host name, the software versions and the commit are *not* part of it: their
changes are what the history exists to find (:mod:`harness.history.changes` names them).

Reading goes through the results contract's one home -- :func:`harness.store.read_ledger`
(validated rows; the latest row per run_id), :mod:`distrinews.layout` (file names),
:mod:`harness.analysis` (config defaults, curve columns); the env.json fields checked here are
the ones :func:`harness.envinfo.collect` writes (a test holds the two lists together).
Everything is read and checked before anything is written, so a bad folder changes nothing in
the store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from distrinews import layout
from distrinews.errors import UserError
from harness import analysis, store
from harness.history import schema

#: Configuration columns that do not split a series: planted causes are events in its history.
SERIES_FREE = ("fault", "fault_ms")
#: The series' configuration columns (the ledger's, less SERIES_FREE).
SERIES_CONFIG = tuple(c for c in store.CONFIG_COLUMNS if c not in SERIES_FREE)
#: env.json fields and the JSON types a store accepts for them (others are kept as they are).
ENV_TYPES: dict[str, tuple[type, ...]] = {
    "hostname": (str,),
    "platform": (str,),
    "python": (str,),
    "torch": (str,),
    "cuda": (str,),
    "nccl": (str,),
    "transformers": (str,),
    "nvidia_ml_py": (str,),
    "driver": (str,),
    "cuda_device_count": (int,),
    "gpus": (list,),
    "gpu_names": (list,),
    "gpu_count": (int,),
    "topology": (str,),
    "cpu_count": (int,),
    "git_sha": (str,),
    "git_dirty": (bool,),
    "fingerprint": (str,),
    "machine": (dict,),
    "load_avg_start": (list,),
    "load_avg_end": (list,),
}


@dataclass(frozen=True, kw_only=True)
class SeriesKey:
    """What a series is: the configuration and the machine class, and their digest."""

    key: str
    config: dict[str, Any]
    machine: dict[str, Any]
    label: str
    world_size: int | None


@dataclass(frozen=True, kw_only=True)
class SweepBatch:
    """One sweep folder, read and checked, ready to be stored."""

    uid: str
    name: str
    folder: str
    env: dict[str, Any]
    definition: dict[str, Any]
    started_at: str
    finished_at: str
    series: dict[str, SeriesKey]
    runs: list[dict[str, Any]]
    """Values for ``history_runs`` (with ``series_key`` instead of ``series_id``)."""


@dataclass(frozen=True, kw_only=True)
class IngestResult:
    """What one ingest did."""

    folder: Path
    sweep: str
    added: int
    """Runs new to the store."""
    known: int
    """Runs it already held (a re-ingest adds nothing)."""
    new_sweep: bool


# -- reading ---------------------------------------------------------------------------------


def sweep_folders(paths: Iterable[Path]) -> list[Path]:
    """Every sweep folder named by ``paths`` (a sweep folder, or a results root holding some)."""
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir() and not store.ledger_path(path).is_file():
            if not (path / layout.SWEEP_JSON).is_file():
                found = store.sweep_dirs(path)  # a results root; UserError when it holds none
                out += found
                continue
            raise UserError(
                f"{path}: a sweep with no {layout.LEDGER_NAME} yet (no finished run); nothing to "
                "ingest"
            )
        if not path.is_dir():
            raise UserError(f"{path}: no such sweep folder")
        out.append(path)
    return out


def read_sweep(folder: Path) -> SweepBatch:
    """Read and check one sweep folder (UserError naming the file and field when it is bad)."""
    folder = Path(folder)
    rows = store.read_ledger(folder)  # validated rows, UserError naming a corrupt line
    if not rows:
        raise UserError(f"{store.ledger_path(folder)}: no committed rows; nothing to ingest")
    env = _read_env(folder)
    definition = _read_definition(folder)
    first = json.dumps(rows[0], sort_keys=True, separators=(",", ":"))
    uid = hashlib.sha256(
        (first + "\n" + json.dumps(env, sort_keys=True, separators=(",", ":"))).encode()
    ).hexdigest()[:32]
    latest = list(store.latest_by_run_id(rows).values())
    machine = machine_class(env)
    efficiency = run_efficiency(latest)
    series: dict[str, SeriesKey] = {}
    values: list[dict[str, Any]] = []
    times: list[str] = []
    keys: dict[tuple[Any, ...], SeriesKey] = {}  # repeats share their configuration's series
    for i, row in enumerate(latest):
        where = f"{store.ledger_path(folder)}: run {row['run_id']}"
        started = _utc(row.get("started_at"), where=f"{where}: field started_at")
        finished = _utc(row.get("finished_at") or row.get("started_at"), where=where)
        times += [started, finished]
        config = tuple(row.get(c) for c in SERIES_CONFIG)
        try:
            key = keys.get(config) or keys.setdefault(config, series_key(row, machine))
        except TypeError:  # an unhashable value (a list where a number belongs): no cache
            key = series_key(row, machine)
        series.setdefault(key.key, key)
        values.append(
            {
                "series_key": key.key,
                "run_id": row["run_id"],
                "started_at": started,
                "config_key": row.get("config_key"),
                "repeat": row.get("repeat"),
                "status": row["status"],
                "samples_per_s": _finite(row.get("samples_per_s"))
                if row["status"] == "ok"
                else None,
                "efficiency": efficiency[i],
                "row": row,
            }
        )
    name = next((r["sweep"] for r in latest if isinstance(r.get("sweep"), str)), folder.name)
    return SweepBatch(
        uid=uid,
        name=name,
        folder=str(folder.resolve()),
        env=env,
        definition=definition,
        started_at=min(times),
        finished_at=max(times),
        series=series,
        runs=values,
    )


def _read_env(folder: Path) -> dict[str, Any]:
    path = folder / layout.ENV_JSON
    env = store.read_json(path)
    if env is None:
        what = "is not a JSON object" if path.exists() else "is missing"
        raise UserError(f"{path}: {what}; the history needs the environment the sweep ran in")
    for name, types in ENV_TYPES.items():
        value = env.get(name)
        if value is not None and (
            not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        ):
            allowed = " or ".join(t.__name__ for t in types)
            raise UserError(f"{path}: field {name} = {_short(value)}: expected {allowed} or null")
    names = env.get("gpu_names") or []
    if not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: field gpu_names = {_short(names)}: expected a list of names")
    if isinstance(env.get("gpu_count"), int) and not 0 <= env["gpu_count"] <= 1_000_000:
        raise UserError(f"{path}: field gpu_count = {env['gpu_count']}: expected 0..1000000")
    return env


def _read_definition(folder: Path) -> dict[str, Any]:
    """The sweep file as expanded (sweep.json's ``spec``), less what each run row carries;
    {} when the folder has no sweep.json or it holds no spec."""
    path = folder / layout.SWEEP_JSON
    if not path.exists():
        return {}
    data = store.read_json(path)
    if data is None:
        raise UserError(f"{path}: is not a JSON object; the sweep's definition is unreadable")
    spec = data.get("spec", {})
    if not isinstance(spec, dict):
        raise UserError(f"{path}: field spec = {_short(spec)}: expected an object")
    return {k: v for k, v in spec.items() if k not in ("run", "axes")}


def _utc(value: Any, *, where: str) -> str:
    """An ISO-8601 time as UTC ``YYYY-MM-DDTHH:MM:SS+00:00`` (so times sort as text)."""
    if not isinstance(value, str):
        raise UserError(f"{where} = {_short(value)}: expected an ISO-8601 time")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{where} = {_short(value)}: expected an ISO-8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if not 1970 <= when.year <= 9999:
        raise UserError(f"{where} = {_short(value)}: expected a year in 1970..9999")
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- series ----------------------------------------------------------------------------------


def machine_class(env: dict[str, Any]) -> dict[str, Any]:
    """The class of machine a sweep ran on: GPU models and count (never the host name)."""
    names = sorted({str(n) for n in env.get("gpu_names") or []})
    count = env.get("gpu_count")
    return {"gpu_names": names, "gpu_count": int(count) if isinstance(count, int) else 0}


def series_key(row: dict[str, Any], machine: dict[str, Any]) -> SeriesKey:
    """The series a ledger row belongs to (see the module docstring)."""
    config: dict[str, Any] = {}
    for col in SERIES_CONFIG:
        value = row.get(col, analysis.CONFIG_DEFAULTS.get(col))
        if col in analysis.ID_OMIT_DEFAULTS and analysis.plain_value(value) == analysis.plain_value(
            analysis.CONFIG_DEFAULTS[col]
        ):
            continue  # a column added later keeps old series' keys while it holds its default
        config[col] = analysis.plain_value(value)
    body = json.dumps({"config": config, "machine": machine}, sort_keys=True)
    world = config.get("world_size")
    return SeriesKey(
        key=hashlib.sha256(body.encode()).hexdigest()[:16],
        config=config,
        machine=machine,
        label=series_label(config, machine),
        world_size=int(world) if isinstance(world, (int, float)) else None,
    )


def series_label(config: dict[str, Any], machine: dict[str, Any]) -> str:
    """``N=2 (1x2) tiny fp32 b8 fixed on cpu``: what a chart title calls a series."""
    c = config
    where = (
        f"{machine['gpu_count']}x {'/'.join(machine['gpu_names'])}"
        if machine.get("gpu_names")
        else str(c.get("device", "cpu"))
    )
    parts = [
        f"N={c.get('world_size')} ({c.get('nodes')}x{c.get('nproc_per_node')})",
        str(c.get("model")),
        str(c.get("precision")),
        f"b{c.get('per_device_batch')}"
        + (f"x{c['grad_accum']}" if c.get("grad_accum", 1) != 1 else ""),
        str(c.get("seq_policy")),
    ]
    if c.get("compile"):
        parts.append("compile")
    if c.get("nccl_env"):
        parts.append(str(c["nccl_env"]))
    return " ".join(parts) + f" on {where}"


def run_efficiency(rows: Sequence[dict[str, Any]]) -> list[float | None]:
    """Each ok run's scaling efficiency against its curve's smallest GPU count in the same sweep:
    X·N0 / (N·median X(N0)) (harness.analysis' definition, one run at a time); None where the
    curve has no ok run at N0 or the run failed."""
    if not rows:
        return []
    frame = analysis.frame_from_rows(rows)
    out: list[float | None] = [None] * len(frame)
    x = frame[analysis.THROUGHPUT].to_numpy(float)
    n = frame["world_size"].to_numpy(float)
    ok = (frame["status"] == "ok").to_numpy() & np.isfinite(x) & (x > 0) & np.isfinite(n)
    for mode in ("weak", "strong"):
        in_mode = (frame["scaling_mode"] == mode).to_numpy()
        if not in_mode.any():
            continue
        keys = analysis.row_keys(frame, analysis.curve_columns(mode)).to_numpy()
        for curve in np.unique(keys[in_mode]):
            members = np.flatnonzero(in_mode & (keys == curve))
            good = members[ok[members]]
            if good.size == 0:
                continue
            n0 = n[good].min()
            base = float(np.median(x[good][n[good] == n0]))
            for i in good:
                out[i] = float(x[i] * n0 / (n[i] * base))
    return out


# -- writing ---------------------------------------------------------------------------------


def write_batch(st: schema.Store, batch: SweepBatch, *, folder: Path) -> IngestResult:
    """Insert a read sweep in one transaction (ON CONFLICT DO NOTHING on every unique key)."""
    insert = _insert_for(st)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with st.write() as conn:
        new_sweep = conn.execute(
            insert(schema.sweeps)
            .values(
                uid=batch.uid,
                name=batch.name,
                folder=batch.folder,
                git_sha=batch.env.get("git_sha"),
                git_dirty=batch.env.get("git_dirty"),
                hostname=batch.env.get("hostname"),
                started_at=batch.started_at,
                finished_at=batch.finished_at,
                env=batch.env,
                definition=batch.definition,
                ingested_at=now,
            )
            .on_conflict_do_nothing(index_elements=["uid"])
            .returning(schema.sweeps.c.id)
        ).scalar_one_or_none()
        sweep_id = conn.execute(
            sa.select(schema.sweeps.c.id).where(schema.sweeps.c.uid == batch.uid)
        ).scalar_one()
        if new_sweep is None:  # known folder (resumed since?): keep its time span current
            conn.execute(
                sa.update(schema.sweeps)
                .where(schema.sweeps.c.id == sweep_id)
                .where(schema.sweeps.c.finished_at < batch.finished_at)
                .values(finished_at=batch.finished_at)
            )
        conn.execute(
            insert(schema.series).on_conflict_do_nothing(index_elements=["key"]),
            [
                {
                    "key": s.key,
                    "label": s.label,
                    "world_size": s.world_size,
                    "config": s.config,
                    "machine": s.machine,
                }
                for s in batch.series.values()
            ],
        )
        ids = dict(
            conn.execute(
                sa.select(schema.series.c.key, schema.series.c.id).where(
                    schema.series.c.key.in_(list(batch.series))
                )
            ).all()
        )
        added = 0
        for chunk in _chunks(batch.runs, 2000):
            rows = [
                {
                    **{k: v for k, v in r.items() if k != "series_key"},
                    "sweep_id": sweep_id,
                    "series_id": ids[r["series_key"]],
                }
                for r in chunk
            ]
            result = conn.execute(
                insert(schema.runs)
                .on_conflict_do_nothing(index_elements=["sweep_id", "run_id", "started_at"])
                .returning(schema.runs.c.id),
                rows,
            )
            added += len(result.all())
    return IngestResult(
        folder=Path(folder),
        sweep=batch.name,
        added=added,
        known=len(batch.runs) - added,
        new_sweep=new_sweep is not None,
    )


def _insert_for(st: schema.Store) -> Any:
    if st.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
