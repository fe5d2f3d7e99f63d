"""Turn a sweep's ledger into the numbers a report or a regression gate shows. Pure pandas/numpy.

Vocabulary:

- a *run* is one ledger row (one launch); a *point* (``config_key``) is a configuration, which a
  sweep may run several times (``repeat`` 0, 1, ...) to measure noise;
- a point's number is the **median** over its ok repeats, with a **bootstrap 95% interval**:
  resample the repeats with replacement many times, take each resample's median, and keep the
  2.5th and 97.5th percentiles. A single run has no interval (NaN), never a made-up one;
- a *scaling curve* is a set of points that differ only in the GPU count. Under **weak**
  scaling the per-device batch is fixed (the global batch grows with N); under **strong**
  scaling the global batch is fixed (the per-device batch or accumulation shrinks). For both,
  speedup(N) = X(N)/X(N0) and efficiency(N) = X(N)·N0/(N·X(N0)), with X the global samples/s
  and N0 the smallest GPU count on the curve (normally 1: then efficiency = X(N)/(N·X(1))).

The only I/O here is reading the sweep folder (:func:`load_frame`, :func:`load_env`,
:func:`load_telemetry`, :func:`load_rank_step_times`); everything else takes and returns frames.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distrinews.errors import UserError
from distrinews.layout import ENV_JSON, RECORD_JSON, TELEMETRY_JSONL
from distrinews.runspec import RunSpec
from distrinews.safeio import loads_strict
from harness import energy, store, telemetry

#: The ledger schema version this code reads.
SCHEMA_VERSION = 1
#: Columns that define a configuration: RunSpec's fields flattened into the ledger, derived
#: from RunSpec by harness.store.config_columns (one list, notes/contracts.md §3).
CONFIG_COLUMNS = store.CONFIG_COLUMNS
#: Config columns added after ledgers were first written, with the value older rows meant
#: (RunSpec's default: the ledger left these out, built-in sweeps never change them).
CONFIG_DEFAULTS = {
    k: v
    for k, v in store.config_columns(RunSpec()).items()
    if k in ("fault", "fault_ms", "tokenizer", "ddp_powersgd_rank", "lr", "seed")
}
#: Of those, the ones a curve id leaves out while they hold that default, so a curve keeps the
#: id it had before they were columns (as RunSpec.HASH_OMIT_DEFAULTS keeps run ids).
ID_OMIT_DEFAULTS = ("tokenizer", "ddp_powersgd_rank", "lr", "seed")
#: Config columns that say how many GPUs, i.e. the x axis of a scaling curve.
SIZE_COLUMNS = ("nodes", "nproc_per_node", "world_size")
DDP_COLUMNS = tuple(c for c in CONFIG_COLUMNS if c.startswith("ddp_"))
# The ledger's own definitions (store: record metrics; telemetry: summaries), not a copy of them.
NUMERIC_COLUMNS = (
    "schema_version",
    "repeat",
    "duration_s",
    *store.METRIC_KEYS,
    "step_time_s_rank_spread",
    *(k for k in telemetry.SUMMARY_KEYS if k != "gpu_throttle_reasons"),
    *energy.NUMERIC_KEYS,
)
TEXT_COLUMNS = (
    "sweep",
    "run_id",
    "config_key",
    "status",
    "reason",
    "started_at",
    "finished_at",
    "scaling_mode",
    "point_dir",
    "gpu_throttle_reasons",
    "env_fingerprint",
    "energy_method",
    "energy_unavailable_reason",
)
#: The throughput every scaling figure and the gate use by default.
THROUGHPUT = "samples_per_s"
N_BOOT = 2000
LEVEL = 0.95


# -- loading ---------------------------------------------------------------------------------


def load_frame(sweep_dir: Path) -> pd.DataFrame:
    """The sweep's ledger as a DataFrame: one row per run, latest row per run_id.

    Every contract column is present (null where a row lacks it), numbers are float, and
    ``frame.attrs["notes"]`` lists anything a reader should be told (mixed schema versions,
    non-numeric values found in a number column). A missing folder is a UserError; a corrupt
    ledger raises store's UserError naming the line.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir}: no such results folder")
    rows = list(store.latest_by_run_id(store.read_ledger(sweep_dir)).values())
    return frame_from_rows(rows, source=str(sweep_dir))


def frame_from_rows(rows: Sequence[dict[str, Any]], *, source: str = "ledger") -> pd.DataFrame:
    """Normalise raw ledger rows (or an exported table's records) into the analysis frame."""
    frame = pd.DataFrame.from_records(list(rows)) if rows else pd.DataFrame()
    return normalize_frame(frame, source=source)


def normalize_frame(frame: pd.DataFrame, *, source: str = "ledger") -> pd.DataFrame:
    """Add missing contract columns, coerce number columns, and collect notes for the reader."""
    frame = frame.copy()
    notes: list[str] = []
    for col in (*TEXT_COLUMNS, *CONFIG_COLUMNS, *NUMERIC_COLUMNS, "telemetry_available"):
        if col not in frame.columns:
            frame[col] = None
    for col in NUMERIC_COLUMNS:
        before = frame[col].notna()
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
        bad = int((before & frame[col].isna()).sum())
        if bad:
            notes.append(f"{source}: column {col} held non-numbers in {bad} row(s); shown blank")
    for col, default in CONFIG_DEFAULTS.items():
        frame[col] = frame[col].astype(object).where(frame[col].notna(), default)
        if isinstance(default, (int, float)):  # one type: 0 and 0.0 must group together
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    for col in ("world_size", "nodes", "nproc_per_node", "per_device_batch", "global_batch"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    if len(frame):
        frame["status"] = frame["status"].fillna("unknown").astype(str)
        mode = frame["scaling_mode"]
        frame["scaling_mode"] = mode.where(mode.isin(["weak", "strong"]), "weak")
        # The nccl_env column is "" when unset; a CSV round-trip turns that into NaN.
        env = frame["nccl_env"].astype(object)
        frame["nccl_env"] = env.where(env.notna(), "").map(str)
        versions = sorted({int(v) for v in frame["schema_version"].dropna()})
        if len(versions) > 1 or (versions and versions != [SCHEMA_VERSION]):
            notes.append(
                f"{source}: ledger schema versions {', '.join(map(str, versions))} are mixed "
                f"or unknown; this report reads version {SCHEMA_VERSION} (columns a row lacks "
                "are blank)"
            )
        missing_key = frame["config_key"].isna()
        # A table without config keys (hand-made CSV): derive them from the config columns;
        # compare then joins on the config columns instead (see harness.compare).
        frame.attrs["derived_keys"] = bool(missing_key.any())
        if missing_key.any():
            frame.loc[missing_key, "config_key"] = [
                config_digest(r)
                for r in frame.loc[missing_key, list(CONFIG_COLUMNS)].to_dict("records")
            ]
    frame.attrs["notes"] = notes
    frame.attrs.setdefault("derived_keys", False)
    return frame


def _id_columns(row: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``row``'s values of ``keys`` without the ID_OMIT_DEFAULTS holding their default."""
    return {
        k: row[k]
        for k in keys
        if not (k in ID_OMIT_DEFAULTS and plain_value(row[k]) == plain_value(CONFIG_DEFAULTS[k]))
    }


def config_digest(values: dict[str, Any]) -> str:
    """A stable id for a dict of config values (used when a table has no config_key)."""
    clean = {k: plain_value(v) for k, v in sorted(values.items())}
    return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:12]


def plain_value(value: Any) -> Any:
    """JSON-able, with equal values spelled equally (2 == 2.0, NaN/None -> None)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        f = float(value)
        return int(f) if f.is_integer() else f
    return str(value)


def load_env(sweep_dir: Path) -> dict[str, Any] | None:
    """``env.json`` of a sweep, or None when it is missing or unreadable."""
    return store.read_json(Path(sweep_dir) / ENV_JSON)


def load_telemetry(sweep_dir: Path, point_dirs: Iterable[str]) -> pd.DataFrame:
    """Raw GPU samples of the given points: one row per sample, with a ``point_dir`` column.

    Points without a telemetry.jsonl simply contribute nothing; an unreadable line is skipped
    (a sampler killed mid-write leaves a torn last line).
    """
    frames = []
    for rel in point_dirs:
        pdir = store.resolve_point_dir(sweep_dir, rel)  # never outside the sweep folder
        if pdir is None:
            continue
        path = pdir / TELEMETRY_JSONL
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, UnicodeDecodeError):
            continue
        records = []
        for line in text.splitlines():
            try:  # strict: NaN/Infinity, huge integers and lone surrogates are not samples
                rec = loads_strict(line, where=str(path))
            except UserError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        if records:
            part = pd.DataFrame.from_records(records)
            part["point_dir"] = rel
            frames.append(part)
    if not frames:
        return pd.DataFrame(
            columns=["point_dir", "t_unix", "gpu_index", "util_pct", "mem_used_gib", "power_w"]
        )
    out = pd.concat(frames, ignore_index=True)
    for col in ("t_unix", "gpu_index", "util_pct", "mem_used_gib", "power_w"):
        if col not in out.columns:
            out[col] = np.nan
        out[col] = pd.to_numeric(out[col], errors="coerce")
    return out


def load_rank_step_times(
    sweep_dir: Path, point_dirs: Iterable[str]
) -> dict[str, list[list[float]]]:
    """Per-rank measured step times from each point's record.json (points lacking one: absent)."""
    out: dict[str, list[list[float]]] = {}
    for rel in point_dirs:
        pdir = store.resolve_point_dir(sweep_dir, rel)  # never outside the sweep folder
        record = store.read_json(pdir / RECORD_JSON) if pdir is not None else None
        times = record.get("step_times_s") if record else None
        if isinstance(times, list) and times and all(isinstance(t, list) for t in times):
            out[rel] = times
    return out


# -- statistics ------------------------------------------------------------------------------


def bootstrap_medians(
    samples: Sequence[np.ndarray], *, n_boot: int = N_BOOT, seed: int = 0
) -> np.ndarray:
    """Bootstrap distribution of the median of each sample: shape (len(samples), n_boot).

    Samples of equal length are resampled together in one vectorised draw from a Generator
    seeded with ``(seed, length)``, so the result depends only on the data and the seed. Rows of
    samples with fewer than two values are the value itself (no spread) or NaN when empty.
    """
    out = np.full((len(samples), n_boot), np.nan)
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_len.setdefault(len(s), []).append(i)
    for n, idx in by_len.items():
        if n == 0:
            continue
        values = np.stack([np.asarray(samples[i], dtype=float) for i in idx])  # (G, n)
        if n == 1:
            out[idx] = values
            continue
        rng = np.random.default_rng([seed, n])
        draw = rng.integers(0, n, size=(len(idx), n_boot, n))
        resampled = np.take_along_axis(values[:, None, :], draw, axis=2)
        out[idx] = np.median(resampled, axis=2)
    return out


def interval(boot: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of each bootstrap row; rows holding any NaN give NaN."""
    tail = (1.0 - level) / 2.0 * 100.0
    lo = np.full(boot.shape[:-1], np.nan)
    hi = np.full(boot.shape[:-1], np.nan)
    good = np.isfinite(boot).all(axis=-1)
    if good.any():
        lo[good], hi[good] = np.percentile(boot[good], [tail, 100.0 - tail], axis=-1)
    return lo, hi


def median_ci(
    values: Sequence[float], *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float, float]:
    """(median, low, high) of one sample; low/high are NaN for fewer than two values."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return (np.nan, np.nan, np.nan)
    if arr.size == 1:
        return (float(arr[0]), np.nan, np.nan)
    boot = bootstrap_medians([arr], n_boot=n_boot, seed=seed)
    lo, hi = interval(boot, level)
    return (float(np.median(arr)), float(lo[0]), float(hi[0]))


# -- points ----------------------------------------------------------------------------------


def per_configuration(
    frame: pd.DataFrame,
    metrics: Sequence[str] = (THROUGHPUT, "mfu"),
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per configuration (config_key): config columns, repeat counts, median, interval.

    For each metric ``m``: ``m`` (median over ok repeats), ``m_lo``/``m_hi`` (bootstrap 95%
    interval, NaN with fewer than two ok repeats). Other numeric columns get their median.
    ``n_runs``/``n_ok`` count repeats; ``failed`` lists the statuses of failed repeats.
    Points whose repeats all failed are kept (their metrics are NaN): they never vanish.
    """
    columns = [
        "config_key",
        "scaling_mode",
        *CONFIG_COLUMNS,
        "n_runs",
        "n_ok",
        "failed",
        *[c for m in metrics for c in (m, f"{m}_lo", f"{m}_hi")],
    ]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.sort_values(["config_key", "repeat"], kind="stable")
    groups = frame.groupby("config_key", sort=True, dropna=False)
    first = groups.first()
    ok = frame[frame["status"] == "ok"]
    out = first[["scaling_mode", *CONFIG_COLUMNS]].copy()
    out["n_runs"] = groups.size()
    out["n_ok"] = ok.groupby("config_key").size().reindex(out.index, fill_value=0)
    bad = frame.loc[frame["status"] != "ok", ["config_key", "status"]].drop_duplicates()
    failed = bad.sort_values("status").groupby("config_key")["status"].agg(", ".join)
    out["failed"] = failed.reindex(out.index).fillna("")
    numeric = [c for c in NUMERIC_COLUMNS if c not in ("schema_version", "repeat")]
    medians = ok.groupby("config_key")[numeric].median().reindex(out.index)
    for col in numeric:
        out[col] = medians[col]
    for metric in metrics:
        by_key = point_samples(ok, metric)
        empty = np.empty(0)
        samples = [by_key.get(k, empty) for k in out.index]
        boot = bootstrap_medians(samples, n_boot=n_boot, seed=seed)
        lo, hi = interval(boot)
        single = np.array([len(s) < 2 for s in samples])
        out[f"{metric}_lo"] = np.where(single, np.nan, lo)
        out[f"{metric}_hi"] = np.where(single, np.nan, hi)
    out = out.reset_index()
    return out[[*columns, *[c for c in out.columns if c not in columns]]]


def point_samples(frame: pd.DataFrame, metric: str = THROUGHPUT) -> dict[str, np.ndarray]:
    """The ok values of ``metric`` per config_key (the raw repeats)."""
    ok = frame.loc[(frame["status"] == "ok") & frame[metric].notna(), ["config_key", metric]]
    if ok.empty:
        return {}
    # One sort and one split instead of a Python-level groupby: this runs on every report.
    ok = ok.sort_values("config_key", kind="stable")
    keys, starts = np.unique(ok["config_key"].to_numpy(str), return_index=True)
    parts = np.split(ok[metric].to_numpy(float), starts[1:])
    return dict(zip(keys.tolist(), parts, strict=True))


def varying(frame: pd.DataFrame, columns: Iterable[str] = CONFIG_COLUMNS) -> list[str]:
    """Config columns that take more than one value in ``frame`` (what a sweep varied)."""
    return [
        c for c in columns if c in frame.columns and frame[c].astype(object).map(str).nunique() > 1
    ]


def value_key(value: Any) -> str:
    """One spelling per configuration value, for grouping and ordering a factor's levels:
    equal values spelled equally (2 == 2.0), missing ``-``, empty ``none``. Labels use the same
    spelling (:func:`harness.fmt.fmt_value`), so a group and its label always agree."""
    v = plain_value(value)
    if v is None:
        return "-"
    if v == "":
        return "none"
    return str(v)


# -- scaling ---------------------------------------------------------------------------------


def curve_columns(mode: str) -> tuple[str, ...]:
    """Config columns that must be equal along a scaling curve of the given mode."""
    if mode == "strong":
        free = {*SIZE_COLUMNS, "per_device_batch", "grad_accum"}
    else:
        free = {*SIZE_COLUMNS, "global_batch"}
    return tuple(c for c in CONFIG_COLUMNS if c not in free)


def scaling(
    frame: pd.DataFrame,
    metric: str = THROUGHPUT,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    summary: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Speedup and efficiency along every scaling curve, with bootstrap intervals.

    One row per (curve, GPU count): ``curve_id`` (stable across sweeps; its human name comes
    from :func:`harness.fmt.with_curve_names`), ``scaling_mode``, ``world_size``,
    ``base_world_size`` (N0) and ``base_key``, the point's median ``metric`` and interval,
    ``ideal`` (N/N0·X(N0)), ``speedup``/``efficiency`` with ``_lo``/``_hi``. The efficiency
    interval comes from resampling the repeats at N and at N0 independently (ratio of bootstrap
    medians). Points with no ok run are left out (the failures table shows them). A curve needs
    at least two GPU counts. ``summary`` may pass an already computed :func:`per_configuration`.
    """
    cols = [
        "curve_id",
        "scaling_mode",
        "world_size",
        "base_world_size",
        "config_key",
        "base_key",
        metric,
        f"{metric}_lo",
        f"{metric}_hi",
        "n_ok",
        "ideal",
        "speedup",
        "speedup_lo",
        "speedup_hi",
        "efficiency",
        "efficiency_lo",
        "efficiency_hi",
    ]
    if summary is None or metric not in summary.columns:
        summary = per_configuration(frame, (metric,), n_boot=n_boot, seed=seed)
    summary = summary[summary[metric].notna()]
    if summary.empty:
        return pd.DataFrame(columns=cols)
    parts = []
    for mode, part in summary.groupby("scaling_mode"):
        keys = list(curve_columns(mode))
        part = part.assign(_curve=row_keys(part, keys))
        # Same GPU count twice on one curve (1x8 and 2x4): tell them apart by node count.
        clash = part.duplicated(["_curve", "world_size"], keep=False)
        if clash.any():
            clashing = part["_curve"].isin(part.loc[clash, "_curve"])
            nodes = part.loc[clashing, "nodes"].astype(object).map(str)
            part.loc[clashing, "_curve"] = part.loc[clashing, "_curve"] + "|nodes=" + nodes
        part = part.sort_values(["_curve", "world_size"], kind="stable")
        size = part.groupby("_curve")["world_size"].transform("size")
        part = part[size >= 2]
        if part.empty:
            continue
        grouped = part.groupby("_curve", sort=False)
        part["base_world_size"] = grouped["world_size"].transform("first")
        part["base_key"] = grouped["config_key"].transform("first")
        firsts = grouped.head(1).to_dict("records")
        ids = {
            r["_curve"]: config_digest({"scaling_mode": mode, **_id_columns(r, keys)})
            + ("" if "|nodes=" not in r["_curve"] else f"-n{int(r['nodes'])}")
            for r in firsts
        }
        part["curve_id"] = part["_curve"].map(ids)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=cols)
    table = pd.concat(parts, ignore_index=True)
    samples = point_samples(frame, metric)
    this = [samples[k] for k in table["config_key"]]
    base = [samples[k] for k in table["base_key"]]
    base_median = np.array([np.median(s) for s in base])
    scale = table["base_world_size"].to_numpy(float) / table["world_size"].to_numpy(float)
    table["ideal"] = base_median / scale
    table["speedup"] = table[metric].to_numpy(float) / base_median
    table["efficiency"] = table["speedup"] * scale
    lo, hi = ratio_interval(this, base, n_boot=n_boot, seed=seed)
    # The base point is its own reference: speedup and efficiency are exactly 1 there.
    is_base = (table["config_key"] == table["base_key"]).to_numpy()
    lo = np.where(is_base & ~np.isnan(lo), 1.0, lo)
    hi = np.where(is_base & ~np.isnan(hi), 1.0, hi)
    table["speedup_lo"], table["speedup_hi"] = lo, hi
    table["efficiency_lo"], table["efficiency_hi"] = lo * scale, hi * scale
    return table[cols]


def row_keys(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One string per row joining the values of ``columns``: a fast multi-column group key."""
    if not columns:
        return pd.Series("", index=frame.index)
    # map(str), not astype(str): pandas' string dtype keeps missing values missing, and a
    # missing part would make the whole key missing.
    parts = [frame[c].astype(object).map(str) for c in columns]
    out = parts[0]
    for part in parts[1:]:
        out = out + "\x1f" + part
    return out


# -- factor comparisons ----------------------------------------------------------------------


def factor_effect(
    frame: pd.DataFrame,
    factor: str,
    *,
    reference: Any = None,
    metric: str = THROUGHPUT,
    n_boot: int = N_BOOT,
    seed: int = 0,
    summary: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Speedup of each level of ``factor`` over a reference level, all else equal.

    Points are grouped by every other config column; inside a group each level's median is
    divided by the reference level's (``reference`` when the group has it, else the first level
    in natural order: fp32 < tf32 < fp16 < bf16, False < True, numbers ascending), with a
    bootstrap interval of the ratio. Empty when the factor never varies inside a group. One row
    per compared point (``config_key``); :func:`harness.fmt.group_names` names its group.
    """
    cols = ["config_key", "world_size", "level", "reference", "speedup", "speedup_lo", "speedup_hi"]
    if summary is None or metric not in summary.columns:
        summary = per_configuration(frame, (metric,), n_boot=n_boot, seed=seed)
    summary = summary[summary[metric].notna()]
    if summary.empty or factor not in summary.columns:
        return pd.DataFrame(columns=cols)
    others = factor_others(factor)
    s = summary.assign(_g=row_keys(summary, others), _lvl=summary[factor].map(value_key))
    s = s[s.groupby("_g")["_lvl"].transform("nunique") > 1]
    if s.empty:
        return pd.DataFrame(columns=cols)
    ref = value_key(reference) if reference is not None else None
    levels = sorted(set(s["_lvl"]), key=_sort_key)
    rank = {v: (-1 if v == ref else i) for i, v in enumerate(levels)}
    s = s.assign(_rank=s["_lvl"].map(rank)).sort_values(["_g", "_rank"], kind="stable")
    refs = s.groupby("_g").head(1)[["_g", "config_key", metric, "_lvl"]]
    out = s.merge(refs, on="_g", suffixes=("", "_ref"))
    out = out[out["config_key"] != out["config_key_ref"]]
    samples = point_samples(frame, metric)
    lo, hi = ratio_interval(
        [samples[k] for k in out["config_key"]],
        [samples[k] for k in out["config_key_ref"]],
        n_boot=n_boot,
        seed=seed,
    )
    return pd.DataFrame(
        {
            "config_key": out["config_key"].to_numpy(),
            "world_size": out["world_size"].to_numpy(),
            "level": out["_lvl"].to_numpy(),
            "reference": out["_lvl_ref"].to_numpy(),
            "speedup": (out[metric] / out[f"{metric}_ref"]).to_numpy(),
            "speedup_lo": lo,
            "speedup_hi": hi,
        }
    )[cols]


def factor_others(factor: str) -> list[str]:
    """The configuration columns held equal while ``factor`` varies (a batch factor frees the
    global batch, which follows from it)."""
    others = [c for c in CONFIG_COLUMNS if c != factor]
    if factor in ("per_device_batch", "grad_accum"):
        others.remove("global_batch")
    return others


def ratio_interval(
    a: Sequence[np.ndarray], b: Sequence[np.ndarray], *, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap interval of median(a_i)/median(b_i) per pair; NaN when either has < 2 values."""
    if not len(a):
        return np.empty(0), np.empty(0)
    boot_a = bootstrap_medians(a, n_boot=n_boot, seed=seed)
    boot_b = bootstrap_medians(b, n_boot=n_boot, seed=seed + 1)  # independent draws
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = boot_a / boot_b
    lo, hi = interval(ratio)
    single = np.array([min(len(x), len(y)) < 2 for x, y in zip(a, b, strict=True)])
    return np.where(single, np.nan, lo), np.where(single, np.nan, hi)


def _sort_key(value: str) -> tuple[int, float | str]:
    order = {"fp32": 0, "tf32": 1, "fp16": 2, "bf16": 3, "False": 0, "True": 1, "none": -1}
    if value in order:
        return (0, order[value])
    try:
        return (1, float(value))
    except ValueError:
        return (2, value)
