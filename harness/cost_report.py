"""The report's cost sections: energy per sample, the memory model, the largest batch that fits.

Pure builders like the rest of :mod:`harness.report` (frames in, :class:`~harness.report.Section`
out); :func:`cost_sections` is what ``build_report`` calls. Each section appears only when the
sweep has the data for it: energy needs NVML telemetry, the memory model peak-memory readings
(CUDA) at two batch sizes or more, the largest-batch table a max-batch search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from harness import memory_model
from harness import report as R

ENERGY = "energy_j_per_sample"


def cost_sections(
    summary: pd.DataFrame,
    curves: pd.DataFrame,
    labels: dict[str, str],
    *,
    env: dict[str, Any] | None,
    memory_frame: pd.DataFrame,
    searches: Sequence[dict[str, Any]] = (),
) -> list[R.Section]:
    """Energy (after the scaling curves), memory model and largest batch, where supported.

    ``memory_frame`` holds every finished run with a peak-memory reading (the ledger plus the
    max-batch trials); ``searches`` the max_batch.jsonl rows.
    """
    out = []
    capacity = memory_model.device_capacity_gib(env)
    if ENERGY in summary.columns and summary[ENERGY].notna().any():
        out.append(energy_section(summary, curves, labels))
    memory = memory_section(memory_frame, capacity)
    if memory is not None:
        out.append(memory)
    if searches:
        out.append(max_batch_section(searches))
    return out


# -- energy ----------------------------------------------------------------------------------


def energy_lines(summary: pd.DataFrame, curves: pd.DataFrame, labels: dict[str, str]) -> list:
    """(name, rows sorted by GPU count) per scaling curve with energy; lone points by label."""
    ok = summary[summary[ENERGY].notna()]
    on_curve = curves[["config_key", "curve_id", "curve"]].drop_duplicates("config_key")
    merged = ok.merge(on_curve, on="config_key", how="left")
    merged["curve"] = merged["curve"].fillna(merged["config_key"].map(labels)).fillna("")
    merged["curve_id"] = merged["curve_id"].fillna(merged["config_key"])
    lines = [
        (str(group["curve"].iloc[0]), group.sort_values("world_size"))
        for _, group in merged.groupby("curve_id", sort=True)
    ]
    lines.sort(key=lambda kv: kv[1][ENERGY].iloc[-1])
    return lines[: R.MAX_CURVES]


def energy_sentence(name: str, line: pd.DataFrame) -> str | None:
    """'going from 1 to 8 GPUs costs 9% more energy per sample' for one curve (None: one N)."""
    if len(line) < 2:
        return None
    first, last = line.iloc[0], line.iloc[-1]
    change = last[ENERGY] / first[ENERGY] - 1.0
    n0, n1 = R._num(first["world_size"]), R._num(last["world_size"])
    if abs(change) < 0.005:
        verdict = "costs the same energy per sample"
    else:
        verdict = f"costs {abs(change):.0%} {'more' if change > 0 else 'less'} energy per sample"
    return (
        f"{name}: going from {n0} to {n1} GPUs {verdict} "
        f"({first[ENERGY]:.3g} J -> {last[ENERGY]:.3g} J)."
    )


def fig_energy(lines: list) -> go.Figure | None:
    """Joules per sample against GPU count, one line per curve (precision, batch, ...)."""
    if not lines:
        return None
    fig = go.Figure()
    sizes = []
    for i, (name, line) in enumerate(lines):
        sizes.extend(line["world_size"])
        fig.add_trace(
            go.Scatter(
                x=line["world_size"],
                y=line[ENERGY],
                mode="lines+markers",
                name=name,
                line={"color": R.PALETTE[i % len(R.PALETTE)]},
                hovertemplate="N=%{x}<br>%{y:.4g} J/sample<extra>%{fullData.name}</extra>",
            )
        )
    return R._layout(
        fig,
        "Energy per training sample vs GPU count (GPU boards only; lower is cheaper)",
        xaxis=R._ws_axis(sizes),
        yaxis={"title": "J per sample (median)", "rangemode": "tozero"},
    )


def energy_section(
    summary: pd.DataFrame, curves: pd.DataFrame, labels: dict[str, str]
) -> R.Section:
    lines = energy_lines(summary, curves, labels)
    sentences = [s for name, line in lines if (s := energy_sentence(name, line))]
    rows, sort_values = [], []
    for name, line in lines:
        for r in line.to_dict("records"):
            rows.append(
                (
                    name,
                    R._num(r["world_size"]),
                    f"{r[ENERGY]:.4g}",
                    R._num(r.get("samples_per_kwh"), 0),
                    R._num(r.get("power_w_mean_per_gpu")),
                )
            )
            sort_values.append(
                (
                    name,
                    r["world_size"],
                    r[ENERGY],
                    r.get("samples_per_kwh"),
                    r.get("power_w_mean_per_gpu"),
                )
            )
    table = R.Table(
        columns=("configuration", "GPUs", "J/sample", "samples/kWh", "W per GPU"),
        rows=tuple(rows),
        sort_values=tuple(sort_values),
        sortable=True,
    )
    intro = (" ".join(sentences[:3]) + " " if sentences else "") + (
        "Energy is the GPUs' own energy counter (NVML total energy) read at the measured "
        "window's edges, or their sampled power integrated where a board has no counter; "
        "CPU, network and cooling are not in it. Beside the efficiency curve: a curve that "
        "scales at 90% spends about 1/0.9 the energy per sample."
    )
    fig = fig_energy(lines)
    return R.Section(
        id="energy",
        title="Energy per sample",
        intro=intro,
        figures=(fig,) if fig is not None else (),
        tables=(table,),
    )


# -- the memory model ------------------------------------------------------------------------


def group_label(row: dict[str, Any] | pd.Series) -> str:
    """``base bf16 fixed@128 x8 cuda`` -- a memory-model group (or a searched configuration)."""
    compiled = " compile" if bool(row.get("compile")) else ""
    return (
        f"{row.get('model')} {row.get('precision')} {row.get('seq_policy')}@"
        f"{R._num(row.get('max_length'))} x{R._num(row.get('world_size'))} "
        f"{row.get('device')}{compiled}"
    )


def fits_within(fit: pd.Series | dict[str, Any], capacity_gib: float | None) -> int | None:
    """The largest batch the line says fits in ``capacity_gib`` (None: unknown or no slope)."""
    if capacity_gib is None or not fit["per_sample_gib"] > 0:
        return None
    room = (capacity_gib - fit["fixed_gib"]) / fit["per_sample_gib"]
    return max(0, math.floor(room)) if np.isfinite(room) else None


def fig_memory(frame: pd.DataFrame, fits: pd.DataFrame, capacity_gib: float | None) -> go.Figure:
    """Measured peaks (markers) and the fitted lines, against the device's memory."""
    fig = go.Figure()
    ok = frame[(frame["status"] == "ok") & frame[memory_model.METRIC].notna()]
    x_max = 1.0
    for i, fit in enumerate(fits.head(R.MAX_CURVES).to_dict("records")):
        color = R.PALETTE[i % len(R.PALETTE)]
        name = group_label(fit)
        mask = np.ones(len(ok), dtype=bool)
        for col in memory_model.GROUP_COLUMNS:
            mask &= (ok[col].astype(str) == str(fit[col])).to_numpy()
        points = ok[mask]
        top = fits_within(fit, capacity_gib) or 0
        end = max(fit["batch_max"], min(top, 4 * fit["batch_max"]))
        x_max = max(x_max, end)
        fig.add_trace(
            go.Scatter(
                x=points["per_device_batch"],
                y=points[memory_model.METRIC],
                mode="markers",
                name=name,
                legendgroup=name,
                marker={"color": color},
                hovertemplate="batch %{x}<br>%{y:.2f} GiB<extra>%{fullData.name}</extra>",
            )
        )
        xs = np.array([0.0, end])
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=fit["fixed_gib"] + fit["per_sample_gib"] * xs,
                mode="lines",
                name=f"{name} (fit)",
                legendgroup=name,
                showlegend=False,
                line={"color": color, "dash": "dot"},
                hoverinfo="skip",
            )
        )
    if capacity_gib is not None:
        fig.add_hline(
            y=capacity_gib,
            line={"color": "#d62728", "dash": "dash", "width": 1},
            annotation_text=f"device memory {capacity_gib:.1f} GiB",
            annotation_position="top left",
        )
    return R._layout(
        fig,
        "Peak memory vs per-device batch (dotted: fixed + per-sample fit)",
        xaxis={"title": "per-device batch", "range": [0, x_max * 1.05]},
        yaxis={"title": "peak allocated memory per GPU (GiB)", "rangemode": "tozero"},
    )


def memory_section(frame: pd.DataFrame, capacity_gib: float | None) -> R.Section | None:
    fits = memory_model.fit_memory(frame)
    if fits.empty:
        return None
    rows = tuple(
        (
            group_label(f),
            f"{f['fixed_gib']:.2f}",
            f"{f['per_sample_gib'] * 1024:.1f}",
            R._num(f["n_runs"]),
            f"{R._num(f['batch_min'])}-{R._num(f['batch_max'])}",
            f"{f['max_residual_gib']:.2f}",
            R._num(fits_within(f, capacity_gib)),
        )
        for f in fits.to_dict("records")
    )
    table = R.Table(
        columns=(
            "group",
            "fixed GiB",
            "MiB per sample",
            "runs",
            "batches measured",
            "max residual GiB",
            "largest batch predicted to fit",
        ),
        rows=rows,
    )
    where = (
        f"the device's {capacity_gib:.1f} GiB" if capacity_gib is not None else "no known capacity"
    )
    intro = (
        "Peak allocated memory per GPU = fixed (weights, gradients, optimizer state) + per "
        "sample (activations kept for backward), a least-squares line per model, precision, "
        f"sequence policy, length, compile and GPU count, against {where}. The sweep skips a "
        "point whose predicted peak is above the device's memory (--no-predict-oom launches it). "
        "The CUDA context and fragmentation come on top of the allocated peak."
    )
    return R.Section(
        id="memory",
        title="Memory model",
        intro=intro,
        figures=(fig_memory(frame, fits, capacity_gib),),
        tables=(table,),
    )


# -- the largest batch that fits -------------------------------------------------------------

_STOPPED = {
    "converged": "exact",
    "limit": "reached the batch limit",
    "nothing_fits": "not even batch 1 fits",
    "max_trials": "trial bound reached",
    "budget": "time bound reached",
    "failed": "failed",
}


def max_batch_section(searches: Sequence[dict[str, Any]]) -> R.Section:
    rows, sort_values = [], []
    for s in sorted(searches, key=lambda r: group_label(r)):
        stopped = _STOPPED.get(str(s.get("stopped")), str(s.get("stopped")))
        if s.get("reason"):
            stopped += f": {s['reason']}"
        rows.append(
            (
                group_label(s),
                R._num(s.get("largest_batch_ok")) or "none",
                R._num(s.get("smallest_batch_oom")) or "none seen",
                stopped,
                R._num(s.get("trials")),
                R._num(s.get("search_s")),
                str(s.get("trial_log") or ""),
            )
        )
        sort_values.append(
            (
                group_label(s),
                s.get("largest_batch_ok"),
                s.get("smallest_batch_oom"),
                stopped,
                s.get("trials"),
                s.get("search_s"),
                s.get("trial_log"),
            )
        )
    return R.Section(
        id="max-batch",
        title="Largest batch that fits",
        intro=(
            "Per configuration, short real runs searched the largest per-device batch that "
            "trains without running out of memory: doubling from the sweep's smallest batch, "
            "then bisection, bounded in trials and seconds. 'exact' means the next batch up "
            "ran out of memory. Trial runs are in max_batch/ beside the ledger."
        ),
        tables=(
            R.Table(
                columns=(
                    "configuration",
                    "largest batch that ran",
                    "smallest out of memory",
                    "search",
                    "trials",
                    "seconds",
                    "trials (batch:status)",
                ),
                rows=tuple(rows),
                sort_values=tuple(sort_values),
                sortable=True,
            ),
        ),
    )


def memory_frame(frame: pd.DataFrame, trials: pd.DataFrame | None) -> pd.DataFrame:
    """The ledger's runs and the max-batch trials together (both are finished real runs)."""
    if trials is None or trials.empty:
        return frame
    return pd.concat([frame, trials], ignore_index=True)
