"""Turn a sweep's ledger into the numbers a report or a regression gate shows. Pure pandas/numpy.

Vocabulary:

- a *run* is one ledger row (one launch); a *point* (``config_key``) is a configuration, which a
  sweep may run several times (``repeat`` 0, 1, ...) to measure noise;
- a point's number is the **median** over its ok repeats, with an **interval that states its
  coverage**: the order-statistic interval of the median (exact and distribution-free: with 3
  repeats it is [min, max] and covers 75% -- a 95% interval needs 6 repeats), and for a ratio of
  two points (speedup, efficiency) the two intervals divided end to end, which covers at least
  the product of their coverages (see "statistics" below). A single run has no interval (NaN),
  never a made-up one;
- a *scaling curve* is a set of points that differ only in the GPU count. Under **weak**
  scaling the per-device batch is fixed (the global batch grows with N); under **strong**
  scaling the global batch is fixed (the per-device batch or accumulation shrinks). For both,
  speedup(N) = X(N)/X(N0) and efficiency(N) = X(N)·N0/(N·X(N0)), with X the global samples/s
  and N0 the smallest GPU count on the curve (normally 1: then efficiency = X(N)/(N·X(1))).

The only I/O here is reading the sweep folder (:func:`load_frame`, :func:`load_env`,
:func:`load_telemetry`, :func:`load_rank_step_times`); everything else takes and returns frames.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import statistics
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
#: The coverage every interval aims at; where too few repeats cannot reach it, the interval says
#: what it does cover (see "statistics" below).
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
#
# Three intervals, each with the level it really has at the repeat counts sweeps use (3, 5, 10);
# none is a bootstrap, whose "95%" interval of a median covers about 75% with 3 repeats
# (it is then [min, max]) and about 93% with 5 or 10. Each interval comes with its level, and
# the level is printed next to it (harness.fmt.level): where 95% is out of reach the interval is
# the widest the data allows and says how much less it covers.
#
# - a point's median: the order-statistic interval (distribution-free, exact);
# - a ratio of two points' medians (speedup, efficiency, a factor's effect): the two points'
#   order-statistic intervals divided end to end (distribution-free; a lower bound on coverage);
# - the change of one point between two sweeps (the gate): the Hodges-Lehmann shift of the log
#   values with its Moses interval (exact when the change scales every run alike).


def median_rank(n: int, level: float = LEVEL) -> tuple[int, float]:
    """The order-statistic interval of a median from ``n`` values: ``(k, coverage)``.

    ``[x_(k), x_(n+1-k)]`` (1-based order statistics) holds the true median unless at least
    n+1-k of the n values fall on one side of it, so for continuous data its coverage is
    exactly 1 - 2·P(Binomial(n, 1/2) <= k-1), whatever the distribution (ties only raise it).
    ``k`` is the largest with coverage >= ``level`` -- the narrowest such interval. When even
    ``[min, max]`` falls short (n <= 5 for 95%: 75% at 3 values, 93.75% at 5), ``k`` is 1 and the
    coverage says how short. Fewer than 2 values: ``(0, nan)``, no interval.
    """
    if n < 2:
        return 0, float("nan")
    return _median_ranks(n, level)


@functools.lru_cache(maxsize=512)
def _median_ranks(n: int, level: float) -> tuple[int, float]:
    tail = 0  # P(Bin(n, 1/2) <= k-1) * 2**n, exact integers
    best = (1, 1.0 - 2 / 2**n)
    for k in range(1, (n + 1) // 2 + 1):
        tail += math.comb(n, k - 1)
        coverage = 1.0 - 2 * tail / 2**n  # int / int: exact for any n
        if coverage < level:
            break
        best = (k, coverage)
    return best


def median_interval(
    samples: Sequence[np.ndarray], level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, coverage)`` per sample from :func:`median_rank`; NaN with fewer than 2 values.

    Samples of equal length are sorted together (one vectorised sort per length)."""
    lo = np.full(len(samples), np.nan)
    hi = np.full(len(samples), np.nan)
    cov = np.full(len(samples), np.nan)
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_len.setdefault(len(s), []).append(i)
    for n, idx in by_len.items():
        k, coverage = median_rank(n, level)
        if k == 0:
            continue
        values = np.sort(np.stack([np.asarray(samples[i], dtype=float) for i in idx]), axis=1)
        lo[idx], hi[idx], cov[idx] = values[:, k - 1], values[:, n - k], coverage
    return lo, hi, cov


def median_ci(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float, float]:
    """``(median, lo, hi, coverage)`` of one sample (:func:`median_interval`); non-finite values
    are left out; lo/hi/coverage are NaN for fewer than two values."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return (np.nan, np.nan, np.nan, np.nan)
    lo, hi, cov = median_interval([arr], level)
    return (float(np.median(arr)), float(lo[0]), float(hi[0]), float(cov[0]))


def ratio_interval(
    a: Sequence[np.ndarray], b: Sequence[np.ndarray], level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interval of median(a_i)/median(b_i) per pair: ``(lo, hi, coverage)``.

    Each side's order-statistic interval aims at sqrt(``level``) (:func:`median_rank`), and the
    ratio's interval is their quotient end to end, ``[lo_a/hi_b, hi_a/lo_b]``: it holds the true
    ratio whenever both hold their medians, so it covers at least cov_a·cov_b (the two points'
    runs are independent) for any distributions -- the N = 1 and N = 2 points of a CPU sweep have
    differently shaped noise (bimodal and skewed), where an interval that assumes one shape for
    both falls short. ``coverage`` is that lower bound: 95.7% with 10 repeats a side, 87.9% with
    5, 56.2% with 3 (simulated on noise like the CPU rows, the true coverage is higher: about
    98%, 99% and 85%; tests/unit/test_intervals.py). Both sides need positive values and 2 runs;
    else NaN.
    """
    if not len(a):
        return np.empty(0), np.empty(0), np.empty(0)
    side = math.sqrt(level)
    lo_a, hi_a, cov_a = median_interval(a, side)
    lo_b, hi_b, cov_b = median_interval(b, side)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = lo_a / hi_b, hi_a / lo_b
    ok = np.isfinite(lo) & np.isfinite(hi) & (lo_b > 0) & (lo_a >= 0)
    return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan), np.where(ok, cov_a * cov_b, np.nan)


#: Above this many values in total, Mann-Whitney's null distribution is taken as normal.
EXACT_LIMIT = 60


@functools.lru_cache(maxsize=256)
def mann_whitney_null(m: int, n: int) -> np.ndarray:
    """How many of the C(m+n, m) orderings of two samples give U = 0..m·n (no ties), by the
    classic recursion: the largest value is from the first sample (adding n to U) or not."""
    table: list[list[np.ndarray]] = [[np.ones(1)] * (n + 1) for _ in range(m + 1)]
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            out = np.zeros(i * j + 1)
            up, left = table[i - 1][j], table[i][j - 1]
            out[j : j + len(up)] += up
            out[: len(left)] += left
            table[i][j] = out
    return table[m][n]


def shift_rank(m: int, n: int, level: float = LEVEL) -> tuple[int, float]:
    """The Moses interval of a two-sample shift: ``(k, coverage)`` for ``[d_(k), d_(mn+1-k)]``,
    d the m·n sorted pairwise differences.

    Under the shift model (the two samples' distributions differ only by a shift) it misses the
    true shift exactly when Mann-Whitney's U of the shifted samples is <= k-1 or >= mn-k+1, so its
    coverage is 1 - 2·P(U <= k-1), from U's exact null distribution (normal approximation above
    :data:`EXACT_LIMIT` values). ``k`` is the largest with coverage >= ``level``; when even
    ``[min, max]`` falls short (3 vs 3 runs: 90%) ``k`` is 1 and the coverage says how short.
    """
    if m < 1 or n < 1:
        return 0, float("nan")
    return _shift_ranks(m, n, level)


@functools.lru_cache(maxsize=512)
def _shift_ranks(m: int, n: int, level: float) -> tuple[int, float]:
    mn = m * n
    if m + n > EXACT_LIMIT:  # U ~ Normal(mn/2, mn(m+n+1)/12), with a continuity correction
        normal = statistics.NormalDist(mn / 2.0, math.sqrt(mn * (m + n + 1) / 12.0))
        # P(U <= k-1) = cdf(k - 1/2) <= (1 - level)/2: the largest such k, at least 1.
        k = max(1, math.floor(normal.inv_cdf((1.0 - level) / 2.0) + 0.5))
        return k, 1.0 - 2.0 * normal.cdf(k - 0.5)
    cdf = np.cumsum(mann_whitney_null(m, n)) / math.comb(m + n, m)
    best = (1, float(1.0 - 2.0 * cdf[0]))
    for k in range(1, (mn + 1) // 2 + 1):
        coverage = float(1.0 - 2.0 * cdf[k - 1])
        if coverage < level:
            break
        best = (k, coverage)
    return best


def shift_interval(
    a: np.ndarray, b: np.ndarray, level: float = LEVEL
) -> tuple[float, float, float, float]:
    """How much larger ``a`` is than ``b`` as a ratio: ``(estimate, lo, hi, coverage)``.

    The Hodges-Lehmann shift of the log values -- the median of all m·n pairwise differences
    log a_i - log b_j -- and its Moses interval (:func:`shift_rank`), turned back into ratios
    (exp). On the log scale because a slowdown scales every run (a 20% slower machine or build
    multiplies each run's throughput by 0.8), so the shift model holds in logs, and because then
    a planted x0.8 of the same runs reads exactly 0.8. Robust: one wild run moves it little,
    where the ratio of two medians of 5 jumps with the middle run. The coverage is exact under
    that model; the estimate is always inside the interval. Only positive finite values count;
    with no value on a side all four are NaN, with one run a side the interval is.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a) & (a > 0)], b[np.isfinite(b) & (b > 0)]
    est, lo, hi, cov = shift_intervals([a], [b], level)
    return (float(est[0]), float(lo[0]), float(hi[0]), float(cov[0]))


def shift_intervals(
    a: Sequence[np.ndarray], b: Sequence[np.ndarray], level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`shift_interval` of many pairs of positive samples at once (pairs of equal sizes
    are computed together): arrays of estimate, lo, hi, coverage."""
    out = np.full((4, len(a)), np.nan)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        by_size.setdefault((len(x), len(y)), []).append(i)
    for (m, n), idx in by_size.items():
        if m == 0 or n == 0:
            continue
        la = np.log(np.stack([np.asarray(a[i], dtype=float) for i in idx]))
        lb = np.log(np.stack([np.asarray(b[i], dtype=float) for i in idx]))
        d = np.sort((la[:, :, None] - lb[:, None, :]).reshape(len(idx), m * n), axis=1)
        est = np.median(d, axis=1)
        out[0, idx] = np.exp(est)
        if m * n < 2:
            continue  # one run a side: a change, but no interval
        k, coverage = shift_rank(m, n, level)
        out[1, idx] = np.exp(np.minimum(d[:, k - 1], est))
        out[2, idx] = np.exp(np.maximum(d[:, m * n - k], est))
        out[3, idx] = coverage
    return out[0], out[1], out[2], out[3]


def proportion_interval(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """Clopper-Pearson interval of a rate seen ``successes`` times in ``trials`` (a false-alarm
    rate, a detection power): exact, so it covers at least ``level`` for every true rate --
    with 0 alarms in 10 trials the rate may still be up to 30.8%. (nan, nan) for no trials.
    """
    if trials <= 0 or not 0 <= successes <= trials:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0

    def at_least(k: int, p: float) -> float:  # P(X >= k) for X ~ Binomial(trials, p)
        return sum(
            math.comb(trials, i) * p**i * (1 - p) ** (trials - i) for i in range(k, trials + 1)
        )

    def solve(k: int, target: float) -> float:  # the p where P(X >= k) = target (increasing)
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2.0
            lo, hi = (mid, hi) if at_least(k, mid) < target else (lo, mid)
        return (lo + hi) / 2.0

    low = 0.0 if successes == 0 else solve(successes, tail)
    high = 1.0 if successes == trials else solve(successes + 1, 1.0 - tail)
    return (low, high)


def bootstrap_medians(
    samples: Sequence[np.ndarray], *, n_boot: int = 400, seed: int = 0
) -> np.ndarray:
    """Bootstrap distribution of the median of each sample: shape (len(samples), n_boot).

    Not an interval (no interval this module prints comes from it; see above): the projection
    (harness.project) uses these draws to carry its inputs' spread through its model. Samples of
    equal length are resampled together in one vectorised draw from a Generator seeded with
    ``(seed, length)``, so the result depends only on the data and the seed. Rows of samples
    with fewer than two values are the value itself (no spread) or NaN when empty.
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


# -- points ----------------------------------------------------------------------------------


def per_configuration(
    frame: pd.DataFrame, metrics: Sequence[str] = (THROUGHPUT, "mfu")
) -> pd.DataFrame:
    """One row per configuration (config_key): config columns, repeat counts, median, interval.

    For each metric ``m``: ``m`` (median over ok repeats), ``m_lo``/``m_hi`` (its order-statistic
    interval, :func:`median_rank`) and ``m_level`` (that interval's exact coverage: 75% with 3
    ok repeats, 93.75% with 5, >= 95% from 6 on); all NaN with fewer than two ok repeats. Other
    numeric columns get their median. ``n_runs``/``n_ok`` count repeats; ``failed`` lists the
    statuses of failed repeats. Points whose repeats all failed are kept (their metrics are
    NaN): they never vanish.
    """
    columns = [
        "config_key",
        "scaling_mode",
        *CONFIG_COLUMNS,
        "n_runs",
        "n_ok",
        "failed",
        *[c for m in metrics for c in (m, f"{m}_lo", f"{m}_hi", f"{m}_level")],
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
        lo, hi, level = median_interval(samples)
        out[f"{metric}_lo"], out[f"{metric}_hi"], out[f"{metric}_level"] = lo, hi, level
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
    summary: pd.DataFrame | None = None,
    n_boot: int | None = None,
) -> pd.DataFrame:
    """Speedup and efficiency along every scaling curve, with intervals.

    One row per (curve, GPU count): ``curve_id`` (stable across sweeps; its human name comes
    from :func:`harness.fmt.with_curve_names`), ``scaling_mode``, ``world_size``,
    ``base_world_size`` (N0) and ``base_key``, the point's median ``metric`` and interval
    (``_lo``/``_hi``/``_level``), ``ideal`` (N/N0·X(N0)), ``speedup``/``efficiency`` with
    ``_lo``/``_hi`` and ``_level``: the interval of the ratio of the two points' medians
    (:func:`ratio_interval`) and the coverage it guarantees. At the reference point itself both
    are exactly 1 (level 1). Points with no ok run are left out (the failures table shows
    them). A curve needs at least two GPU counts. ``summary`` may pass an already computed
    :func:`per_configuration`. ``n_boot`` is ignored (the intervals are no longer
    bootstrapped; accepted so older callers still run).
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
        f"{metric}_level",
        "n_ok",
        "ideal",
        "speedup",
        "speedup_lo",
        "speedup_hi",
        "speedup_level",
        "efficiency",
        "efficiency_lo",
        "efficiency_hi",
        "efficiency_level",
    ]
    del n_boot  # see the docstring
    if summary is None or f"{metric}_level" not in summary.columns:
        summary = per_configuration(frame, (metric,))
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
    lo, hi, level = ratio_interval(this, base)
    # The base point is its own reference: speedup and efficiency are exactly 1 there.
    is_base = (table["config_key"] == table["base_key"]).to_numpy()
    lo = np.where(is_base & ~np.isnan(lo), 1.0, lo)
    hi = np.where(is_base & ~np.isnan(hi), 1.0, hi)
    level = np.where(is_base & ~np.isnan(level), 1.0, level)
    table["speedup_lo"], table["speedup_hi"], table["speedup_level"] = lo, hi, level
    table["efficiency_lo"], table["efficiency_hi"] = lo * scale, hi * scale
    table["efficiency_level"] = level
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
    summary: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Speedup of each level of ``factor`` over a reference level, all else equal.

    Points are grouped by every other config column; inside a group each level's median is
    divided by the reference level's (``reference`` when the group has it, else the first level
    in natural order: fp32 < tf32 < fp16 < bf16, False < True, numbers ascending), with the
    interval of the ratio (:func:`ratio_interval`, ``speedup_lo``/``_hi``) and the coverage it
    guarantees (``speedup_level``). Empty when the factor never varies inside a group. One row
    per compared point (``config_key``); :func:`harness.fmt.group_names` names its group.
    """
    cols = [
        "config_key",
        "world_size",
        "level",
        "reference",
        "speedup",
        "speedup_lo",
        "speedup_hi",
        "speedup_level",
    ]
    if summary is None or metric not in summary.columns:
        summary = per_configuration(frame, (metric,))
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
    lo, hi, coverage = ratio_interval(
        [samples[k] for k in out["config_key"]], [samples[k] for k in out["config_key_ref"]]
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
            "speedup_level": coverage,
        }
    )[cols]


def factor_others(factor: str) -> list[str]:
    """The configuration columns held equal while ``factor`` varies (a batch factor frees the
    global batch, which follows from it)."""
    others = [c for c in CONFIG_COLUMNS if c != factor]
    if factor in ("per_device_batch", "grad_accum"):
        others.remove("global_batch")
    return others


def _sort_key(value: str) -> tuple[int, float | str]:
    order = {"fp32": 0, "tf32": 1, "fp16": 2, "bf16": 3, "False": 0, "True": 1, "none": -1}
    if value in order:
        return (0, order[value])
    try:
        return (1, float(value))
    except ValueError:
        return (2, value)
