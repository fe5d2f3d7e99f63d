"""The changes in every series of the store, their size, and what changed with them.

:func:`find_changes` reads one metric of every run (``history_runs``), groups each series' runs
into nights (one per sweep, in the order the sweeps started), finds the change points
(:func:`harness.history.detect.find_change_points`), sizes each one over the runs on its two
sides (Hodges-Lehmann, :func:`harness.history.detect.hodges_lehmann`) and lists
``what_changed``: every environment, sweep-definition or run field whose value differs between
the last run before the change and the first run after it (torch 2.13.0 -> 2.14.0, the commit,
the driver, the host, a planted fault switched on).

A change is a **regression** when the metric moved the wrong way: down for throughputs and
efficiencies (names ending ``_per_s``, ``_gbps``, ``per_kwh``, and mfu/hfu/efficiency/
overlap_share), up for everything else (times, memory, energy).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from distrinews.errors import UserError
from harness import analysis
from harness.history import detect, schema
from harness.history.ingest import SERIES_FREE

#: Metrics a history can follow: the ledger's numbers, plus each run's scaling efficiency.
METRICS = (
    *(c for c in analysis.NUMERIC_COLUMNS if c not in ("schema_version", "repeat")),
    "efficiency",
)
HIGHER_IS_BETTER_SUFFIXES = ("_per_s", "_per_s_per_device", "_gbps", "per_kwh")
HIGHER_IS_BETTER = ("mfu", "hfu", "efficiency", "overlap_share", "samples_per_s_per_device")
#: The newest nights of a series that the change search looks at (see series_changes).
MAX_NIGHTS = 1000
#: env.json fields left out of what_changed: derived from others (the fingerprint) or spelled
#: out below (each GPU's UUID instead of the list of GPU records).
_ENV_SKIP = ("fingerprint", "fingerprint_fields", "gpus")
#: env.json fields whose change is an upgrade of the software or hardware under a series: a
#: night where one of them changed is a candidate change point (detect.find_change_points).
#: Not the commit (every night has a new one), the host or the GPUs' serial numbers (a series
#: moves between nodes of its class), nor the fingerprint (derived).
STACK_FIELDS = (
    "platform", "python", "torch", "cuda", "nccl", "transformers", "nvidia_ml_py", "driver",
    "gpu_names", "gpu_count", "cuda_device_count", "topology", "cpu_count",
)  # fmt: skip


def stack_of(env: Any) -> str:
    """The stack signature of one sweep's env.json (a canonical JSON of STACK_FIELDS)."""
    if not isinstance(env, dict):
        return ""
    return json.dumps({k: env.get(k) for k in STACK_FIELDS}, sort_keys=True, default=str)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is the good direction."""
    return metric in HIGHER_IS_BETTER or metric.endswith(HIGHER_IS_BETTER_SUFFIXES)


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise UserError(
            f"--metric {metric!r}: not a metric of the ledger; allowed: samples_per_s, "
            "efficiency, step_time_s_p50, mfu, ... (any number column of notes/contracts.md §3)"
        )
    return metric


@dataclass(frozen=True, kw_only=True)
class Night:
    """One sweep's runs of one series."""

    sweep_id: int
    values: np.ndarray
    """The metric of each ok run, in run order."""
    median: float
    """The median of ``values`` (what a table shows; the detector uses the mean of the logs)."""
    stack: str = ""
    """The sweep's software and hardware (:data:`STACK_FIELDS` of its env.json): a night whose
    stack differs from the night before is an upgrade, a candidate for a change."""


@dataclass(frozen=True, kw_only=True)
class Series:
    """One series' nights, oldest first, and what identifies it."""

    id: int
    key: str
    label: str
    config: dict[str, Any]
    machine: dict[str, Any]
    nights: list[Night]


@dataclass(frozen=True, kw_only=True)
class Change:
    """A change point of one series (``--format json`` prints these fields)."""

    series_key: str
    series: str
    """The series' label."""
    config: dict[str, Any]
    """The series' configuration columns (world_size among them)."""
    machine: dict[str, Any]
    metric: str
    kind: str
    """regression or improvement."""
    git_sha: str | None
    """The commit of the first sweep after the change."""
    git_sha_before: str | None
    """The commit of the last sweep before it."""
    started_at: str
    """When the first sweep after the change started (UTC)."""
    sweep_dir: str
    """That sweep's folder, as it was ingested."""
    sweep: str
    change_pct: float
    """Hodges-Lehmann shift, after vs before, in percent."""
    change_pct_ci: tuple[float, float]
    pvalue: float
    nights_before: int
    nights_after: int
    what_changed: dict[str, list[Any]] = field(default_factory=dict)
    """{field: [before, after]} for every field that differs."""
    sweep_id: int = 0
    series_id: int = 0
    index: int = 0
    """Position of the first night after the change in the series."""

    def to_json(self) -> dict[str, Any]:
        return {
            **self.config,
            "series": self.series,
            "series_key": self.series_key,
            "machine": self.machine,
            "metric": self.metric,
            "kind": self.kind,
            "git_sha": self.git_sha,
            "git_sha_before": self.git_sha_before,
            "started_at": self.started_at,
            "sweep": self.sweep,
            "sweep_dir": self.sweep_dir,
            "change_pct": _round(self.change_pct),
            "change_pct_ci": [_round(v) for v in self.change_pct_ci],
            "pvalue": float(f"{self.pvalue:.3g}"),
            "nights_before": self.nights_before,
            "nights_after": self.nights_after,
            "what_changed": self.what_changed,
        }


def _round(v: float) -> float | None:
    return round(float(v), 2) if math.isfinite(v) else None


# -- reading the series ----------------------------------------------------------------------


def _value_column(metric: str) -> Any:
    if metric in ("samples_per_s", "efficiency"):
        return schema.runs.c[metric]
    return schema.runs.c.row[metric].as_float()


def load_series(
    st: schema.Store, metric: str, *, series_ids: Iterable[int] | None = None
) -> list[Series]:
    """Every series (or those named) with the ok runs' ``metric`` grouped into nights."""
    runs, sweeps, series = schema.runs, schema.sweeps, schema.series
    value = _value_column(metric)
    query = (
        sa.select(runs.c.series_id, runs.c.sweep_id, value)
        .join(sweeps, sweeps.c.id == runs.c.sweep_id)
        .where(runs.c.status == "ok", value.is_not(None))
        .order_by(runs.c.series_id, sweeps.c.started_at, sweeps.c.id, runs.c.started_at)
    )
    meta_query = sa.select(
        series.c.id, series.c.key, series.c.label, series.c.config, series.c.machine
    )
    wanted = None if series_ids is None else sorted(set(series_ids))
    if wanted is not None:
        query = query.where(runs.c.series_id.in_(wanted))
        meta_query = meta_query.where(series.c.id.in_(wanted))
    with st.read() as conn:
        rows = conn.execute(query).all()
        info = {r.id: r for r in conn.execute(meta_query)}
        # Each night's stack, read only for the sweeps these series have (history check asks
        # for one sweep's series; the store may hold years of sweeps).
        night_sweeps = sorted({r[1] for r in rows})
        env_query = sa.select(sweeps.c.id, sweeps.c.env).where(sweeps.c.id.in_(night_sweeps))
        stacks = {r.id: stack_of(r.env) for r in conn.execute(env_query)} if rows else {}
    if not rows:
        return []
    sids, wids, vals = zip(*rows, strict=True)  # columns, at C speed
    try:  # a text value (a hand-edited ledger) takes the slow path, as NaN
        val = np.array(vals, dtype=float)
    except (TypeError, ValueError):
        val = np.array([_number(v) for v in vals], dtype=float)
    keep = np.isfinite(val)
    sid, wid, val = np.array(sids)[keep], np.array(wids)[keep], val[keep]
    if not len(val):
        return []
    # One night per run of equal (series, sweep) in the sorted rows; its median at once for all.
    new_night = np.r_[True, (sid[1:] != sid[:-1]) | (wid[1:] != wid[:-1])]
    starts = np.flatnonzero(new_night)
    stops = np.r_[starts[1:], len(val)]
    medians = group_medians(val, np.cumsum(new_night) - 1, starts, stops - starts)
    out: list[Series] = []
    current: Series | None = None
    for i, (a, b) in enumerate(zip(starts, stops, strict=True)):
        s = int(sid[a])
        if current is None or current.id != s:
            meta = info[s]
            current = Series(
                id=s,
                key=meta.key,
                label=meta.label,
                config=dict(meta.config),
                machine=dict(meta.machine),
                nights=[],
            )
            out.append(current)
        w = int(wid[a])
        current.nights.append(
            Night(sweep_id=w, values=val[a:b], median=medians[i], stack=stacks.get(w, ""))
        )
    return out


def group_medians(
    values: np.ndarray, group: np.ndarray, starts: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """The median of each contiguous group of ``values`` (``group`` numbers them 0, 1, ...)."""
    order = np.lexsort((values, group))  # by group, then by value: each group sorted in place
    ordered = values[order]
    return (ordered[starts + (sizes - 1) // 2] + ordered[starts + sizes // 2]) / 2.0


def _number(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):  # text in a number column (a hand-edited ledger)
        return math.nan


# -- finding the changes ---------------------------------------------------------------------


def transform(series: Series) -> tuple[list[np.ndarray], np.ndarray, bool]:
    """Each night's runs and the nights' means in the space the detector works in: log when
    every value is positive (a step is a ratio), else the values themselves."""
    log = all(n.values.min() > 0 for n in series.nights)
    nights = [np.log(n.values) for n in series.nights] if log else [n.values for n in series.nights]
    return nights, np.array([n.mean() for n in nights]), log


def series_changes(
    series: Series, metric: str, *, max_pvalue: float = detect.MAX_PVALUE
) -> list[Change]:
    """The change points of one series, sized (no what_changed yet: :func:`describe` adds it).

    Only the newest :data:`MAX_NIGHTS` nights are searched (the detector's memory grows with
    the square of the nights: three years of nightly sweeps fit; a longer store is bounded).
    """
    if len(series.nights) < 2:
        return []
    skip = max(0, len(series.nights) - MAX_NIGHTS)
    if skip:
        series = dataclasses.replace(series, nights=series.nights[skip:])
    nights, y, log = transform(series)
    better_up = higher_is_better(metric)
    out = []
    floor = detect.run_floor(nights)
    # Upgrades: nights whose stack differs from the night before (both known).
    upgrades = [
        i
        for i in range(1, len(series.nights))
        if series.nights[i].stack and series.nights[i - 1].stack
        and series.nights[i].stack != series.nights[i - 1].stack
    ]  # fmt: skip
    found = detect.find_change_points(y, max_pvalue=max_pvalue, floor=floor, candidates=upgrades)
    for cp in found:
        w = detect.SIZE_WINDOW_NIGHTS
        before = nights[max(cp.before[0], cp.index - w) : cp.index]
        after = nights[cp.index : min(cp.after[1], cp.index + w)]
        shift, lo, hi = detect.hodges_lehmann(before, after, seed=cp.index)
        if log:
            pct, ci = 100.0 * math.expm1(shift), (100.0 * math.expm1(lo), 100.0 * math.expm1(hi))
        else:
            level = abs(float(np.median(np.concatenate(before))))
            scale = 100.0 / level if level > 0 else math.nan
            pct, ci = shift * scale, (lo * scale, hi * scale)
        worse = pct < 0 if better_up else pct > 0
        out.append(
            Change(
                series_key=series.key,
                series=series.label,
                config=series.config,
                machine=series.machine,
                metric=metric,
                kind="regression" if worse else "improvement",
                git_sha=None,
                git_sha_before=None,
                started_at="",
                sweep_dir="",
                sweep="",
                change_pct=pct,
                change_pct_ci=ci,
                pvalue=cp.pvalue,
                nights_before=cp.index - cp.before[0],
                nights_after=cp.after[1] - cp.index,
                sweep_id=series.nights[cp.index].sweep_id,
                series_id=series.id,
                index=skip + cp.index,
            )
        )
    return out


def find_changes(
    st: schema.Store,
    metric: str = analysis.THROUGHPUT,
    *,
    max_pvalue: float = detect.MAX_PVALUE,
    series_ids: Iterable[int] | None = None,
) -> tuple[list[Series], list[Change]]:
    """Every series and its changes, newest first (regressions before improvements)."""
    check_metric(metric)
    all_series = load_series(st, metric, series_ids=series_ids)
    found = [c for s in all_series for c in series_changes(s, metric, max_pvalue=max_pvalue)]
    by_id = {s.id: s for s in all_series}
    found = describe(st, found, by_id)
    found.sort(key=lambda c: (c.started_at, c.kind == "regression", -c.pvalue), reverse=True)
    return all_series, found


# -- what changed ----------------------------------------------------------------------------


def describe(st: schema.Store, found: Sequence[Change], by_id: dict[int, Series]) -> list[Change]:
    """Fill in each change's sweep (commit, time, folder) and ``what_changed``."""
    if not found:
        return []
    # The last sweep before and the first after each change.
    pairs = [(by_id[c.series_id].nights[c.index - 1].sweep_id, c.sweep_id) for c in found]
    sweep_ids = {i for p in pairs for i in p}
    sw, runs = schema.sweeps, schema.runs
    with st.read() as conn:
        info = {
            r.id: r
            for r in conn.execute(
                sa.select(
                    sw.c.id, sw.c.name, sw.c.folder, sw.c.git_sha, sw.c.started_at, sw.c.env,
                    sw.c.definition,
                ).where(sw.c.id.in_(sorted(sweep_ids)))
            )
        }  # fmt: skip
        # Only the runs at the edges of the changes, and of them only the fields that do not
        # split a series (the whole rows would be megabytes of JSON to decode).
        wanted = sorted({(c.series_id, w) for c, p in zip(found, pairs, strict=True) for w in p})
        fields = [runs.c.row[k].label(k) for k in SERIES_FREE]
        edge_rows: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for r in conn.execute(
            sa.select(runs.c.series_id, runs.c.sweep_id, *fields)
            .where(sa.tuple_(runs.c.series_id, runs.c.sweep_id).in_(wanted))
            .where(runs.c.status == "ok")
            .order_by(runs.c.started_at, runs.c.id)
        ):
            edge_rows.setdefault((r.series_id, r.sweep_id), []).append(
                {k: getattr(r, k) for k in SERIES_FREE}
            )
    out = []
    for c, (before_id, after_id) in zip(found, pairs, strict=True):
        b, a = info[before_id], info[after_id]
        last_run = (edge_rows.get((c.series_id, before_id)) or [{}])[-1]
        first_run = (edge_rows.get((c.series_id, after_id)) or [{}])[0]
        out.append(
            _with(
                c,
                git_sha=a.git_sha,
                git_sha_before=b.git_sha,
                started_at=a.started_at,
                sweep_dir=a.folder,
                sweep=a.name,
                what_changed=what_changed(
                    env=(b.env, a.env),
                    definition=(b.definition, a.definition),
                    run=(last_run, first_run),
                ),
            )
        )
    return out


def _with(change: Change, **fields: Any) -> Change:
    return dataclasses.replace(change, **fields)


def what_changed(
    *,
    env: tuple[dict[str, Any], dict[str, Any]],
    definition: tuple[dict[str, Any], dict[str, Any]],
    run: tuple[dict[str, Any], dict[str, Any]],
) -> dict[str, list[Any]]:
    """{field: [before, after]} of every field that differs: env.json's (software, driver,
    GPUs by UUID, host, commit), the sweep definition's (``sweep.<field>``) and the run's
    fields that do not split a series (the planted fault). Pure."""
    before = {**_env_fields(env[0]), **_flat("sweep", definition[0]), **_run_fields(run[0])}
    after = {**_env_fields(env[1]), **_flat("sweep", definition[1]), **_run_fields(run[1])}
    out = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if _scalar(old, new):  # 2 and 2.0 are the same value
            differs = analysis.plain_value(old) != analysis.plain_value(new)
        else:
            differs = old != new
        if differs:
            out[key] = [old, new]
    return out


def _scalar(*values: Any) -> bool:
    return all(not isinstance(v, (list, dict)) for v in values)


def _env_fields(env: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in env.items() if k not in _ENV_SKIP}
    gpus = env.get("gpus")
    if isinstance(gpus, list):
        out["gpu_uuids"] = sorted(
            str(g.get("uuid")) for g in gpus if isinstance(g, dict) and g.get("uuid")
        )
    return out


def _run_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The run's fields that do not split a series; a row from before a field existed holds
    its default (as the analysis reads it)."""
    if not row:
        return {}
    return {
        k: analysis.CONFIG_DEFAULTS.get(k) if row.get(k) is None else row[k] for k in SERIES_FREE
    }


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}", v))
        return out
    return {prefix: value}
