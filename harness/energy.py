"""What a point cost in energy: joules per training sample, from NVML. Pure functions.

NVML gives two ways to know a GPU's energy over the measured window:

- **counter** (preferred): ``nvmlDeviceGetTotalEnergyConsumption``, the board's own running
  total in millijoules since the driver loaded (Volta and newer). The sampler reads it with the
  other fields every ``interval_s``; the energy of the window is the counter interpolated
  linearly at the window's end minus the same at its start.
- **power_integral** (fallback, where a board has no counter): the sampled board power
  (``nvmlDeviceGetPowerUsage``) integrated over the window with the trapezoid rule, with the
  power interpolated at the edges. Coarser: it misses what happens between samples.

Either needs one sample at or before the window's start and one at or after its end for every
GPU (the sampler starts before the ranks and takes a last sample after they exit, so a normal
point has both). The ledger columns (``ENERGY_KEYS``) are then

- ``energy_j``: joules all the point's GPUs used during the window (sum over GPUs),
- ``energy_j_per_sample``: energy_j / training samples in the window (all ranks),
- ``samples_per_kwh``: samples per kilowatt-hour (3.6e6 J) -- the same figure upside down,
- ``power_w_mean_per_gpu``: energy_j / window seconds / GPUs,
- ``energy_method``: counter, power_integral, or counter+power_integral when GPUs differ,
- ``energy_unavailable_reason``: null when measured, else why the figures are null (no NVML,
  a CPU point, a failed point, samples that do not cover the window).

Only GPU board energy is counted: CPUs, memory, network and cooling are not in it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

#: The energy columns of a ledger row, all null when unavailable (with the reason).
ENERGY_KEYS = (
    "energy_j",
    "energy_j_per_sample",
    "samples_per_kwh",
    "power_w_mean_per_gpu",
    "energy_method",
    "energy_unavailable_reason",
)
#: The numeric ones (the analysis takes their medians over repeats).
NUMERIC_KEYS = ENERGY_KEYS[:4]
JOULES_PER_KWH = 3.6e6


def unavailable(reason: str) -> dict[str, Any]:
    """The energy columns of a point with no energy figures, saying why."""
    out: dict[str, Any] = dict.fromkeys(ENERGY_KEYS)
    out["energy_unavailable_reason"] = reason
    return out


def _at(points: Sequence[tuple[float, float]], t: float) -> float | None:
    """Linear interpolation of time-sorted (t, value) points at ``t``; None outside them."""
    if not points or t < points[0][0] or t > points[-1][0]:
        return None
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return points[-1][1] if t == points[-1][0] else None


def counter_energy_j(
    points: Sequence[tuple[float, float]], start: float, end: float
) -> float | None:
    """Joules between ``start`` and ``end`` from (t_unix, counter mJ) readings of one GPU.

    None when the readings do not bracket the window or the counter went backwards (a driver
    reload resets it): then the caller falls back to the power samples.
    """
    points = sorted(points)
    if any(b[1] < a[1] for a, b in itertools.pairwise(points)):
        return None
    e0, e1 = _at(points, start), _at(points, end)
    if e0 is None or e1 is None:
        return None
    return (e1 - e0) / 1000.0


def power_energy_j(points: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """Joules between ``start`` and ``end`` by the trapezoid rule over (t_unix, watts) samples.

    The power at the edges is interpolated, so a window between two samples still counts.
    None when the samples do not bracket the window.
    """
    points = sorted(points)
    p0, p1 = _at(points, start), _at(points, end)
    if p0 is None or p1 is None:
        return None
    inner = [(t, p) for t, p in points if start < t < end]
    curve = [(start, p0), *inner, (end, p1)]
    return sum((t1 - t0) * (a + b) / 2 for (t0, a), (t1, b) in itertools.pairwise(curve))


def summarise_energy(
    samples: Sequence[dict[str, Any]],
    window: tuple[float, float] | None,
    *,
    n_samples: float | None,
    available: bool = True,
    unavailable_reason: str | None = None,
) -> dict[str, Any]:
    """The ledger's energy columns for one point (see the module docstring).

    ``samples`` are the raw telemetry samples (one GPU each, keyed by ``gpu_uuid`` and, under
    SLURM, ``host``); ``window`` the measured window in unix seconds, None for a failed point;
    ``n_samples`` the training samples processed in the window across all ranks.
    """
    if not available:
        return unavailable(unavailable_reason or "no GPU telemetry for this point")
    if window is None:
        return unavailable("no measured window: the point did not finish ok")
    if not n_samples or not math.isfinite(n_samples) or n_samples <= 0:
        return unavailable("no training samples counted in the measured window")
    start, end = window
    if end <= start:
        return unavailable("the measured window has no duration")
    by_gpu: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for s in samples:
        by_gpu.setdefault((s.get("host"), s.get("gpu_uuid")), []).append(s)
    if not by_gpu:
        return unavailable("no telemetry samples were taken")
    total_j, methods = 0.0, set()
    for (host, uuid), rows in sorted(by_gpu.items(), key=lambda kv: str(kv[0])):
        counter = [
            (s["t_unix"], float(s["energy_mj"])) for s in rows if _finite(s.get("energy_mj"))
        ]
        joules = counter_energy_j(counter, start, end)
        method = "counter"
        if joules is None:
            power = [(s["t_unix"], float(s["power_w"])) for s in rows if _finite(s.get("power_w"))]
            joules, method = power_energy_j(power, start, end), "power_integral"
        if joules is None:
            where = f"{host}:{uuid}" if host else str(uuid)
            return unavailable(
                f"GPU {where}: neither its energy counter nor its power samples cover the "
                f"measured window"
            )
        total_j += joules
        methods.add(method)
    n_gpus = len(by_gpu)
    return {
        "energy_j": total_j,
        "energy_j_per_sample": total_j / n_samples,
        "samples_per_kwh": n_samples * JOULES_PER_KWH / total_j if total_j > 0 else None,
        "power_w_mean_per_gpu": total_j / (end - start) / n_gpus,
        "energy_method": "+".join(sorted(methods)),
        "energy_unavailable_reason": None,
    }


def window_samples(record: dict[str, Any] | None) -> float | None:
    """Training samples in the measured window (all ranks), from a record's metrics.

    samples/s is defined as those samples over the window's seconds, so their product is the
    count (the same count the throughput uses; a short last batch of an epoch included).
    """
    metrics = (record or {}).get("metrics") or {}
    rate, seconds = metrics.get("samples_per_s"), metrics.get("measured_time_s")
    if _finite(rate) and _finite(seconds):
        return float(rate) * float(seconds)
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
