"""What a projection starts from: plain numbers a user states, or a sweep's measurements.

Every input carries its uncertainty, and where it came from:

- a **measured** input is a sample (repeats, or per-step values): its spread becomes draws of
  its median (:func:`harness.projection.project.location_draws`);
- a **stated** input is a :class:`~harness.projection.fabrics.Range` — a nominal value and a
  range, printed with its reason. The defaults below are ranges, never single guesses:

  ============== ============================== ==================================================
  input          default                        why
  ============== ============================== ==================================================
  hide window    2/3 of the step [0.55, 0.75]   backward ≈ 2x forward FLOPs (Kaplan et al. 2020);
                                                non-matmul work and the optimizer move it
  jitter σ       1.65% [0.3%, 3%]               a rank's step-time coefficient of variation; no
                                                GPU measurement of our own yet: a wide range
                                                (Sinha et al. SC22: ~1.2% among a cluster's GPUs)
  host overhead  1 ms [0, 2 ms] per step         DDP's per-step bookkeeping at N > 1 (autograd
                                                hooks, stream waits); stated, not measured. On
                                                GPUs DDP's bucket copies come on top (4 x the
                                                gradient through HBM, ``fabrics.COPY_EFFICIENCY``)
  ============== ============================== ==================================================

  Each nominal value is its range's middle, so the point estimate sits inside its interval.

  A user's value replaces the default: ``0.6`` is exact, ``0.5:0.7`` a range.

From a sweep (:func:`sweep_inputs`): per scaling curve (weak and strong) with an N = 1 point, the
compute-only step and its spread, DDP's buckets (``record.json``), the bucket readiness the worker
measured (``buckets[i].ready_s``, ``metrics.backward_time_s``) where it did, and at each N > 1 the
bus bandwidth, exposed communication, straggler wait (per step, from the ranks' compute-only
steps) and the measured efficiency with its interval.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distrinews.errors import UserError
from distrinews.layout import LEDGER_NAME, RECORD_JSON
from harness import analysis, fmt, store
from harness.projection.fabrics import Range
from harness.projection.model import (
    DEFAULT_HIDE_SHARE,
    MAX_BUCKETS,
    MIB,
    ddp_buckets,
    hook_wire_share,
    powersgd_share,
    ready_by_bytes,
    ready_embedding_last,
    robust_cv,
    split_buckets,
)

HIDE_DEFAULT = Range(
    DEFAULT_HIDE_SHARE,
    0.55,
    0.75,
    "default: backward is about 2x the forward's FLOPs (Kaplan et al. 2020), so 2/3 of the "
    "step; non-matmul work and the optimizer move it: stated range 0.55-0.75",
)
#: The nominal value of a stated range is its middle (as ``fabrics``' ranges): the point
#: estimate then sits inside the interval its draws make, not at one edge of it.
JITTER_DEFAULT = Range(
    0.0165,
    0.003,
    0.03,
    "default: a rank's step-time coefficient of variation, stated 0.3%-3%; no GPU measurement "
    "of this project's yet. Identical GPUs of one cluster differ by '8% (max 22%) average "
    "performance variation' (Sinha et al., SC22, arXiv:2208.11035): read as the range of "
    "thousands of GPUs (~6.5 standard deviations), a CV of ~1.2% (at most ~3.4%)",
)
HOST_DEFAULT = Range(
    0.001,
    0.0,
    0.002,
    "default: DDP's per-step bookkeeping at N > 1 (autograd hooks, stream waits), stated 0-2 ms",
)
FIXED_DEFAULT = Range(0.0, 0.0, 0.0, "default: no per-step cost that does not shrink with N")

#: Bounds checked before the work they bound (each named in its message).
MAX_STEP_MS = 86_400_000.0  # one day per step
MAX_GRAD_MB = 1e9  # a petabyte of gradient
MAX_VALUES = 10_000  # values in one list flag
MAX_GPU_COUNT = 1_000_000
MAX_TARGETS = 1_000
MAX_HOST_MS = 3_600_000.0  # an hour per step
MAX_LOADER = 1e12  # samples/s per node
MAX_CORES = 1_000_000  # CPU cores of one host, read from a ledger: far past any machine


@dataclass(frozen=True)
class Measured:
    """What the sweep measured at one GPU count N > 1 of a curve (per ok repeat)."""

    gpus: int
    nodes: int
    busbw_gbps: tuple[float, ...] = ()
    exposed_comm_s: tuple[float, ...] = ()
    straggler_gaps_s: tuple[float, ...] = ()
    """Per step, the slowest rank's compute-only step minus the typical rank's (all steps of
    all repeats), else the ledger's per-repeat ``straggler_wait_s`` (each a median over steps)."""
    gaps_are_steps: bool = False
    bucket_times: tuple[tuple[float, float], ...] = ()
    """(bytes, seconds) of all-reduces of DDP's buckets at this N (record.json ``buckets``:
    ``allreduce_time_s``, each alone at its ceiling; ``step_allreduce_s``, the in-step
    duration, only where no ceiling was measured)."""
    ready_share: tuple[float, ...] = ()
    """Each bucket's readiness (``ready_s`` / ``backward_time_s``), when the worker measured it."""
    ring_ceilings: tuple[tuple[float, float, int, float], ...] = ()
    """Per repeat, the worker's two all-reduce ceilings of the same gradient: (whole gradient in
    one message s, its buckets one by one s, bucket count, gradient bytes) — ledger
    ``allreduce_time_s``, ``allreduce_bucketed_time_s``, ``bucket_count``, ``grad_bytes``."""
    cpu_cores: int | None = None
    """The host's CPU cores where this N ran (ledger ``cpu_cores``)."""
    backward_s: float | None = None
    data_wait_s: tuple[float, ...] = ()
    compute_step_s: tuple[float, ...] = ()
    samples_per_step: float | None = None
    efficiency: float | None = None
    efficiency_lo: float | None = None
    efficiency_hi: float | None = None


@dataclass(frozen=True)
class CurveInputs:
    """Everything the model needs for one configuration, with where each value came from."""

    compute_step_s: tuple[float, ...]
    """Samples of the compute-only step time at N = 1 (their median is its nominal value)."""
    bucket_bytes: tuple[float, ...]
    """Dense gradient bytes per DDP bucket, bucket 0 first ready in backward."""
    ready: tuple[float, ...]
    """Each bucket's readiness as a share of the hide window (see ``sources['ready']``)."""
    grad_accum: int = 1
    comm_hook: str = "none"
    wire_share: float = 1.0
    collectives_per_bucket: int = 1
    hide: Range = HIDE_DEFAULT
    jitter: Range = JITTER_DEFAULT
    host: Range = HOST_DEFAULT
    fixed: Range = FIXED_DEFAULT
    loader: Range | None = None
    base_wait_s: float = 0.0
    """Data wait per step at N = 1 (part of the N = 1 step the efficiency divides by)."""
    scaling: str = "weak"
    strong_by: str = "batch"
    samples_per_step: float | None = None
    """Samples one GPU processes per optimizer step at N = 1 (per-device batch x accumulation)."""
    measured: tuple[Measured, ...] = ()
    device: str = "cuda"
    gpu_name: str | None = None
    curve_id: str | None = None
    curve: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


# -- parsing what a user types ---------------------------------------------------------------


def finite(option: str, value: Any, *, positive: bool = False, at_most: float | None = None):
    """A finite number (>= 0; > 0 if ``positive``; <= ``at_most``), or one line naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{option} = {value!r} is not allowed; expected a finite number")
    if value < 0 or (positive and value == 0):
        raise UserError(f"{option} = {value!r} is not allowed; expected a number > 0")
    if at_most is not None and value > at_most:
        raise UserError(f"{option} = {value!r} is not allowed; expected a number <= {at_most:g}")
    return float(value)


def parse_numbers(
    option: str, text: str, *, positive: bool = True, at_most: float | None = None
) -> list[float]:
    """``"1.5,2,2.5"`` -> floats; a non-number, nan, inf, a negative or too many is one line."""
    parts = str(text).split(",")
    if len(parts) > MAX_VALUES:
        raise UserError(f"{option}: {len(parts):,} values; at most {MAX_VALUES:,}")
    out = []
    for part in parts:
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise UserError(f"{option} {text!r}: {part!r} is not a number") from None
        out.append(finite(option, value, positive=positive, at_most=at_most))
    return out


def parse_range(
    option: str, text: str | float, *, lo: float = 0.0, hi: float, unit_scale: float = 1.0
) -> Range:
    """``"0.6"`` (exact) or ``"0.5:0.7"`` (a range, nominal at its middle), each in [lo, hi]."""
    raw = str(text).strip()
    parts = raw.split(":")
    if len(parts) > 2 or not raw:
        raise UserError(f"{option} {raw!r}: give a value or LO:HI")
    values = []
    for part in parts:
        try:
            v = float(part)
        except ValueError:
            raise UserError(f"{option} {raw!r}: {part.strip()!r} is not a number") from None
        if not math.isfinite(v) or v < lo or v > hi:
            raise UserError(
                f"{option} = {part.strip()} is not allowed; expected a number from {lo:g} to {hi:g}"
            )
        values.append(v * unit_scale)
    if len(values) == 2 and values[0] > values[1]:
        raise UserError(f"{option} {raw!r}: LO is above HI")
    a, b = values[0], values[-1]
    return Range((a + b) / 2, a, b, f"{option} {raw}")


def parse_gpus(text: str, gpus_per_node: int) -> tuple[int, ...]:
    """``8,16,32`` or ``8,16,...,1024`` (the ratio of the two values before ``...`` continues).

    Every count is checked against the bound (1,000,000 GPUs) and the expansion's length
    against 1,000 counts *before* anything is expanded. Past one node every count must fill
    whole nodes: a multiple of ``gpus_per_node``.
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if len(parts) > MAX_TARGETS:
        raise UserError(f"--gpus: {len(parts):,} entries; at most {MAX_TARGETS:,} GPU counts")
    numbers: list[int | None] = []
    for part in parts:
        if part == "...":
            numbers.append(None)
            continue
        if not re.fullmatch(r"[0-9]+", part) or int(part) < 1:
            raise UserError(f"--gpus {text!r}: {part!r} is not a GPU count (an integer >= 1)")
        n = int(part)
        if n > MAX_GPU_COUNT:
            raise UserError(f"--gpus {text!r}: {n:,} GPUs; at most {MAX_GPU_COUNT:,}")
        numbers.append(n)
    values: list[int] = []
    for i, n in enumerate(numbers):
        if n is None:
            if len(values) < 2 or i + 1 >= len(numbers) or numbers[i + 1] is None:
                raise UserError(
                    f"--gpus {text!r}: '...' needs two rising counts before it and an end after"
                )
            a, b, end = values[-2], values[-1], numbers[i + 1]
            if b <= a or end <= b:
                raise UserError(
                    f"--gpus {text!r}: '...' needs two rising counts before it and an end after"
                )
            ratio = b / a
            steps = math.log(end / b) / math.log(ratio)
            if steps + len(values) > MAX_TARGETS:
                raise UserError(
                    f"--gpus {text!r}: expands to about {int(steps):,} GPU counts; at most "
                    f"{MAX_TARGETS:,}"
                )
            nxt = b * ratio
            while nxt < end:
                values.append(round(nxt))
                nxt *= ratio
            continue
        values.append(n)
    if not values:
        raise UserError(f"--gpus {text!r}: give at least one GPU count")
    for n in values:
        if n > gpus_per_node and n % gpus_per_node:
            raise UserError(
                f"--gpus: {n} GPUs is more than one node of {gpus_per_node} but not a multiple "
                f"of --gpus-per-node {gpus_per_node}"
            )
    return tuple(sorted(set(values)))


def pure_inputs(
    *,
    step_time_ms: str,
    grad_mb: float,
    bucket_mb: str = "25",
    overlap: str | float | None = None,
    grad_accum: int = 1,
    comm_hook: str = "none",
    powersgd_rank: int = 1,
    matrix_dim: int = 768,
    jitter: str | float | None = None,
    per_device_batch: int | None = None,
    ready_share: str | None = None,
    host_overhead_ms: str | None = None,
    loader_samples_per_s: str | None = None,
    scaling: str = "weak",
    fixed_step_ms: str | None = None,
) -> CurveInputs:
    """Inputs from plain numbers (no sweep); every bound is checked before the work it bounds.

    ``step_time_ms`` is one compute-only step time, or several (repeats: they give its spread).
    ``bucket_mb`` is DDP's bucket cap in MiB, or the bucket sizes themselves in DDP order
    (``"24,25,25,90"``: the last is produced last in backward). ``ready_share`` states when each
    bucket is ready (shares of the hide window, DDP order); by default the stated assumption
    "reverse layer order, compute in proportion to parameters". ``overlap`` is the share of the
    compute step backward spans (the hide window).
    """
    steps = parse_numbers("--step-time-ms", step_time_ms, at_most=MAX_STEP_MS)
    grad_mb = finite("--grad-mb", grad_mb, positive=True, at_most=MAX_GRAD_MB)
    grad_bytes = grad_mb * MIB
    sizes = parse_numbers("--bucket-mb", bucket_mb, at_most=MAX_GRAD_MB)
    if len(sizes) == 1:
        count = math.ceil(grad_bytes / (sizes[0] * MIB))
        if count > MAX_BUCKETS:
            raise UserError(
                f"--bucket-mb {sizes[0]:g}: splits the {grad_mb:g} MiB gradient into {count:,} "
                f"buckets; at most {MAX_BUCKETS:,} (give a larger cap)"
            )
        buckets = split_buckets(grad_bytes, sizes[0] * MIB)
        bucket_source = f"--grad-mb split into {sizes[0]:g} MiB buckets"
    else:
        buckets = [s * MIB for s in sizes]
        total = sum(sizes)
        if abs(total - grad_mb) > 1e-6 * max(total, grad_mb):
            raise UserError(
                f"--bucket-mb {bucket_mb!r} sums to {total:g} MiB but --grad-mb is {grad_mb:g}"
            )
        bucket_source = "--bucket-mb (explicit bucket sizes)"
    if ready_share is not None:
        ready = parse_numbers("--ready-share", ready_share, positive=False, at_most=1.0)
        if len(ready) != len(buckets):
            raise UserError(
                f"--ready-share: {len(ready)} value(s) for {len(buckets)} bucket(s); give one "
                "share of the hide window per bucket, DDP order"
            )
        if any(b < a for a, b in itertools.pairwise(ready)):
            raise UserError("--ready-share: shares must not fall (bucket 0 is ready first)")
        ready_source = "--ready-share (stated)"
    else:
        ready = list(ready_by_bytes(buckets))
        ready_source = (
            "assumed: buckets ready in reverse layer order, compute in proportion to "
            "parameters (give --ready-share to state otherwise)"
        )
    hide = HIDE_DEFAULT if overlap is None else parse_range("--overlap", overlap, hi=1.0)
    jit = JITTER_DEFAULT if jitter is None else parse_range("--jitter", jitter, hi=1.0)
    host = HOST_DEFAULT
    if host_overhead_ms is not None:
        host = parse_range("--host-overhead-ms", host_overhead_ms, hi=MAX_HOST_MS, unit_scale=1e-3)
    fixed = FIXED_DEFAULT
    if fixed_step_ms is not None:
        fixed = parse_range("--fixed-step-ms", fixed_step_ms, hi=MAX_STEP_MS, unit_scale=1e-3)
        if fixed.hi >= min(steps) / 1000.0:
            raise UserError(
                f"--fixed-step-ms {fixed_step_ms}: must stay below the step time "
                f"({min(steps):g} ms)"
            )
    loader = None
    if loader_samples_per_s is not None:
        loader = parse_range("--loader-samples-per-s", loader_samples_per_s, hi=MAX_LOADER)
        if loader.lo <= 0:
            raise UserError(
                f"--loader-samples-per-s {loader_samples_per_s}: expected a rate > 0 samples/s"
            )
        if not per_device_batch:
            raise UserError("--loader-samples-per-s needs --per-device-batch (samples per step)")
    if scaling not in ("weak", "strong"):
        raise UserError(f"--scaling {scaling!r}: expected weak or strong")
    share = 1.0
    if comm_hook == "powersgd":
        share = powersgd_share([(matrix_dim, matrix_dim)], powersgd_rank)
    wire = hook_wire_share(comm_hook, powersgd=share)
    return CurveInputs(
        compute_step_s=tuple(s / 1000.0 for s in steps),
        bucket_bytes=tuple(buckets),
        ready=tuple(float(r) for r in ready),
        grad_accum=grad_accum,
        comm_hook=comm_hook,
        wire_share=wire,
        collectives_per_bucket=2 if comm_hook == "powersgd" else 1,
        hide=hide,
        jitter=jit,
        host=host,
        fixed=fixed,
        loader=loader,
        scaling=scaling,
        strong_by="accum" if scaling == "strong" and grad_accum > 1 else "batch",
        samples_per_step=float(per_device_batch * grad_accum) if per_device_batch else None,
        sources={
            "compute_step": f"--step-time-ms ({len(steps)} value(s))",
            "buckets": bucket_source,
            "ready": ready_source,
            "hide": hide.source,
            "jitter": jit.source,
            "host": host.source,
            "fixed": fixed.source,
        },
    )


# -- inputs from a sweep ---------------------------------------------------------------------


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _whole(v: Any, hi: int) -> int | None:
    """A ledger's count (cores, buckets): a whole number in 1..``hi``, else None (untrusted)."""
    f = _number(v)
    return int(f) if f is not None and f.is_integer() and 1 <= f <= hi else None


def _values(rows: Sequence[dict[str, Any]], column: str) -> tuple[float, ...]:
    """The finite numbers of ``column`` over ``rows`` (ledger rows as dicts)."""
    return tuple(x for x in (_number(r.get(column)) for r in rows) if x is not None)


def _record(sweep_dir: Path, point_dir: Any) -> dict[str, Any] | None:
    if not isinstance(point_dir, str) or not point_dir:
        return None
    return _read_record(str(sweep_dir), point_dir)


@functools.lru_cache(maxsize=4096)
def _read_record(sweep_dir: str, point_dir: str) -> dict[str, Any] | None:
    """A point's record.json (cached within one projection: :func:`sweep_inputs` clears it)."""
    record = store.read_json(Path(sweep_dir) / point_dir / RECORD_JSON)
    return record if isinstance(record, dict) else None


def rank_lists(record: dict[str, Any] | None, key: str) -> list[list[float]]:
    """A record's per-rank lists of per-step numbers (finite values only)."""
    lists = (record or {}).get(key)
    if not isinstance(lists, list):
        return []
    out = []
    for per_rank in lists:
        if isinstance(per_rank, list):
            out.append([x for x in (_number(v) for v in per_rank) if x is not None])
    return out


def _pooled(record: dict[str, Any] | None, key: str) -> list[float]:
    return [v for rank in rank_lists(record, key) for v in rank]


def step_gaps(record: dict[str, Any] | None) -> list[float]:
    """Per step, the slowest rank's compute-only step minus the typical rank's (lower median):
    the worker's straggler statistic before it takes the median over steps."""
    ranks = rank_lists(record, "compute_step_times_s")
    if len(ranks) < 2:
        return []
    steps = min(len(r) for r in ranks)
    out = []
    for i in range(steps):
        values = sorted(r[i] for r in ranks)
        out.append(values[-1] - values[(len(values) - 1) // 2])
    return out


def _buckets(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    buckets = (record or {}).get("buckets")
    if not isinstance(buckets, list) or not all(isinstance(b, dict) for b in buckets):
        return []
    return buckets


def _record_bucket_bytes(record: dict[str, Any] | None) -> list[float]:
    out = []
    for b in _buckets(record):
        size = _number(b.get("bytes"))
        if size is None or size <= 0:
            return []
        out.append(size)
    return out


def _ready_share(record: dict[str, Any] | None) -> tuple[list[float], float | None]:
    """Each bucket's measured readiness over the measured backward (the why engineer's contract:
    ``buckets[i].ready_s``, ``metrics.backward_time_s``); ([], None) if the record lacks it."""
    backward = _number(((record or {}).get("metrics") or {}).get("backward_time_s"))
    buckets = _buckets(record)
    if not buckets or backward is None or backward <= 0:
        return [], None
    ready = [_number(b.get("ready_s")) for b in buckets]
    if any(r is None or r < 0 for r in ready):
        return [], None
    shares = [min(float(r) / backward, 1.0) for r in ready]  # type: ignore[arg-type]
    return list(np.maximum.accumulate(shares)), backward


@functools.lru_cache(maxsize=8)
def model_param_shapes(model: str) -> tuple[tuple[int, ...], ...] | None:
    """Parameter shapes of a named random-init shape (``tiny``, ``base``), built on the meta
    device (no memory, no weights); None for a model this cannot know (a hub name)."""
    from distrinews.model import SHAPES

    if model not in SHAPES:
        return None
    import torch

    from distrinews.model import NewsClassifier

    with torch.device("meta"):
        net = NewsClassifier.from_config(model)
    return tuple(tuple(p.shape) for p in net.parameters())


def _powersgd_rank(record: dict[str, Any] | None) -> int:
    ddp = ((record or {}).get("spec") or {}).get("ddp") or {}
    rank = ddp.get("powersgd_rank", 1)
    return rank if isinstance(rank, int) and rank >= 1 else 1


def _int_column(sweep_dir: Path, row: dict[str, Any], column: str) -> int:
    """A ledger row's integer column, or one line naming the file, run and field."""
    value = _number(row.get(column))
    if value is None or value < 1 or not float(value).is_integer():
        raise UserError(
            f"{Path(sweep_dir) / LEDGER_NAME}: run {row.get('run_id')!r} has {column} = "
            f"{row.get(column)!r}; expected an integer >= 1"
        )
    return int(value)


def sweep_inputs(sweep_dir: Path) -> tuple[list[CurveInputs], list[str]]:
    """One CurveInputs per scaling curve (weak or strong) with an N = 1 point, and notes.

    Planted-fault points (``fault`` other than none) are left out: they exist to test the
    attribution, not to describe the configuration.
    """
    sweep_dir = Path(sweep_dir)
    _read_record.cache_clear()  # a record rewritten since the last projection is read anew
    frame = analysis.load_frame(sweep_dir)
    notes: list[str] = []
    if frame.empty:
        raise UserError(f"{sweep_dir}: the ledger has no rows; run a sweep first")
    if "fault" in frame.columns:
        frame = frame[frame["fault"].isna() | frame["fault"].isin(["none", ""])]
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        raise UserError(f"{sweep_dir}: no ok point to project from")
    env = analysis.load_env(sweep_dir) or {}
    out: list[CurveInputs] = []
    lacking = 0
    for mode in ("weak", "strong"):
        part = ok[ok["scaling_mode"] == mode].copy()
        if part.empty:
            continue
        keys = list(analysis.curve_columns(mode))
        part["_curve"] = analysis.row_keys(part, keys).to_numpy()
        curves = analysis.scaling(part, n_boot=400) if len(part) else pd.DataFrame()
        eff: dict[str, tuple[float | None, ...]] = {}
        for r in curves.to_dict("records") if len(curves) else ():
            eff[r["config_key"]] = tuple(
                _number(r[k]) for k in ("efficiency", "efficiency_lo", "efficiency_hi")
            )
        label_cols = fmt.label_columns(part, keys)
        by_curve: dict[str, list[dict[str, Any]]] = {}
        for row in part.to_dict("records"):
            by_curve.setdefault(row["_curve"], []).append(row)
        for curve_key in sorted(by_curve):
            rows = by_curve[curve_key]
            for r in rows:
                _int_column(sweep_dir, r, "world_size")
                _int_column(sweep_dir, r, "nodes")
            base = [r for r in rows if int(r["world_size"]) == 1]
            if not base:
                lacking += 1
                continue
            first = base[0]
            config = {k: analysis.plain_value(first[k]) for k in keys}
            curve_id = analysis.config_digest({"scaling_mode": mode, **config})
            label = f"{mode}: {fmt.point_label(first, label_cols)}" if label_cols else mode
            out.append(
                _curve_inputs(sweep_dir, rows, base, config, curve_id, label, eff, mode, env)
            )
    if not out:
        raise UserError(
            f"{sweep_dir}: no scaling curve has an ok N = 1 point; the projection starts from "
            "the compute step at one GPU (run the sweep with 1 GPU included)"
        )
    if lacking:
        notes.append(f"{lacking} curve(s) without an ok N = 1 point are not projected")
    return out, notes


def _gpu_name(env: dict[str, Any], records: Sequence[dict[str, Any] | None]) -> str | None:
    for r in records:
        name = ((r or {}).get("env") or {}).get("gpu_name")
        if isinstance(name, str) and name:
            return name
    names = env.get("gpu_names") if isinstance(env, dict) else None
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    return None


def _curve_inputs(
    sweep_dir: Path,
    part: list[dict[str, Any]],
    base: list[dict[str, Any]],
    config: dict[str, Any],
    curve_id: str,
    label: str,
    eff: dict[str, tuple[float | None, ...]],
    mode: str,
    env: dict[str, Any],
) -> CurveInputs:
    sources: dict[str, str] = {}
    base_records = [_record(sweep_dir, r.get("point_dir")) for r in base]
    # Compute-only step at N = 1: per-repeat medians when there are repeats, else the steps.
    compute = _values(base, "compute_step_time_s")
    per_step = [t for r in base_records for t in _pooled(r, "compute_step_times_s")]
    what = "compute_step_time_s"
    if not per_step:
        per_step = [t for r in base_records for t in _pooled(r, "step_times_s")]
    if len(compute) < 2:
        if not compute:
            compute = _values(base, "step_time_s_p50")
            what = "step time (N = 1 has no all-reduce)"
        if len(per_step) >= 2:
            compute = tuple(per_step)
            sources["compute_step"] = f"{what} at N = 1, {len(per_step)} steps"
        else:
            sources["compute_step"] = f"{what} at N = 1, one run (no spread)"
    else:
        sources["compute_step"] = f"{what} at N = 1, {len(compute)} repeats"
    if not compute:
        raise UserError(f"{sweep_dir}: the N = 1 point of {label} has no step time")
    # A rank's step-time jitter at N = 1 (used where no N > 1 measured a straggler wait): the
    # robust CV within each run (pooling runs would count run-to-run offsets as jitter).
    cvs = [
        robust_cv(steps)
        for r in base_records
        if len(steps := _pooled(r, "compute_step_times_s") or _pooled(r, "step_times_s")) >= 2
    ]
    if cvs:
        cv = float(np.median(cvs))
        jitter = Range(cv, cv, cv, f"robust CV of the N = 1 step times ({len(cvs)} run(s))")
    else:
        jitter = JITTER_DEFAULT  # fmt: skip
    sources["jitter"] = jitter.source
    base_wait = _values(base, "data_wait_s")
    wait1 = float(np.median(base_wait)) if base_wait else 0.0
    # Buckets: DDP's own (record.json), else the gradient split by the cap, else the shapes.
    buckets: list[float] = []
    records = list(base_records)
    ready: list[float] = []
    for r in (*base_records, *(_record(sweep_dir, x.get("point_dir")) for x in part)):
        records.append(r)
        if not buckets:
            buckets = _record_bucket_bytes(r)
            if buckets:
                sources["buckets"] = f"DDP buckets recorded by the worker ({len(buckets)})"
        if not ready:
            shares, _ = _ready_share(r)
            if shares and len(shares) == len(_record_bucket_bytes(r)):
                ready = shares
    cap = float(config.get("ddp_bucket_cap_mb") or 25.0) * MIB
    hook = str(config.get("ddp_comm_hook") or "none")
    needs_shapes = hook == "powersgd" or not (buckets or _values(part, "grad_bytes"))
    # Building the shape imports transformers (seconds): only when nothing recorded says it.
    shapes = model_param_shapes(str(config.get("model"))) if needs_shapes else None
    if not buckets:
        grad = _values(part, "grad_bytes")
        if grad:
            if math.ceil(float(np.median(grad)) / cap) > MAX_BUCKETS:
                raise UserError(
                    f"{sweep_dir}: {label}: ddp_bucket_cap_mb splits the gradient into more "
                    f"than {MAX_BUCKETS:,} buckets"
                )
            buckets = split_buckets(float(np.median(grad)), cap)
            sources["buckets"] = "grad_bytes split into bucket_cap_mb buckets"
        elif shapes is not None:
            sizes = [4 * math.prod(s) for s in shapes]  # fp32 gradients
            buckets = [float(b) for b in ddp_buckets(sizes, cap)]
            sources["buckets"] = f"DDP bucketing of the {config.get('model')} shape (fp32)"
        else:
            raise UserError(
                f"{sweep_dir}: {label}: no gradient size recorded (grad_bytes or buckets) and "
                f"model {config.get('model')!r} is not a known shape; project it with --grad-mb"
            )
    if ready and len(ready) == len(buckets):
        sources["ready"] = "measured by the worker (buckets[].ready_s / backward_time_s)"
    else:
        ready = list(ready_embedding_last(buckets))
        sources["ready"] = (
            "assumed (the worker did not measure readiness): reverse layer order in proportion "
            "to parameters, the last bucket (the word embeddings) when backward ends"
        )
    psgd = None
    if hook == "powersgd":
        rank = next((_powersgd_rank(r) for r in records if r), 1)
        psgd = powersgd_share(shapes, rank) if shapes is not None else None
        if psgd is None:
            raise UserError(
                f"{sweep_dir}: {label}: PowerSGD on model {config.get('model')!r} needs its "
                "parameter shapes; project it with --comm-hook powersgd --matrix-dim"
            )
    measured = []
    by_n: dict[int, list[dict[str, Any]]] = {}
    for r in part:
        if int(r["world_size"]) > 1:
            by_n.setdefault(int(r["world_size"]), []).append(r)
    for n in sorted(by_n):
        measured.append(_measured(sweep_dir, n, by_n[n], eff))
    grad_accum = int(_number(config.get("grad_accum")) or 1)
    batch = _number(first_value(base, "per_device_batch"))
    accum1 = int(_number(first_value(base, "grad_accum")) or 1)
    strong_by = "batch"
    if mode == "strong":
        accums = {int(_number(r.get("grad_accum")) or 1) for r in part}
        strong_by = "accum" if len(accums) > 1 else "batch"
    fixed = FIXED_DEFAULT
    if mode == "strong":
        fixed = _strong_fixed(compute, measured)
        sources["fixed"] = fixed.source
    device = str(first_value(base, "device") or "cuda")
    return CurveInputs(
        compute_step_s=tuple(compute),
        bucket_bytes=tuple(buckets),
        ready=tuple(float(x) for x in ready),
        grad_accum=accum1 if mode == "strong" else grad_accum,
        comm_hook=hook,
        wire_share=hook_wire_share(hook, powersgd=psgd),
        collectives_per_bucket=2 if hook == "powersgd" else 1,
        jitter=jitter,
        fixed=fixed,
        base_wait_s=wait1,
        scaling=mode,
        strong_by=strong_by,
        samples_per_step=float(batch) * accum1 if batch else None,
        measured=tuple(measured),
        device=device,
        gpu_name=_gpu_name(env, records) if device == "cuda" else None,
        curve_id=curve_id,
        curve=label,
        config=config,
        sources=sources,
    )


def first_value(rows: Sequence[dict[str, Any]], column: str) -> Any:
    for r in rows:
        v = r.get(column)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            return v
    return None


def _measured(
    sweep_dir: Path, n: int, at_n: list[dict[str, Any]], eff: dict[str, tuple[float | None, ...]]
) -> Measured:
    busbw = _values(at_n, "allreduce_busbw_gbps")
    exposed = _values(at_n, "exposed_comm_s")
    if not exposed:
        share, total = _values(at_n, "overlap_share"), _values(at_n, "allreduce_time_s")
        if share and total and len(share) == len(total):
            exposed = tuple((1 - s) * t for s, t in zip(share, total, strict=True))
    timed: list[tuple[float, float]] = []
    gaps: list[float] = []
    ready: list[float] = []
    backward = None
    for r in at_n:
        record = _record(sweep_dir, r.get("point_dir"))
        for b in _buckets(record):
            size = _number(b.get("bytes"))
            # The bucket's ceiling (alone, after the window): its duration inside the step runs
            # from the hook call, so it holds the wait behind earlier buckets, which the step
            # model's own queue adds again (a 16-byte last bucket read 4.4 ms in the step, 0.5
            # ms alone), and a ring fitted to it priced each hop at 2.5x its cost.
            t = _number(b.get("allreduce_time_s"))
            if t is None:
                t = _number(b.get("step_allreduce_s"))
            if size and t and size > 0 and t > 0:
                timed.append((size, t))
        gaps.extend(step_gaps(record))
        if not ready:
            ready, backward = _ready_share(record)
    ceilings = []
    for r in at_n:
        whole, bucketed = (
            _number(r.get("allreduce_time_s")),
            _number(r.get("allreduce_bucketed_time_s")),
        )
        count, grad = _whole(r.get("bucket_count"), MAX_BUCKETS), _number(r.get("grad_bytes"))
        if whole and bucketed and count and grad and min(whole, bucketed, grad) > 0:
            ceilings.append((whole, bucketed, count, grad))
    cores = _whole(first_value(at_n, "cpu_cores"), MAX_CORES)
    e, lo, hi = eff.get(at_n[0]["config_key"], (None, None, None))
    batch = _number(first_value(at_n, "per_device_batch"))
    accum = _number(first_value(at_n, "grad_accum")) or 1
    return Measured(
        gpus=n,
        nodes=int(at_n[0]["nodes"]),
        busbw_gbps=busbw,
        exposed_comm_s=exposed,
        straggler_gaps_s=tuple(gaps) if gaps else _values(at_n, "straggler_wait_s"),
        gaps_are_steps=bool(gaps),
        bucket_times=tuple(timed),
        ready_share=tuple(ready),
        ring_ceilings=tuple(ceilings),
        cpu_cores=cores,
        backward_s=backward,
        data_wait_s=_values(at_n, "data_wait_s"),
        compute_step_s=_values(at_n, "compute_step_time_s"),
        samples_per_step=batch * accum if batch else None,
        efficiency=e,
        efficiency_lo=lo,
        efficiency_hi=hi,
    )


def _strong_fixed(compute: Sequence[float], measured: Sequence[Measured]) -> Range:
    """The per-step cost that does not shrink with N, from the compute-only steps measured at
    several N of a strong-scaling curve: compute(N) = fixed + per-sample part / N."""
    xs = [1.0]
    ys = [float(np.median(compute))]
    for m in measured:
        if m.compute_step_s:
            xs.append(1.0 / m.gpus)
            ys.append(float(np.median(m.compute_step_s)))
    if len(xs) < 2:
        return Range(0.0, 0.0, 0.0, "no compute step measured at N > 1: assumed all of it "
                     "shrinks with N")  # fmt: skip
    _, intercept = np.polyfit(xs, ys, 1)
    fixed = float(min(max(intercept, 0.0), ys[0]))
    return Range(
        fixed,
        fixed,
        fixed,
        f"fitted: compute(N) = {1e3 * fixed:.2f} ms + {1e3 * (ys[0] - fixed):.2f} ms / N over "
        f"{len(xs)} measured N",
    )
