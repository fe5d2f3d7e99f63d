"""``distrinews-bench project``: scaling predictions from a sweep or from plain numbers.

Two ways in:

- **from a sweep** (:func:`sweep_inputs`): for every weak-scaling curve of a results folder,
  the compute-only step time and its spread at N = 1, the gradient's DDP buckets, the
  all-reduce bus bandwidth and the exposed communication measured at each N > 1;
- **from flags** (:func:`pure_inputs`): a step time, gradient size, bucket size and overlap of
  any model, so the model can be held against someone else's published scaling table.

:func:`project` turns inputs into one row per (curve, GPU count) with the step time, samples/s,
speedup and efficiency, each with a 95% interval carried from the spread of the measured inputs
(bootstrap draws of the inputs pushed through :mod:`harness.projection`). Wherever the sweep
measured an N, the row also holds the measured efficiency and the error in percentage points,
and that prediction used only points with fewer GPUs than N (no peeking).

The model itself is in :mod:`harness.projection`; the interconnect table in
:mod:`harness.fabrics`. This module only gathers inputs, runs the model and formats.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distrinews.errors import UserError
from distrinews.layout import RECORD_JSON
from harness import analysis, fmt, store
from harness.fabrics import DEFAULT_FABRIC, Fabric, fabric_from_busbw, resolve_fabric
from harness.projection import (
    DEFAULT_HIDE_SHARE,
    MIB,
    Network,
    StepModel,
    ddp_buckets,
    exposed_comm_s,
    fit_hide_share,
    fit_latency_bandwidth,
    hook_wire_share,
    order_spread,
    powersgd_share,
    predict_steps,
    ready_fractions,
    robust_cv,
    split_buckets,
)

DEFAULT_HIDE_NOTE = "default 2/3 (backward = 2x forward)"
DEFAULT_GPUS = (8, 16, 32, 64, 128, 256, 512, 1024)
#: Bootstrap draws per input: enough for a stable 95% percentile interval of a smooth
#: function of medians, few enough to project a 1,000-point sweep in about a second.
N_BOOT = 400
LEVEL = 0.95


# -- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """What the sweep measured at one GPU count N > 1 of a curve (per ok repeat)."""

    gpus: int
    nodes: int
    busbw_gbps: tuple[float, ...] = ()
    exposed_comm_s: tuple[float, ...] = ()
    straggler_wait_s: tuple[float, ...] = ()
    bucket_times: tuple[tuple[float, float], ...] = ()
    """(bytes, seconds) of all-reduces of DDP's buckets at this N (record.json ``buckets``)."""
    efficiency: float | None = None
    efficiency_lo: float | None = None
    efficiency_hi: float | None = None


@dataclass(frozen=True)
class CurveInputs:
    """Everything the model needs for one configuration, with where each value came from."""

    compute_step_s: tuple[float, ...]
    """Samples of the compute-only step time (their median is the point estimate)."""
    bucket_bytes: tuple[float, ...]
    """Dense gradient bytes per DDP bucket, bucket 0 first ready in backward."""
    grad_accum: int = 1
    comm_hook: str = "none"
    wire_share: float = 1.0
    """Bytes on the wire over the dense bytes (the communication hook)."""
    collectives_per_bucket: int = 1
    jitter_share: float = 0.0
    hide_share: float = DEFAULT_HIDE_SHARE
    """Used until a measured overlap replaces it (see harness.projection.fit_hide_share)."""
    samples_per_step: float | None = None
    """Samples one GPU processes per optimizer step (per-device batch x accumulation)."""
    measured: tuple[Measured, ...] = ()
    curve_id: str | None = None
    curve: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def _finite(name: str, value: float, *, positive: bool = False, at_most: float | None = None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{name} = {value!r} is not allowed; expected a finite number")
    if value < 0 or (positive and value == 0):
        raise UserError(f"{name} = {value!r} is not allowed; expected a number > 0")
    if at_most is not None and value > at_most:
        raise UserError(f"{name} = {value!r} is not allowed; expected a number <= {at_most:g}")
    return float(value)


def parse_numbers(option: str, text: str, *, positive: bool = True) -> list[float]:
    """``"1.5,2,2.5"`` -> floats; a non-number, nan, inf or a negative is one-line bad input."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise UserError(f"{option} {text!r}: {part!r} is not a number") from None
        out.append(_finite(option, value, positive=positive))
    return out


def parse_gpus(text: str, gpus_per_node: int) -> tuple[int, ...]:
    """``8,16,32`` or ``8,16,...,1024`` (the ratio of the two values before ``...`` continues).

    Past one node every count must fill whole nodes: a multiple of ``gpus_per_node``.
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    values: list[int] = []
    for i, part in enumerate(parts):
        if part == "...":
            if len(values) < 2 or i + 1 >= len(parts) or values[-1] <= values[-2]:
                raise UserError(
                    f"--gpus {text!r}: '...' needs two rising counts before it and an end after"
                )
            continue
        if not part.isdigit() or int(part) < 1:
            raise UserError(f"--gpus {text!r}: {part!r} is not a GPU count (an integer >= 1)")
        n = int(part)
        if i > 0 and parts[i - 1] == "...":
            ratio = values[-1] / values[-2]
            nxt = values[-1] * ratio
            while nxt < n:
                values.append(round(nxt))
                nxt *= ratio
        values.append(n)
    if not values:
        raise UserError(f"--gpus {text!r}: give at least one GPU count")
    if any(v > 1_000_000 for v in values):
        raise UserError(f"--gpus {text!r}: at most 1,000,000 GPUs")
    for n in values:
        if n > gpus_per_node and n % gpus_per_node:
            raise UserError(
                f"--gpus: {n} GPUs is more than one node of {gpus_per_node} but not a multiple "
                f"of --gpus-per-node {gpus_per_node}"
            )
    return tuple(sorted(set(values)))


def fabric_for(name: str | None, busbw: str | None) -> Fabric:
    """--fabric (default dgx-h100) with --busbw-gbps INTRA[,INTER] replacing its bandwidths."""
    fabric = resolve_fabric(name or DEFAULT_FABRIC)
    if busbw is None:
        return fabric
    values = parse_numbers("--busbw-gbps", busbw)
    if len(values) > 2:
        raise UserError(f"--busbw-gbps {busbw!r}: give INTRA or INTRA,INTER (GB/s)")
    return fabric_from_busbw(values[0], values[1] if len(values) == 2 else None, fabric)


def pure_inputs(
    *,
    step_time_ms: str,
    grad_mb: float,
    bucket_mb: str = "25",
    overlap: float | None = None,
    grad_accum: int = 1,
    comm_hook: str = "none",
    powersgd_rank: int = 1,
    matrix_dim: int = 768,
    jitter: float = 0.0,
    per_device_batch: int | None = None,
) -> CurveInputs:
    """Inputs from plain numbers (no sweep).

    ``step_time_ms`` is one compute-only step time, or several (repeats: they give the
    interval). ``bucket_mb`` is DDP's bucket cap in MiB, or the bucket sizes themselves in DDP
    order (``"24,25,25,90"``: the last is produced last in backward). ``overlap`` is the share
    of the compute step that backward spans and all-reduces can hide behind. PowerSGD treats
    the gradient as square ``matrix_dim`` x ``matrix_dim`` matrices.
    """
    steps = parse_numbers("--step-time-ms", step_time_ms)
    grad_bytes = _finite("--grad-mb", grad_mb, positive=True) * MIB
    sizes = parse_numbers("--bucket-mb", bucket_mb)
    if len(sizes) == 1:
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
    hide = DEFAULT_HIDE_SHARE if overlap is None else _finite("--overlap", overlap, at_most=1.0)
    _finite("--jitter", jitter, at_most=1.0)
    share = 1.0
    if comm_hook == "powersgd":
        share = powersgd_share([(matrix_dim, matrix_dim)], powersgd_rank)
    wire = hook_wire_share(comm_hook, powersgd=share)
    return CurveInputs(
        compute_step_s=tuple(s / 1000.0 for s in steps),
        bucket_bytes=tuple(buckets),
        grad_accum=grad_accum,
        comm_hook=comm_hook,
        wire_share=wire,
        collectives_per_bucket=2 if comm_hook == "powersgd" else 1,
        jitter_share=jitter,
        hide_share=hide,
        samples_per_step=float(per_device_batch * grad_accum) if per_device_batch else None,
        sources={
            "compute_step": "--step-time-ms",
            "buckets": bucket_source,
            "hide_share": "--overlap" if overlap is not None else DEFAULT_HIDE_NOTE,
            "jitter": "--jitter",
        },
    )


# -- inputs from a sweep ---------------------------------------------------------------------


def _values(rows: Sequence[dict[str, Any]], column: str) -> tuple[float, ...]:
    """The finite numbers of ``column`` over ``rows`` (ledger rows as dicts)."""
    out = []
    for row in rows:
        v = row.get(column)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return tuple(out)


def _record(sweep_dir: Path, point_dir: Any) -> dict[str, Any] | None:
    if not isinstance(point_dir, str) or not point_dir:
        return None
    return store.read_json(Path(sweep_dir) / point_dir / RECORD_JSON)


def _step_lists(record: dict[str, Any] | None, key: str) -> list[float]:
    """Per-step times pooled over ranks from a record's list of per-rank lists."""
    lists = (record or {}).get(key)
    if not isinstance(lists, list):
        return []
    out = []
    for per_rank in lists:
        if isinstance(per_rank, list):
            out.extend(
                float(v)
                for v in per_rank
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            )
    return out


def _record_buckets(record: dict[str, Any] | None) -> list[float]:
    buckets = (record or {}).get("buckets")
    if not isinstance(buckets, list):
        return []
    out = []
    for b in buckets:
        size = b.get("bytes") if isinstance(b, dict) else None
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not size > 0:
            return []
        out.append(float(size))
    return out


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


def sweep_inputs(sweep_dir: Path) -> tuple[list[CurveInputs], list[str]]:
    """One CurveInputs per weak-scaling curve with an N = 1 point, and notes for the reader.

    Planted-fault points (``fault`` other than none) are left out: they exist to test the
    attribution, not to describe the configuration.
    """
    sweep_dir = Path(sweep_dir)
    frame = analysis.load_frame(sweep_dir)
    notes: list[str] = []
    if frame.empty:
        raise UserError(f"{sweep_dir}: the ledger has no rows; run a sweep first")
    if "fault" in frame.columns:
        frame = frame[frame["fault"].isna() | frame["fault"].isin(["none", ""])]
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        raise UserError(f"{sweep_dir}: no ok point to project from")
    strong = ok[ok["scaling_mode"] == "strong"]
    if not strong.empty:
        notes.append(
            f"{strong['config_key'].nunique()} strong-scaling point(s) not projected: the "
            "model keeps each GPU's batch (weak scaling)"
        )
    weak = ok[ok["scaling_mode"] == "weak"].copy()
    keys = list(analysis.curve_columns("weak"))
    weak["_curve"] = analysis.row_keys(weak, keys).to_numpy()
    curves = analysis.scaling(weak, n_boot=N_BOOT) if len(weak) else pd.DataFrame()
    eff: dict[str, tuple[float | None, ...]] = {}
    for r in curves.to_dict("records") if len(curves) else ():
        eff[r["config_key"]] = tuple(
            _finite_or_none(r[k]) for k in ("efficiency", "efficiency_lo", "efficiency_hi")
        )
    label_cols = fmt.label_columns(weak, keys)
    by_curve: dict[str, list[dict[str, Any]]] = {}
    for row in weak.to_dict("records"):
        by_curve.setdefault(row["_curve"], []).append(row)
    out: list[CurveInputs] = []
    lacking = 0
    for curve_key in sorted(by_curve):
        part = by_curve[curve_key]
        base = [r for r in part if r["world_size"] == 1]
        if not base:
            lacking += 1
            continue
        first = base[0]
        config = {k: analysis.plain_value(first[k]) for k in keys}
        curve_id = analysis.config_digest({"scaling_mode": "weak", **config})
        label = f"weak: {fmt.point_label(first, label_cols)}" if label_cols else "weak"
        out.append(_curve_inputs(sweep_dir, part, base, config, curve_id, label, eff))
    if not out:
        raise UserError(
            f"{sweep_dir}: no weak-scaling curve has an ok N = 1 point; the projection starts "
            "from the compute step at one GPU (run the sweep with 1 GPU included)"
        )
    if lacking:
        notes.append(f"{lacking} curve(s) without an ok N = 1 point are not projected")
    return out, notes


def _curve_inputs(
    sweep_dir: Path,
    part: list[dict[str, Any]],
    base: list[dict[str, Any]],
    config: dict[str, Any],
    curve_id: str,
    label: str,
    eff: dict[str, tuple[float | None, ...]],
) -> CurveInputs:
    sources: dict[str, str] = {}
    base_records = [_record(sweep_dir, r.get("point_dir")) for r in base]
    # Compute-only step at N = 1: per-repeat medians when there are repeats, else the steps.
    compute = _values(base, "compute_step_time_s")
    per_step = [t for r in base_records for t in _step_lists(r, "compute_step_times_s")]
    what = "compute_step_time_s"
    if not per_step:
        per_step = [t for r in base_records for t in _step_lists(r, "step_times_s")]
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
    jitter = robust_cv(per_step)
    sources["jitter"] = (
        f"robust CV of {len(per_step)} N = 1 step times" if per_step else "none (no step times)"
    )
    # Buckets: DDP's own (record.json), else the gradient split by the cap, else the shapes.
    buckets: list[float] = []
    records = list(base_records)
    for r in (*base_records, *(_record(sweep_dir, r.get("point_dir")) for r in part)):
        records.append(r)
        buckets = _record_buckets(r)
        if buckets:
            sources["buckets"] = f"DDP buckets recorded by the worker ({len(buckets)})"
            break
    cap = float(config.get("ddp_bucket_cap_mb") or 25.0) * MIB
    hook = str(config.get("ddp_comm_hook") or "none")
    needs_shapes = hook == "powersgd" or not (buckets or _values(part, "grad_bytes"))
    # Building the shape imports transformers (seconds): only when nothing recorded says it.
    shapes = model_param_shapes(str(config.get("model"))) if needs_shapes else None
    if not buckets:
        grad = _values(part, "grad_bytes")
        if grad:
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
        if r["world_size"] > 1:
            by_n.setdefault(int(r["world_size"]), []).append(r)
    for n in sorted(by_n):
        at_n = by_n[n]
        busbw = _values(at_n, "allreduce_busbw_gbps")
        exposed = _values(at_n, "exposed_comm_s")
        if not exposed:
            share, total = _values(at_n, "overlap_share"), _values(at_n, "allreduce_time_s")
            if share and total and len(share) == len(total):
                exposed = tuple((1 - s) * t for s, t in zip(share, total, strict=True))
        timed = []
        for r in at_n:
            for b in (_record(sweep_dir, r.get("point_dir")) or {}).get("buckets") or []:
                size, t = (
                    (b.get("bytes"), b.get("allreduce_time_s")) if isinstance(b, dict) else (0, 0)
                )
                if _positive(size) and _positive(t):
                    timed.append((float(size), float(t)))
        e, lo, hi = eff.get(at_n[0]["config_key"], (None, None, None))
        measured.append(
            Measured(
                gpus=n,
                nodes=int(at_n[0]["nodes"]),
                busbw_gbps=busbw,
                exposed_comm_s=exposed,
                straggler_wait_s=_values(at_n, "straggler_wait_s"),
                bucket_times=tuple(timed),
                efficiency=e,
                efficiency_lo=lo,
                efficiency_hi=hi,
            )
        )
    grad_accum = int(config.get("grad_accum") or 1)
    batch = config.get("per_device_batch")
    return CurveInputs(
        compute_step_s=tuple(compute),
        bucket_bytes=tuple(buckets),
        grad_accum=grad_accum,
        comm_hook=hook,
        wire_share=hook_wire_share(hook, powersgd=psgd),
        collectives_per_bucket=2 if hook == "powersgd" else 1,
        jitter_share=jitter,
        samples_per_step=float(batch) * grad_accum if batch else None,
        measured=tuple(measured),
        curve_id=curve_id,
        curve=label,
        config=config,
        sources=sources,
    )


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _finite_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# -- projection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """The result: the rows, the inputs per curve (for the reader), and notes."""

    rows: list[dict[str, Any]]
    curves: list[dict[str, Any]]
    settings: dict[str, Any]
    notes: list[str]


def _draws_all(samples: Sequence[Sequence[float]], n_boot: int, seed: int) -> list[np.ndarray]:
    """Per sample, (1 + n_boot,) medians: the point estimate, then bootstrap medians (a sample
    of one value repeats it: no spread; an empty one gives NaN)."""
    if not samples:
        return []
    arrays = [np.asarray(s, dtype=float) for s in samples]
    boot = analysis.bootstrap_medians(arrays, n_boot=n_boot, seed=seed)
    first = np.array([np.median(a) if a.size else np.nan for a in arrays])
    return list(np.concatenate([first[:, None], boot], axis=1))


class _Bands:
    """Point estimates and 95% intervals of step time and efficiency for C stacked curves.

    ``step`` and ``eff`` are (C, D, G): draw 0 of each curve is its point estimate; the
    interval is the percentile interval of the other draws (None where they do not vary:
    inputs measured once carry no spread).
    """

    def __init__(self, step: np.ndarray, eff: np.ndarray) -> None:
        tail = (1 - LEVEL) / 2 * 100
        self.step, self.eff = step[:, 0], eff[:, 0]
        boot_step, boot_eff = step[:, 1:], eff[:, 1:]
        if boot_step.shape[1]:
            self.step_lo, self.step_hi = np.percentile(boot_step, [tail, 100 - tail], axis=1)
            self.eff_lo, self.eff_hi = np.percentile(boot_eff, [tail, 100 - tail], axis=1)
            self.varies = np.ptp(boot_eff, axis=1) > 0
        else:
            self.varies = np.zeros(self.step.shape, dtype=bool)

    def step_ci(self, k: int, j: int) -> tuple[float, float] | None:
        return (self.step_lo[k, j], self.step_hi[k, j]) if self.varies[k, j] else None

    def eff_ci(self, k: int, j: int) -> tuple[float, float] | None:
        return (self.eff_lo[k, j], self.eff_hi[k, j]) if self.varies[k, j] else None


def project(
    inputs: Sequence[CurveInputs],
    gpus: Sequence[int],
    fabric: Fabric,
    gpus_per_node: int,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    notes: Sequence[str] = (),
) -> Projection:
    """Predict every curve at ``gpus`` and at each N it measured (validation, no peeking).

    Curves that share a bucket layout and the same measured GPU counts are evaluated together
    (their bootstrap draws stacked), which is what keeps a 1,000-point sweep fast.
    """
    # All bootstrap draws at once (bootstrap_medians vectorises over samples of equal length).
    computes = _draws_all([inp.compute_step_s for inp in inputs], n_boot, seed)
    points = [(ci, m) for ci, inp in enumerate(inputs) for m in inp.measured]
    busbws = _draws_all([m.busbw_gbps for _, m in points], n_boot, seed + 1)
    exposeds = _draws_all([m.exposed_comm_s for _, m in points], n_boot, seed + 2)
    draws = {(ci, m.gpus): (b, e) for (ci, m), b, e in zip(points, busbws, exposeds, strict=True)}
    infos = [_curve_info(inp) for inp in inputs]
    rows: list[dict[str, Any]] = []
    groups: dict[tuple, list[int]] = {}
    plans: list[dict[int | None, list[int]]] = []
    for ci, inp in enumerate(inputs):
        measured = {m.gpus: m for m in inp.measured}
        targets = sorted(set(gpus) | set(measured))
        # Which measured point feeds the prediction at N: the largest single-node one below N
        # with a bandwidth (fewer GPUs than N only: a prediction never sees its own answer).
        feeds: dict[int | None, list[int]] = {}
        usable = sorted(m.gpus for m in inp.measured if m.nodes == 1 and m.busbw_gbps)
        for n in targets:
            below = [g for g in usable if g < n]
            feeds.setdefault(below[-1] if below else None, []).append(n)
        plans.append(feeds)
        for feed, ns in feeds.items():
            fits = feed is not None and bool(measured[feed].exposed_comm_s)
            # A latency fitted to this curve's own bucket timings cannot be stacked.
            alone = feed is not None and _latency_fit(measured[feed]) is not None
            key = (
                ci if alone else None,
                inp.bucket_bytes,
                inp.wire_share,
                inp.collectives_per_bucket,
                inp.grad_accum,
                inp.hide_share,
                feed,
                fits,
                tuple(ns),
            )
            groups.setdefault(key, []).append(ci)
    results: dict[tuple[int, int | None], tuple[Any, _Bands, dict[str, Any], int]] = {}
    for key, members in groups.items():
        feed, fits, ns = key[6], key[7], list(key[8])
        first = inputs[members[0]]
        compute = np.concatenate([computes[ci] for ci in members])
        jitter = np.concatenate(
            [np.full(len(computes[ci]), _jitter(inputs[ci], feed)) for ci in members]
        )
        busbw = exposed = None
        if feed is not None:
            busbw = np.concatenate([draws[(ci, feed)][0] for ci in members])
            if fits:
                exposed = np.concatenate([draws[(ci, feed)][1] for ci in members])
        lat = _latency_fit(next(m for m in first.measured if m.gpus == feed)) if feed else None
        model, used = _model_for(
            first, feed, compute, jitter, busbw, exposed, fabric, gpus_per_node, lat
        )
        pred = predict_steps(model, ns)
        d = len(computes[members[0]])
        step = pred.step_s.reshape(len(members), d, len(ns))
        bands = _Bands(step, compute.reshape(len(members), d, 1) / step)
        for k, ci in enumerate(members):
            mine = {
                name: (value[k * d] if isinstance(value, np.ndarray) else value)
                for name, value in used.items()
            }
            results[(ci, feed)] = (pred, bands, mine, k)
    for ci, inp in enumerate(inputs):
        measured = {m.gpus: m for m in inp.measured}
        for feed, ns in sorted(plans[ci].items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)):
            pred, bands, used, k = results[(ci, feed)]
            infos[ci]["fits"].append(_plain_used(used, feed, inp))
            for j, n in enumerate(ns):
                rows.append(_row(inp, n, gpus_per_node, pred, bands, k, j, measured.get(n), feed))
    rows.sort(key=lambda r: (r.get("curve") or "", r["gpus"]))
    settings = {
        "fabric": fabric.name,
        "intra_node": {
            "link": fabric.intra.name,
            "busbw_gbps": fabric.intra.busbw_gbps,
            "source": fabric.intra.source,
        },
        "inter_node": {
            "link": fabric.inter.name,
            "busbw_gbps": fabric.inter.busbw_gbps,
            "source": fabric.inter.source,
        },
        "gpus_per_node": gpus_per_node,
        "gpus": list(gpus),
        "interval": f"{LEVEL:.0%} bootstrap over the measured inputs ({n_boot} draws)",
    }
    return Projection(rows=rows, curves=infos, settings=settings, notes=list(notes))


def _plain_used(used: dict[str, Any], feed: int | None, inp: CurveInputs) -> dict[str, Any]:
    """One curve's fit facts as plain JSON values, with where each came from."""
    out: dict[str, Any] = {"fed_by_gpus": feed}
    out["intra_busbw_gbps"] = float(used["intra_busbw_gbps"])
    if feed is None:
        out["intra_busbw_source"] = used["intra_busbw_source"]
    else:
        m = next(x for x in inp.measured if x.gpus == feed)
        out["intra_busbw_source"] = f"measured at N = {feed} ({len(m.busbw_gbps)} run(s))"
        if "latency_s" in used:
            out["latency_s"] = float(used["latency_s"])
            out["intra_busbw_source"] = (
                f"fitted with a latency of {1e6 * out['latency_s']:.0f} µs per ring step to "
                f"{len(m.bucket_times)} bucket all-reduces at N = {feed}"
            )
    out["hide_share"] = float(used["hide_share"])
    out["jitter_share"] = _jitter(inp, feed)
    m = next((x for x in inp.measured if x.gpus == feed), None)
    out["jitter_source"] = (
        f"straggler wait measured at N = {feed}"
        if m is not None and m.straggler_wait_s
        else inp.sources.get("jitter", "")
    )
    if "exposed_comm_s" in used:
        out["exposed_comm_s"] = float(used["exposed_comm_s"])
        out["hide_share_source"] = f"fitted to the exposed all-reduce at N = {feed}"
        if bool(used.get("clamped")):
            out["hide_share_note"] = "measurement outside the model's range; clamped"
        out["sync_overhead_s"] = float(used.get("sync_overhead_s", 0.0))
    else:
        out["hide_share_source"] = inp.sources.get("hide_share", DEFAULT_HIDE_NOTE)
    return out


def _model_for(
    inp: CurveInputs,
    feed: int | None,
    compute: np.ndarray,
    jitter: np.ndarray,
    busbw: np.ndarray | None,
    exposed: np.ndarray | None,
    fabric: Fabric,
    gpus_per_node: int,
    latency: tuple[float, float] | None = None,
) -> tuple[StepModel, dict[str, Any]]:
    """The step model fed by the measured point ``feed`` (None: the fabric and defaults).

    Arrays are draws (of one or several stacked curves); the returned facts are arrays too.
    ``latency`` is (α s per step, busbw GB/s) fitted to the feed's bucket all-reduces: then the
    intra-node link is that line (latency growing with N) instead of the plain bandwidth.
    """
    hide = np.full(compute.shape, inp.hide_share)
    used: dict[str, Any] = {}
    overhead = np.zeros(compute.shape)
    if busbw is None:
        net = Network.from_fabric(fabric, gpus_per_node)
        used["intra_busbw_gbps"] = fabric.intra.busbw_gbps
        used["intra_busbw_source"] = f"fabric {fabric.intra.name}"
    else:
        net = Network.from_fabric(fabric, gpus_per_node, intra_busbw_gbps=busbw)
        used["intra_busbw_gbps"] = busbw
        if latency is not None:
            alpha, fitted = latency
            net = replace(
                net,
                intra_busbw_gbps=fitted,
                intra_ring_step_s=alpha,
                base_latency_s=0.0,
                intra_latency=True,
            )
            used["intra_busbw_gbps"] = fitted
            used["latency_s"] = alpha
        if exposed is not None and feed is not None:
            probe = StepModel(
                compute_s=compute,
                bucket_bytes=inp.bucket_bytes,
                wire_share=inp.wire_share,
                collectives_per_bucket=inp.collectives_per_bucket,
                grad_accum=inp.grad_accum,
                hide_share=hide,
                jitter_share=0.0,
                net=net,
            )
            times = _bucket_times(probe, feed)
            dense = np.asarray(inp.bucket_bytes, dtype=float)
            fractions = ready_fractions(dense)
            hide, clamped = fit_hide_share(
                times, compute, inp.grad_accum, exposed, fractions, inp.hide_share
            )
            # Exposure beyond what even no overlap gives: a cost of synchronising the
            # all-reduce model does not explain (hooks, copies, scheduling), carried as is.
            window = compute * hide / inp.grad_accum
            overhead = np.maximum(exposed - exposed_comm_s(times, window, fractions), 0.0)
            used["exposed_comm_s"] = exposed
            used["clamped"] = clamped
            used["sync_overhead_s"] = overhead
    used["hide_share"] = hide
    model = StepModel(
        compute_s=compute,
        bucket_bytes=inp.bucket_bytes,
        wire_share=inp.wire_share,
        collectives_per_bucket=inp.collectives_per_bucket,
        grad_accum=inp.grad_accum,
        hide_share=hide,
        jitter_share=jitter,
        net=net,
        sync_overhead_s=overhead,
    )
    return model, used


def _jitter(inp: CurveInputs, feed: int | None) -> float:
    """A rank's step-time CV: from the straggler wait measured at ``feed`` (how much the
    slowest of N ranks exceeded the typical one), else from the N = 1 step times."""
    m = next((x for x in inp.measured if x.gpus == feed), None)
    if m is None or not m.straggler_wait_s or not inp.compute_step_s:
        return inp.jitter_share
    spread = float(order_spread(m.gpus))
    return float(np.median(m.straggler_wait_s)) / spread / float(np.median(inp.compute_step_s))


def _latency_fit(m: Measured) -> tuple[float, float] | None:
    if not m.bucket_times:
        return None
    sizes, times = zip(*m.bucket_times, strict=True)
    return fit_latency_bandwidth(sizes, times, m.gpus)


def _bucket_times(model: StepModel, n: int) -> np.ndarray:
    """(D, K) all-reduce time per bucket at N GPUs, hooks included."""
    from harness.projection import allreduce_time_s

    dense = np.asarray(model.bucket_bytes, dtype=float)
    wire = dense * model.wire_share / model.collectives_per_bucket
    times, _ = allreduce_time_s(wire, np.array([n]), model.net)
    times = times[:, 0, :] * model.collectives_per_bucket
    return np.broadcast_to(times, (len(model.compute_s), times.shape[-1]))


def _row(
    inp: CurveInputs,
    n: int,
    gpus_per_node: int,
    pred: Any,
    bands: _Bands,
    k: int,
    j: int,
    measured: Measured | None,
    feed: int | None,
) -> dict[str, Any]:
    """One output row: curve ``k`` of the stacked prediction, GPU count ``j``."""
    row: dict[str, Any] = {}
    if inp.curve_id is not None:
        row["curve_id"] = inp.curve_id
        row["curve"] = inp.curve
        row.update(inp.config)
    nodes = 1 if n <= gpus_per_node else n // gpus_per_node
    step, eff = float(bands.step[k, j]), float(bands.eff[k, j])
    step_ci, eff_ci = bands.step_ci(k, j), bands.eff_ci(k, j)
    offset = k * (len(pred.step_s) // len(bands.step))  # this curve's draw 0
    per_step = inp.samples_per_step
    samples = n * per_step / step if per_step else None
    samples_ci = None
    if per_step and step_ci is not None:  # samples/s falls as the step grows: flip the ends
        samples_ci = [n * per_step / step_ci[1], n * per_step / step_ci[0]]
    tree = float(pred.tree_share[j])  # the same for every draw: bytes decide, not spread
    row.update(
        {
            "gpus": int(n),
            "nodes": int(nodes),
            "step_time_ms": step * 1e3,
            "step_time_ms_ci": _scaled(step_ci, 1e3),
            "samples_per_s": samples,
            "samples_per_s_ci": samples_ci,
            "speedup": n * eff,
            "speedup_ci": _scaled(eff_ci, n),
            "efficiency": eff,
            "efficiency_ci": _scaled(eff_ci, 1.0),
            "allreduce_ms": float(pred.allreduce_s[offset, j] * 1e3),
            "exposed_comm_ms": float(pred.exposed_comm_s[offset, j] * 1e3),
            "straggler_ms": float(pred.straggler_s[offset, j] * 1e3),
            "inter_node_algorithm": None if nodes == 1 else ("tree" if tree > 0.5 else "ring"),
            "fed_by_gpus": feed,
            "measured_efficiency": None,
            "measured_efficiency_ci": None,
            "error_pp": None,
        }
    )
    if measured is not None and measured.efficiency is not None:
        row["measured_efficiency"] = measured.efficiency
        if measured.efficiency_lo is not None and measured.efficiency_hi is not None:
            row["measured_efficiency_ci"] = [measured.efficiency_lo, measured.efficiency_hi]
        row["error_pp"] = (eff - measured.efficiency) * 100.0
    return row


def _scaled(ci: Sequence[float] | None, factor: float) -> list[float] | None:
    return None if ci is None else [float(ci[0]) * factor, float(ci[1]) * factor]


def _curve_info(inp: CurveInputs) -> dict[str, Any]:
    """The inputs of one curve as the reader should see them."""
    compute = np.asarray(inp.compute_step_s, dtype=float)
    return {
        "curve_id": inp.curve_id,
        "curve": inp.curve,
        "compute_step_time_ms": float(np.median(compute) * 1e3),
        "compute_samples": int(compute.size),
        "grad_bytes": float(sum(inp.bucket_bytes)),
        "bucket_bytes": [float(b) for b in inp.bucket_bytes],
        "last_bucket_share": float(inp.bucket_bytes[-1] / sum(inp.bucket_bytes))
        if inp.bucket_bytes
        else None,
        "comm_hook": inp.comm_hook,
        "wire_share": inp.wire_share,
        "grad_accum": inp.grad_accum,
        "jitter_share": inp.jitter_share,
        "samples_per_step_per_gpu": inp.samples_per_step,
        "measured_gpus": [m.gpus for m in inp.measured],
        "sources": dict(inp.sources),
        "fits": [],
    }


# -- formats ---------------------------------------------------------------------------------


def to_json(result: Projection) -> str:
    body = {
        "inputs": {**result.settings, "curves": result.curves},
        "predictions": result.rows,
        "notes": result.notes,
    }
    return json.dumps(_clean(body), indent=2, allow_nan=False) + "\n"


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


TABLE_COLUMNS = (
    "GPUs",
    "nodes",
    "step ms [95% CI]",
    "samples/s",
    "efficiency [95% CI]",
    "exposed comm ms",
    "measured",
    "error pp",
)


def table_rows(rows: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    out = []
    for r in rows:
        out.append(
            (
                f"{r['gpus']:,}",
                f"{r['nodes']:,}",
                fmt.ms_ci(r["step_time_ms"], r["step_time_ms_ci"]),
                "-" if r["samples_per_s"] is None else f"{r['samples_per_s']:,.0f}",
                fmt.pct_ci(r["efficiency"], r["efficiency_ci"]),
                fmt.ms_ci(r["exposed_comm_ms"]),
                fmt.pct_ci(r["measured_efficiency"])
                if r["measured_efficiency"] is not None
                else "",
                "" if r["error_pp"] is None else f"{r['error_pp']:+.1f}",
            )
        )
    return out


def input_lines(result: Projection, curve: dict[str, Any]) -> list[str]:
    """The model's inputs for one curve, one readable line each."""
    s = result.settings
    lines = [
        f"compute-only step {curve['compute_step_time_ms']:.2f} ms "
        f"({curve['sources'].get('compute_step', '')})",
        f"gradient {curve['grad_bytes'] / MIB:,.1f} MiB in {len(curve['bucket_bytes'])} bucket(s), "
        f"last bucket {100 * (curve['last_bucket_share'] or 0):.0f}% of the bytes "
        f"({curve['sources'].get('buckets', '')})",
        f"communication hook {curve['comm_hook']} (bytes on the wire x{curve['wire_share']:.3g}),"
        f" gradient accumulation {curve['grad_accum']}",
        f"step jitter {100 * curve['jitter_share']:.1f}% ({curve['sources'].get('jitter', '')})",
        f"intra-node: {s['intra_node']['link']} {s['intra_node']['busbw_gbps']:g} GB/s "
        f"({s['intra_node']['source']}); inter-node: {s['inter_node']['link']} "
        f"{s['inter_node']['busbw_gbps']:g} GB/s ({s['inter_node']['source']}); "
        f"{s['gpus_per_node']} GPUs per node",
    ]
    for fit in curve["fits"]:
        who = "fabric" if fit["fed_by_gpus"] is None else f"N = {fit['fed_by_gpus']}"
        lines.append(
            f"predictions fed by {who}: intra-node busbw {fit['intra_busbw_gbps']:.3g} GB/s "
            f"({fit['intra_busbw_source']}), hide window {100 * fit['hide_share']:.0f}% of the "
            f"compute step ({fit['hide_share_source']}), step jitter "
            f"{100 * fit['jitter_share']:.1f}% ({fit['jitter_source']})"
            + (f"; {fit['hide_share_note']}" if fit.get("hide_share_note") else "")
            + (
                f"; {1e3 * fit['sync_overhead_s']:.1f} ms per step of synchronising the "
                "all-reduce does not explain, carried unchanged"
                if fit.get("sync_overhead_s")
                else ""
            )
        )
    return lines


def to_text(result: Projection, *, markdown: bool = False) -> str:
    out: list[str] = []
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for r in result.rows:
        groups.setdefault(r.get("curve_id"), []).append(r)
    info = {c["curve_id"]: c for c in result.curves}
    for key, rows in groups.items():
        curve = info[key]
        title = curve["curve"] or "pure inputs"
        out.append(f"## {title}" if markdown else f"== {title} ==")
        out.append("")
        for line in input_lines(result, curve):
            out.append(f"- {line}" if markdown else f"  {line}")
        out.append("")
        body = table_rows(rows)
        if markdown:
            out.append("| " + " | ".join(TABLE_COLUMNS) + " |")
            out.append("|" + "|".join("---" for _ in TABLE_COLUMNS) + "|")
            out.extend("| " + " | ".join(r) + " |" for r in body)
        else:
            widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(TABLE_COLUMNS)]
            out.append("  ".join(c.rjust(w) for c, w in zip(TABLE_COLUMNS, widths, strict=True)))
            out.extend("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in body)
        out.append("")
    out.append(
        "efficiency = compute-only step / predicted step (weak scaling); 'measured' and "
        "'error pp' where the sweep ran that N, predicted from fewer GPUs only."
    )
    for note in result.notes:
        out.append(f"note: {note}")
    return "\n".join(out) + "\n"


def render(result: Projection, fmt: str) -> str:
    if fmt == "json":
        return to_json(result)
    return to_text(result, markdown=fmt == "markdown")


def run_project(
    results_dir: Path | None,
    *,
    gpus: str | None,
    gpus_per_node: int,
    fabric: str | None,
    busbw_gbps: str | None,
    pure: dict[str, Any] | None,
    n_boot: int = N_BOOT,
) -> Projection:
    """What the command does, minus writing: inputs, then the projection."""
    targets = parse_gpus(gpus, gpus_per_node) if gpus else DEFAULT_GPUS
    for n in targets:
        if n > gpus_per_node and n % gpus_per_node:  # the default list vs. an odd node size
            raise UserError(
                f"GPU count {n} is not a multiple of --gpus-per-node {gpus_per_node}; pass --gpus"
            )
    fab = fabric_for(fabric, busbw_gbps)
    if pure is not None:
        inputs, notes = [pure_inputs(**pure)], []
    else:
        assert results_dir is not None
        inputs, notes = sweep_inputs(results_dir)
        if busbw_gbps is not None:
            # An explicit intra-node bandwidth outranks a measured one (the measured exposure
            # still fits the hide window, at the flag's bandwidth).
            flag = (fab.intra.busbw_gbps,)
            inputs = [
                replace(i, measured=tuple(replace(m, busbw_gbps=flag) for m in i.measured))
                for i in inputs
            ]
            notes.append("--busbw-gbps given: it replaces the measured all-reduce bandwidths")
    return project(inputs, targets, fab, gpus_per_node, n_boot=n_boot, notes=notes)
