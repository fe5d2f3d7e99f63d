"""The report's cost sections: energy per sample, the memory model, the largest batch that fits.

Pure like the other sections (frames in, :class:`~harness.report.model.Section` out);
:func:`cost_sections` is what :func:`harness.report.build.build_report` calls. Each section
appears only when the sweep has the data for it: energy needs NVML telemetry, the memory model
peak-memory readings (CUDA) at two batch sizes or more, the largest-batch table a max-batch
search.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from harness import fmt, memory_model
from harness.report.figures import MAX_CURVES, fig_energy, fig_memory
from harness.report.model import Section, Table

ENERGY = "energy_j_per_sample"


def cost_sections(
    summary: pd.DataFrame,
    curves: pd.DataFrame,
    labels: dict[str, str],
    *,
    env: dict[str, Any] | None,
    memory_frame: pd.DataFrame,
    searches: Sequence[dict[str, Any]] = (),
) -> list[Section]:
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
    return lines[:MAX_CURVES]


def energy_sentence(name: str, line: pd.DataFrame) -> str | None:
    """'going from 1 to 8 GPUs costs 9% more energy per sample' for one curve (None: one N)."""
    if len(line) < 2:
        return None
    first, last = line.iloc[0], line.iloc[-1]
    change = last[ENERGY] / first[ENERGY] - 1.0
    n0, n1 = fmt.num(first["world_size"]), fmt.num(last["world_size"])
    if abs(change) < 0.005:
        verdict = "costs the same energy per sample"
    else:
        verdict = f"costs {abs(change):.0%} {'more' if change > 0 else 'less'} energy per sample"
    return (
        f"{name}: going from {n0} to {n1} GPUs {verdict} "
        f"({first[ENERGY]:.3g} J -> {last[ENERGY]:.3g} J)."
    )


def energy_section(summary: pd.DataFrame, curves: pd.DataFrame, labels: dict[str, str]) -> Section:
    lines = energy_lines(summary, curves, labels)
    sentences = [s for name, line in lines if (s := energy_sentence(name, line))]
    rows, sort_values = [], []
    for name, line in lines:
        for r in line.to_dict("records"):
            rows.append(
                (
                    name,
                    fmt.num(r["world_size"]),
                    f"{r[ENERGY]:.4g}",
                    fmt.num(r.get("samples_per_kwh"), 0),
                    fmt.num(r.get("power_w_mean_per_gpu")),
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
    table = Table(
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
    fig = fig_energy(lines, ENERGY)
    return Section(
        id="energy",
        title="Energy per sample",
        intro=intro,
        figures=(fig,) if fig is not None else (),
        tables=(table,),
    )


def memory_section(frame: pd.DataFrame, capacity_gib: float | None) -> Section | None:
    fits = memory_model.fit_memory(frame)
    if fits.empty:
        return None
    rows = tuple(
        (
            fmt.group_label(f),
            f"{f['fixed_gib']:.2f}",
            f"{f['per_sample_gib'] * 1024:.1f}",
            fmt.num(f["n_runs"]),
            f"{fmt.num(f['batch_min'])}-{fmt.num(f['batch_max'])}",
            f"{f['max_residual_gib']:.2f}",
            fmt.num(memory_model.fits_within(f, capacity_gib)),
        )
        for f in fits.to_dict("records")
    )
    table = Table(
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
    return Section(
        id="memory",
        title="Memory model",
        intro=intro,
        figures=(fig_memory(frame, fits, capacity_gib),),
        tables=(table,),
    )


_STOPPED = {
    "converged": "exact",
    "limit": "reached the batch limit",
    "nothing_fits": "not even batch 1 fits",
    "max_trials": "trial bound reached",
    "budget": "time bound reached",
    "failed": "failed",
}


def max_batch_section(searches: Sequence[dict[str, Any]]) -> Section:
    rows, sort_values = [], []
    for s in sorted(searches, key=lambda r: fmt.group_label(r)):
        stopped = _STOPPED.get(str(s.get("stopped")), str(s.get("stopped")))
        if s.get("reason"):
            stopped += f": {s['reason']}"
        rows.append(
            (
                fmt.group_label(s),
                fmt.num(s.get("largest_batch_ok")) or "none",
                fmt.num(s.get("smallest_batch_oom")) or "none seen",
                stopped,
                fmt.num(s.get("trials")),
                fmt.num(s.get("search_s")),
                str(s.get("trial_log") or ""),
            )
        )
        sort_values.append(
            (
                fmt.group_label(s),
                s.get("largest_batch_ok"),
                s.get("smallest_batch_oom"),
                stopped,
                s.get("trials"),
                s.get("search_s"),
                s.get("trial_log"),
            )
        )
    return Section(
        id="max-batch",
        title="Largest batch that fits",
        intro=(
            "Per configuration, short real runs searched the largest per-device batch that "
            "trains without running out of memory: doubling from the sweep's smallest batch, "
            "then bisection, bounded in trials and seconds. 'exact' means the next batch up "
            "ran out of memory. Trial runs are in max_batch/ beside the ledger."
        ),
        tables=(
            Table(
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
