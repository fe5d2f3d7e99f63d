"""Peak memory against per-device batch: a linear model of finished points. Pure pandas/numpy.

Training memory on one device is a **fixed** part (weights, gradients, optimizer state, the
allocator's workspaces) plus a part **per sample** of the micro-batch (the activations kept
for the backward pass, which grow linearly with the batch at a given sequence length). So for
each group of points sharing model, precision, sequence policy, max_length, compile, device
and GPU count, :func:`fit_memory` fits

    peak_gib = fixed_gib + per_sample_gib × per_device_batch

by least squares over the ok runs' ``mem_peak_gib`` (the peak memory torch allocated on the
device during the measured window; CUDA only -- CPU points have none, so CPU sweeps get no
model). A group needs two different batch sizes; ``max_residual_gib`` says how well the line
holds. Settings outside the group (DDP knobs, NCCL) are pooled: they move memory little.

Before launching a point the sweep asks :func:`oom_reason`: when the group's line predicts a
peak above the device's memory, or the max-batch search already saw a batch this large run out
of memory, the point is skipped with the reason ("predicted OOM: 97.0 GiB > 79.6 GiB") instead
of spending a launch to learn it (``--no-predict-oom`` turns this off). Where memory is linear
in the batch (this model's premise) and measured without noise, it skips exactly the batches
whose allocated peak exceeds the device's memory and never one that fits
(tests/unit/test_memory_model.py). It can still err both ways: the allocated peak is below
what the device really uses (the CUDA context and fragmentation come on top), so a point
predicted to fit may run out of memory (it is launched and recorded as oom); and a line fitted
to noisy peaks, or a max-batch OOM that was transient, can over-predict and skip a point that
would have fit (``--no-predict-oom`` launches it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: A memory model is per value of these columns (ledger config columns).
GROUP_COLUMNS = (
    "device",
    "model",
    "precision",
    "seq_policy",
    "max_length",
    "compile",
    "world_size",
)
METRIC = "mem_peak_gib"
FIT_COLUMNS = (
    *GROUP_COLUMNS,
    "fixed_gib",
    "per_sample_gib",
    "n_runs",
    "batch_min",
    "batch_max",
    "max_residual_gib",
)


def fit_memory(frame: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """One row per group with at least two batch sizes: the fitted line (FIT_COLUMNS)."""
    needed = {*GROUP_COLUMNS, "per_device_batch", "status", metric}
    if frame.empty or not needed <= set(frame.columns):
        return pd.DataFrame(columns=FIT_COLUMNS)
    ok = frame[frame["status"] == "ok"].copy()
    ok["_x"] = pd.to_numeric(ok["per_device_batch"], errors="coerce")
    ok["_y"] = pd.to_numeric(ok[metric], errors="coerce")
    ok = ok[np.isfinite(ok["_x"]) & np.isfinite(ok["_y"])]
    rows = []
    for key, group in ok.groupby(list(GROUP_COLUMNS), sort=True, dropna=False):
        x, y = group["_x"].to_numpy(float), group["_y"].to_numpy(float)
        if len(np.unique(x)) < 2:
            continue  # one batch size: a line through one point is no model
        slope, intercept = np.polyfit(x, y, 1)
        residual = y - (intercept + slope * x)
        rows.append(
            {
                **dict(zip(GROUP_COLUMNS, key, strict=True)),
                "fixed_gib": float(intercept),
                "per_sample_gib": float(slope),
                "n_runs": len(group),
                "batch_min": float(x.min()),
                "batch_max": float(x.max()),
                "max_residual_gib": float(np.abs(residual).max()),
            }
        )
    return pd.DataFrame(rows, columns=FIT_COLUMNS)


def predict_gib(fits: pd.DataFrame, config: dict[str, Any]) -> float | None:
    """The predicted peak of a configuration (ledger config columns), or None without a model.

    A line whose per-sample slope is not positive (noise across equal memory) predicts nothing:
    extrapolating it would promise that larger batches need less memory.
    """
    if fits.empty:
        return None
    match = np.ones(len(fits), dtype=bool)
    for col in GROUP_COLUMNS:
        match &= fits[col].map(lambda v, c=col: _same(v, config.get(c))).to_numpy(bool)
    hits = fits[match]
    if hits.empty:
        return None
    fit = hits.iloc[0]
    if not fit["per_sample_gib"] > 0:
        return None
    return float(fit["fixed_gib"] + fit["per_sample_gib"] * float(config["per_device_batch"]))


def fits_within(fit: pd.Series | dict[str, Any], capacity_gib: float | None) -> int | None:
    """The largest batch a :func:`fit_memory` line says fits in ``capacity_gib`` (None: unknown
    capacity or no per-sample slope)."""
    if capacity_gib is None or not fit["per_sample_gib"] > 0:
        return None
    room = (capacity_gib - fit["fixed_gib"]) / fit["per_sample_gib"]
    return max(0, math.floor(room)) if np.isfinite(room) else None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def device_capacity_gib(env: dict[str, Any] | None) -> float | None:
    """The smallest GPU memory (GiB) in a sweep's env.json, or None without GPUs."""
    sizes = [
        g.get("memory_total_gib")
        for g in (env or {}).get("gpus") or []
        if isinstance(g, dict) and isinstance(g.get("memory_total_gib"), (int, float))
    ]
    return float(min(sizes)) if sizes else None


def oom_reason(
    config: dict[str, Any],
    *,
    rows: Sequence[dict[str, Any]],
    searches: Sequence[dict[str, Any]] = (),
    capacity_gib: float | None,
) -> str | None:
    """Why a CUDA point would run out of memory (one line), or None when nothing says so.

    ``config`` holds the point's ledger config columns; ``rows`` the finished runs (ledger and
    max-batch trials); ``searches`` the max_batch.jsonl rows.
    """
    if config.get("device") != "cuda":
        return None
    batch = config["per_device_batch"]
    for s in searches:
        oom = s.get("smallest_batch_oom")
        if isinstance(oom, int) and batch >= oom and _same_group(s, config):
            return (
                f"predicted OOM: batch {batch} >= {oom}, which ran out of memory in the "
                "max-batch search"
            )
    if capacity_gib is None or not rows:
        return None
    frame = pd.DataFrame.from_records(list(rows))
    predicted = predict_gib(fit_memory(frame), config)
    if predicted is not None and math.isfinite(predicted) and predicted > capacity_gib:
        return f"predicted OOM: {predicted:.1f} GiB > {capacity_gib:.1f} GiB"
    return None


def _same_group(search_row: dict[str, Any], config: dict[str, Any]) -> bool:
    """Same configuration apart from the batch (a search row has no per-device batch)."""
    skip = {"per_device_batch", "global_batch", "warmup_steps", "measured_steps"}
    keys = [k for k in config if k not in skip]
    return all(_same(search_row.get(k), config.get(k)) for k in keys)
