"""The report's charts: pure plotly builders, frames in, ``go.Figure`` out (or None).

Each ``fig_*`` takes analysis frames (or rows already read) and returns a figure, or None when
the data cannot support that chart (one GPU count, nothing varied, no telemetry, ...). No I/O
and no page: the renderers embed what comes back. The shared look (palette, legend under the
plot, every log axis saying so) is :func:`_layout`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from harness import analysis, attribution, fmt, memory_model
from harness.analysis import THROUGHPUT

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


#: No plotly template: resolving one deep-copies it per figure (slow on big sweeps); the few
#: styles that matter are set in _layout.
TEMPLATE = "none"


#: Curves drawn per chart at most (the table lists every point); one colour each.
MAX_CURVES = 10


#: Samples per telemetry line at most (decimated evenly): keeps the page small.
MAX_SAMPLES = 400


#: Stack colours of the loss parts (unexplained in grey: it is the remainder, not a cause).
PART_COLORS = {
    "compute": "#636efa",
    "contention": "#ffa15a",
    "exposed_comm": "#ef553b",
    "data_wait": "#00cc96",
    "straggler": "#ab63fa",
    "unexplained": "#b0b7c3",
}


def _err(frame: pd.DataFrame, column: str, scale: float = 1.0) -> dict[str, Any] | None:
    """Asymmetric error bars from ``column``'s interval (``<column>_lo`` and ``_hi``, as
    analysis writes them), times ``scale``; None when the frame or every point has none."""
    if f"{column}_lo" not in frame:
        return None
    med, lo, hi = (
        frame[c].to_numpy(float) * scale for c in (column, f"{column}_lo", f"{column}_hi")
    )
    if not np.isfinite(lo).any():
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": np.nan_to_num(hi - med).tolist(),
        "arrayminus": np.nan_to_num(med - lo).tolist(),
        "thickness": 1,
        "width": 3,
    }


def _layout(fig: go.Figure, title: str, **kwargs: Any) -> go.Figure:
    # Legends go under the plot, anchored to the bottom of the figure, with room reserved per
    # entry: curve names are long, and this keeps the plot area full width and unobstructed.
    entries = sum(1 for t in fig.data if t.showlegend is not False and t.name)
    legend_px = 24 * min(entries, 12) if entries > 1 else 0
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title, "x": 0.0, "xanchor": "left"},
        height=kwargs.pop("height", 440) + legend_px,
        margin={"l": 60, "r": 20, "t": 60, "b": 60 + legend_px},
        showlegend=entries > 1,
        legend={
            "font": {"size": 11},
            "orientation": "h",
            "yref": "container",
            "yanchor": "bottom",
            "y": 0.0,
            "x": 0.0,
        },
        font={"family": "system-ui, sans-serif", "size": 12, "color": "#2a3f5f"},
        paper_bgcolor="white",
        plot_bgcolor="white",
        colorway=list(PALETTE),
        hovermode="closest",
        **kwargs,
    )
    axis = {"showgrid": True, "gridcolor": "#e5e8ee", "zeroline": False, "linecolor": "#aab"}
    fig.update_xaxes(**axis, automargin=True, title_standoff=8)
    fig.update_yaxes(**axis, automargin=True)
    return _say_log_scale(fig)


def _say_log_scale(fig: go.Figure) -> go.Figure:
    """Every logarithmic axis says so in its title: equal steps on it are ratios, not sums."""

    def mark(axis: Any) -> None:
        title = axis.title.text or ""
        if axis.type == "log" and "log scale" not in title:
            axis.update(title_text=f"{title} (log scale)" if title else "log scale")

    fig.for_each_xaxis(mark)
    fig.for_each_yaxis(mark)
    return fig


def _top_curves(curves: pd.DataFrame, metric: str) -> list[str]:
    """The curve ids to draw: the best MAX_CURVES by throughput at their largest GPU count."""
    last = curves.sort_values("world_size").groupby("curve_id").tail(1)
    return list(last.sort_values(metric, ascending=False)["curve_id"][:MAX_CURVES])


def _ws_axis(values: Sequence[float], unit: str = "GPU") -> dict[str, Any]:
    """The device-count axis: ticks at the measured counts only, titled in the device's words
    (``CPU ranks (world size)`` on a CPU sweep, :func:`harness.fmt.device_unit`)."""
    ticks = sorted({int(v) for v in values if np.isfinite(v)})
    return {"title": fmt.device_count_title(unit), "tickvals": ticks, "type": "log"}


#: A value axis goes logarithmic only when its data spans at least this ratio: over a narrow
#: range (213 to 500 samples/s) log ticks are few, odd and read as a steeper change.
LOG_AXIS_MIN_RATIO = 10.0


def _value_axis_type(*arrays: Any) -> str:
    """``log`` when the positive values span LOG_AXIS_MIN_RATIO or more, else ``linear``."""
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0 or values.max() / values.min() < LOG_AXIS_MIN_RATIO:
        return "linear"
    return "log"


def _band(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str, group: str) -> go.Scatter:
    """An interval band: a filled outline, drawn as a line only (no marker at its corners,
    which read as measurements), hover off, no legend entry of its own."""
    return go.Scatter(
        x=np.concatenate([x, x[::-1]]),
        y=np.concatenate([hi, lo[::-1]]),
        mode="lines",
        fill="toself",
        fillcolor=_rgba(color, 0.15),
        line={"width": 0},
        hoverinfo="skip",
        legendgroup=group,
        showlegend=False,
        name="interval",
    )


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def fig_throughput(
    curves: pd.DataFrame, metric: str = THROUGHPUT, *, unit: str = "GPU"
) -> go.Figure | None:
    """Global throughput against device count per scaling curve, each with its ideal line.

    The value axis is logarithmic only over an order of magnitude or more
    (:func:`_value_axis_type`); ``unit`` names the devices (``GPU``, ``CPU rank``).
    """
    if curves.empty:
        return None
    fig = go.Figure()
    drawn = []
    for i, cid in enumerate(_top_curves(curves, metric)):
        c = curves[curves["curve_id"] == cid].sort_values("world_size")
        color = PALETTE[i % len(PALETTE)]
        name = c["curve"].iloc[0]
        med = c[metric].to_numpy(float)
        drawn += [med, c["ideal"].to_numpy(float)]
        fig.add_trace(
            go.Scatter(
                x=c["world_size"],
                y=med,
                mode="lines+markers",
                name=name,
                legendgroup=cid,
                line={"color": color},
                error_y=_err(c, metric),
                hovertemplate="N=%{x}<br>%{y:,.1f} samples/s<extra>%{fullData.name}</extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=c["world_size"],
                y=c["ideal"],
                mode="lines",
                name=f"ideal ({name})",
                legendgroup=cid,
                showlegend=False,
                line={"color": color, "dash": "dot", "width": 1},
                hovertemplate="ideal linear: %{y:,.1f}<extra></extra>",
            )
        )
    y_type = _value_axis_type(*drawn)
    title = f"Throughput vs {unit}s (dotted: ideal linear scaling from the reference point"
    covers = fmt.levels(curves.get(f"{metric}_level", pd.Series(dtype=float)))
    title += f"; bars: interval of the median, covers {covers})" if covers else ")"
    return _layout(
        fig,
        title,
        xaxis=_ws_axis(curves["world_size"], unit),
        yaxis={
            "title": "samples/s (global, median)",
            "type": y_type,
            **({"rangemode": "tozero"} if y_type == "linear" else {}),
        },
    )


def fig_efficiency(curves: pd.DataFrame, *, unit: str = "GPU") -> go.Figure | None:
    """Scaling efficiency per curve with its interval band (its coverage in the title); 100% is
    perfect scaling."""
    if curves.empty:
        return None
    fig = go.Figure()
    banded = False
    for i, cid in enumerate(_top_curves(curves, THROUGHPUT)):
        c = curves[curves["curve_id"] == cid].sort_values("world_size")
        color = PALETTE[i % len(PALETTE)]
        x = c["world_size"].to_numpy(float)
        lo, hi = c["efficiency_lo"].to_numpy(float), c["efficiency_hi"].to_numpy(float)
        if np.isfinite(lo).all():
            banded = True
            fig.add_trace(_band(x, lo * 100, hi * 100, color, cid))
        fig.add_trace(
            go.Scatter(
                x=x,
                y=c["efficiency"] * 100,
                mode="lines+markers",
                name=c["curve"].iloc[0],
                legendgroup=cid,
                line={"color": color},
                hovertemplate="N=%{x}<br>efficiency %{y:.1f}%<extra>%{fullData.name}</extra>",
            )
        )
    fig.add_hline(y=100, line={"color": "#888", "dash": "dash", "width": 1})
    title = f"Scaling efficiency vs {unit}s"
    # Promise a band only when one is drawn (single runs have no interval).
    above = curves["world_size"] > curves["base_world_size"]  # N0 itself is exactly 100%
    covers = fmt.levels(curves.loc[above, "efficiency_level"], at_least=True)
    title += f" (band: interval, covers {covers})" if banded else " (single runs: no interval band)"
    return _layout(
        fig,
        title,
        xaxis=_ws_axis(curves["world_size"], unit),
        yaxis={"title": "efficiency (%)"},
    )


def fig_factor(effect: pd.DataFrame, factor: str, title: str) -> go.Figure | None:
    """Speedup of each level of a factor over its reference, per group of equal settings."""
    if effect.empty:
        return None
    fig = go.Figure()
    pairs = zip(effect["world_size"], effect["group"], strict=True)
    groups = [f"N={int(ws)} {g}".strip() for ws, g in pairs]
    # A bar per group while that stays readable; beyond, one box per GPU count and level
    # (each dot a group of otherwise equal settings, hover names it).
    as_bars = len(set(groups)) <= 16
    effect = effect.assign(_x=groups, _n=[f"N={int(ws)}" for ws in effect["world_size"]])
    for i, (level, part) in enumerate(effect.groupby("level", sort=False)):
        name = f"{factor}={level} vs {part['reference'].iloc[0]}"
        color = PALETTE[i % len(PALETTE)]
        med = part["speedup"].to_numpy(float)
        if as_bars:
            fig.add_trace(
                go.Bar(
                    x=part["_x"],
                    y=med,
                    name=name,
                    marker={"color": color},
                    error_y=_err(part, "speedup"),
                    hovertemplate="%{x}<br>speedup %{y:.3f}×<extra>%{fullData.name}</extra>",
                )
            )
        else:
            fig.add_trace(
                go.Box(
                    x=part["_n"],
                    y=med,
                    name=name,
                    marker={"color": color},
                    boxpoints="all",
                    jitter=0.4,
                    pointpos=0,
                    text=part["group"],
                    hovertemplate="%{text}<br>speedup %{y:.3f}×<extra>%{fullData.name}</extra>",
                )
            )
    fig.add_hline(y=1.0, line={"color": "#888", "dash": "dash", "width": 1})
    return _layout(
        fig,
        title,
        barmode="group",
        boxmode="group",
        yaxis={"title": "speedup (×, median)"},
        xaxis={"title": "", "automargin": True},
    )


def fig_batch(summary: pd.DataFrame, *, unit: str = "GPU") -> go.Figure | None:
    """Throughput and peak memory against per-device batch size, one line per setting."""
    ok = summary[summary[THROUGHPUT].notna()]
    if ok.empty or ok["per_device_batch"].nunique() < 2:
        return None
    mem_col = "mem_peak_gib" if ok["mem_peak_gib"].notna().any() else "gpu_mem_used_gib_max"
    has_mem = ok[mem_col].notna().any()
    others = [
        c
        for c in fmt.label_columns(ok)
        if c not in ("per_device_batch", "global_batch", "grad_accum")
    ]
    fig = make_subplots(
        rows=1,
        cols=2 if has_mem else 1,
        subplot_titles=("throughput", f"peak memory per {unit}") if has_mem else ("throughput",),
    )
    lines = list(ok.groupby(analysis.row_keys(ok, others), sort=True)) if others else [("", ok)]
    lines.sort(key=lambda kv: -kv[1][THROUGHPUT].max())
    for i, (_, line) in enumerate(lines[:MAX_CURVES]):
        line = line.sort_values("per_device_batch")
        name = fmt.point_label(line.iloc[0], others)
        color = PALETTE[i % len(PALETTE)]
        med = line[THROUGHPUT].to_numpy(float)
        fig.add_trace(
            go.Scatter(
                x=line["per_device_batch"],
                y=med,
                mode="lines+markers",
                name=name,
                legendgroup=name,
                line={"color": color},
                error_y=_err(line, THROUGHPUT),
            ),
            row=1,
            col=1,
        )
        if has_mem:
            fig.add_trace(
                go.Scatter(
                    x=line["per_device_batch"],
                    y=line[mem_col],
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=False,
                    line={"color": color},
                ),
                row=1,
                col=2,
            )
    fig.update_xaxes(title_text=f"batch per {unit}", type="log")
    fig.update_yaxes(title_text="samples/s (global, median)", row=1, col=1)
    if has_mem:
        fig.update_yaxes(title_text=f"{mem_col} (GiB)", row=1, col=2)
    return _layout(fig, "Batch size: throughput and memory")


def fig_knobs(summary: pd.DataFrame, knobs: Sequence[str]) -> go.Figure | None:
    """DDP-knob / NCCL-setting comparison at the largest GPU count.

    One knob varying: bars of median throughput per level. Two or more: a heatmap over the two
    knobs with the most levels (cell = median over the other settings' medians).
    """
    ok = summary[summary[THROUGHPUT].notna()]
    knobs = [k for k in knobs if ok[k].astype(object).map(str).nunique() > 1]
    if ok.empty or not knobs:
        return None
    top = ok[ok["world_size"] == ok["world_size"].max()]
    n = int(top["world_size"].iloc[0])
    if len(knobs) == 1:
        k = knobs[0]
        by = top.groupby(top[k].map(fmt.fmt_value))
        med = by[THROUGHPUT].median()
        fig = go.Figure(
            go.Bar(
                x=[f"{k}={v}" for v in med.index],
                y=med.to_numpy(float),
                marker={"color": PALETTE[0]},
                hovertemplate="%{x}<br>%{y:,.1f} samples/s<extra></extra>",
            )
        )
        return _layout(
            fig,
            f"{k} at N={n}: median samples/s",
            yaxis={"title": "samples/s (global, median)"},
        )
    knobs = sorted(knobs, key=lambda c: -top[c].astype(object).map(str).nunique())[:2]
    a, b = knobs
    grid = top.assign(_a=top[a].map(fmt.fmt_value), _b=top[b].map(fmt.fmt_value)).pivot_table(
        index="_b", columns="_a", values=THROUGHPUT, aggfunc="median"
    )
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(float),
            x=[str(v) for v in grid.columns],
            y=[str(v) for v in grid.index],
            colorscale="Viridis",
            colorbar={"title": "samples/s"},
            texttemplate="%{z:,.0f}",
            hovertemplate=f"{a}=%{{x}}<br>{b}=%{{y}}<br>%{{z:,.1f}} samples/s<extra></extra>",
        )
    )
    return _layout(
        fig,
        f"{a} × {b} at N={n}: median samples/s",
        xaxis={"title": a, "type": "category"},
        yaxis={"title": b, "type": "category"},
    )


#: Short names of the runs the straggler chart draws per rank: S1 has the widest rank spread.
#: (Not P1..: the tokens chart ranks its points by speed, F1 fastest; one code, one meaning.)
STRAGGLER_CODE = "S"
#: Short names of the points the tokens chart draws: F1 is the fastest.
FASTEST_CODE = "F"


def fig_stragglers(
    summary: pd.DataFrame,
    rank_times: dict[str, list[list[float]]],
    labels: dict[str, str],
    *,
    unit: str = "GPU",
) -> go.Figure | None:
    """Per-rank step-time spread: the spread per point, and per-rank step times of a few points
    (``rank_times`` in order of widest spread first, as the report picks them)."""
    multi = summary[(summary["world_size"] > 1) & summary["step_time_s_rank_spread"].notna()]
    if multi.empty and not rank_times:
        return None
    cols = 2 if rank_times else 1
    fig = make_subplots(
        rows=1,
        cols=cols,
        subplot_titles=(
            "slowest / fastest rank median step time",
            f"step times per rank ({STRAGGLER_CODE}1 = widest spread)",
        )[:cols],
    )
    if not multi.empty:
        fig.add_trace(
            go.Scatter(
                x=multi["world_size"],
                y=multi["step_time_s_rank_spread"],
                mode="markers",
                name="rank spread",
                text=[labels.get(k, k) for k in multi["config_key"]],
                marker={"color": PALETTE[3], "size": 7, "opacity": 0.7},
                hovertemplate="N=%{x}<br>spread %{y:.3f}<br>%{text}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        # Ticks at the measured GPU counts only: plotly's own log ticks (2, 3, ... 9) read as
        # GPU counts that were never run.
        fig.update_xaxes(**_ws_axis(multi["world_size"], unit), row=1, col=1)
        fig.update_yaxes(title_text="spread (×)", row=1, col=1)
    for i, (label, times) in enumerate(rank_times.items()):
        for rank, steps in enumerate(times):
            fig.add_trace(
                go.Box(
                    y=steps,
                    # A short category per box (run S1.., rank); the legend names the runs.
                    x=[f"{STRAGGLER_CODE}{i + 1} rank {rank}"] * len(steps),
                    name=f"{STRAGGLER_CODE}{i + 1}: {label}",
                    legendgroup=label,
                    showlegend=rank == 0,
                    marker={"color": PALETTE[i % len(PALETTE)]},
                    boxpoints=False,
                ),
                row=1,
                col=cols,
            )
    if rank_times:
        fig.update_yaxes(title_text="step time (s)", row=1, col=cols)
        fig.update_xaxes(
            title_text=f"run and rank ({STRAGGLER_CODE}1 = widest rank spread)",
            type="category",
            row=1,
            col=cols,
        )
    return _layout(fig, "Stragglers: per-rank step-time spread")


def fig_telemetry(telemetry: pd.DataFrame, labels: dict[str, str]) -> go.Figure | None:
    """GPU utilisation, power and memory over time for a few points (mean over GPUs; memory max)."""
    if telemetry.empty:
        return None
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=("GPU utilisation (%)", "power (W)", "memory used (GiB)"),
    )
    for i, (rel, part) in enumerate(telemetry.groupby("point_dir", sort=False)):
        part = part.assign(t=part["t_unix"] - part["t_unix"].min())
        per_t = part.groupby("t").agg(
            util_pct=("util_pct", "mean"), power_w=("power_w", "mean"), mem=("mem_used_gib", "max")
        )
        step = max(1, len(per_t) // MAX_SAMPLES)
        per_t = per_t.iloc[::step]
        color = PALETTE[i % len(PALETTE)]
        name = labels.get(rel, rel)
        for row, col in enumerate(("util_pct", "power_w", "mem"), start=1):
            fig.add_trace(
                go.Scatter(
                    x=per_t.index,
                    y=per_t[col],
                    mode="lines",
                    name=name,
                    legendgroup=rel,
                    showlegend=row == 1,
                    line={"color": color, "width": 1.5},
                ),
                row=row,
                col=1,
            )
    fig.update_xaxes(title_text="seconds since the point started", row=3, col=1)
    return _layout(fig, "GPU telemetry over time", height=640)


def fig_mfu_tokens(
    summary: pd.DataFrame, labels: dict[str, str], *, unit: str = "GPU"
) -> go.Figure | None:
    """MFU against device count, and real vs padded tokens/s of the fastest points."""
    ok = summary[summary[THROUGHPUT].notna()]
    has_mfu = ok["mfu"].notna().any()
    has_tok = ok["padded_tokens_per_s"].notna().any() and ok["real_tokens_per_s"].notna().any()
    if ok.empty or not (has_mfu or has_tok):
        return None
    titles = [t for t, on in (("MFU (real tokens)", has_mfu), ("tokens/s", has_tok)) if on]
    if not has_mfu:
        titles[0] = f"tokens/s (no MFU: {_no_mfu_reason(ok)})"
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    col = 1
    if has_mfu:
        m = ok[ok["mfu"].notna()]
        med = m["mfu"].to_numpy(float) * 100
        fig.add_trace(
            go.Scatter(
                x=m["world_size"],
                y=med,
                mode="markers",
                name="MFU",
                text=[labels.get(k, k) for k in m["config_key"]],
                marker={"color": PALETTE[2], "size": 7, "opacity": 0.75},
                error_y=_err(m, "mfu", scale=100),
                hovertemplate="N=%{x}<br>MFU %{y:.1f}%<br>%{text}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(**_ws_axis(m["world_size"], unit), row=1, col=col)
        fig.update_yaxes(title_text="MFU (%)", rangemode="tozero", row=1, col=col)
        col += 1
    if has_tok:
        best = ok.sort_values(THROUGHPUT, ascending=False).head(8)
        names = [labels.get(k, k) for k in best["config_key"]]
        # Short categories on the axis (F1 = fastest), the full configuration on hover.
        cats = [f"{FASTEST_CODE}{i + 1}" for i in range(len(names))]
        for name, column, color in (
            ("real tokens/s", "real_tokens_per_s", PALETTE[0]),
            ("padded tokens/s", "padded_tokens_per_s", PALETTE[7]),
        ):
            fig.add_trace(
                go.Bar(
                    x=cats,
                    y=best[column],
                    name=name,
                    text=names,
                    marker={"color": color},
                    hovertemplate=f"%{{x}}: %{{text}}<br>%{{y:,.0f}} tokens/s<extra>{name}</extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(
            title_text=f"fastest points ({FASTEST_CODE}1 fastest; hover for the configuration)",
            type="category",
            row=1,
            col=col,
        )
        fig.update_yaxes(title_text="tokens/s", row=1, col=col)
    title = "Model FLOPs utilisation and padding" if has_mfu else "Padding: real vs padded tokens/s"
    return _layout(fig, title, barmode="group")


def _no_mfu_reason(ok: pd.DataFrame) -> str:
    """Why a sweep has no MFU: CPU ranks, or GPUs without a known peak."""
    devices = set(ok["device"].dropna()) if "device" in ok else set()
    if devices and devices <= {"cpu"}:
        return "CPU ranks have no peak FLOP/s to divide by"
    return "no known peak FLOP/s for this device and precision"


def fig_why(decomp: pd.DataFrame, curve_id: str, *, unit: str = "GPU") -> go.Figure | None:
    """Stacked bars: each device count's lost efficiency split into its parts (pp) on one curve.

    Parts can be negative (a part smaller than at N0, or a negative remainder): they stack
    below zero, and the black marker is the total 1 − E(N).
    """
    rows = decomp[(decomp["curve_id"] == curve_id) & decomp["explained"].astype(bool)]
    if rows.empty:
        return None
    rows = rows.sort_values("world_size")
    # A point whose checks failed is marked on its axis label ("!"): the sentences are beside.
    x = [
        f"N={int(n)}{' (!)' if len(c or ()) else ''}"
        for n, c in zip(rows["world_size"], rows.get("checks", [()] * len(rows)), strict=True)
    ]
    mode = rows["scaling_mode"].iloc[0]
    fig = go.Figure()
    for part in attribution.COMPONENTS:
        name = attribution.part_name(part, mode)
        fig.add_trace(
            go.Bar(
                x=x,
                y=rows[f"{part}_pp"],
                name=name,
                marker={"color": PART_COLORS[part]},
                hovertemplate=f"%{{x}}<br>{name}: %{{y:.1f}} pp<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=rows["loss_pp"],
            mode="markers",
            name="1 − E(N) (total)",
            marker={"color": "black", "symbol": "diamond", "size": 10},
            hovertemplate="%{x}<br>lost: %{y:.1f} pp<extra></extra>",
        )
    )
    return _layout(
        fig,
        f"Why efficiency drops: {rows['curve'].iloc[0]}",
        barmode="relative",
        xaxis={"title": f"{unit}s (vs N0={int(rows['base_world_size'].iloc[0])})"},
        yaxis={"title": "lost efficiency (percentage points)"},
    )


def fig_allreduce(
    summary: pd.DataFrame, curve: pd.DataFrame, *, unit: str = "GPU"
) -> go.Figure | None:
    """Per device count on one curve: the all-reduce ceiling, DDP's buckets at the ceiling, the
    all-reduce inside DDP's step, and what the step exposed of it (at the ceiling's speed, and
    beyond: contention), in ms per step."""
    keys = curve.loc[curve["world_size"] > 1, "config_key"]
    pts = summary[summary["config_key"].isin(keys)].sort_values("world_size")
    if pts.empty or pts["allreduce_time_s"].isna().all():
        return None
    x = [f"N={int(n)}" for n in pts["world_size"]]
    fig = go.Figure()
    bars = (
        ("allreduce_time_s", "ceiling: one all-reduce of the whole gradient", "#8c9bb5"),
        ("allreduce_bucketed_time_s", "DDP's buckets, one by one, at the ceiling", "#636efa"),
        ("allreduce_step_time_s", "inside DDP's step: some bucket in flight", "#19d3f3"),
        ("exposed_comm_s", "exposed in DDP's step (not hidden by backward)", "#ef553b"),
        ("comm_contention_s", "exposed beyond the ceiling (contention)", "#ffa15a"),
    )
    for col, name, color in bars:
        if col not in pts or pts[col].isna().all():
            continue
        fig.add_trace(
            go.Bar(
                x=x,
                y=pts[col] * 1e3,
                name=name,
                marker={"color": color},
                hovertemplate=f"%{{x}}<br>{name}: %{{y:.2f}} ms<extra></extra>",
            )
        )
    return _layout(
        fig,
        "DDP's all-reduce against the measured ceiling",
        barmode="group",
        xaxis={"title": f"{unit}s"},
        yaxis={"title": "ms per step"},
    )


def fig_projection(projection: Any) -> go.Figure | None:
    """Predicted efficiency per curve with its band (lines), measured efficiency (markers)."""
    by_curve: dict[Any, list[dict[str, Any]]] = {}
    for r in projection.rows:
        by_curve.setdefault(r.get("curve_id"), []).append(r)
    if not by_curve:
        return None
    fig = go.Figure()
    xs: list[float] = []
    for i, (key, rows) in enumerate(list(by_curve.items())[:MAX_CURVES]):
        rows = sorted(rows, key=lambda r: r["gpus"])
        color = PALETTE[i % len(PALETTE)]
        name = rows[0].get("curve") or "pure inputs"
        x = np.array([r["gpus"] for r in rows], dtype=float)
        xs.extend(x)
        y = np.array([r["efficiency"] for r in rows]) * 100
        band = [r["efficiency_ci"] for r in rows]
        if all(b is not None for b in band):
            lo = np.array([b[0] for b in band]) * 100
            hi = np.array([b[1] for b in band]) * 100
            fig.add_trace(_band(x, lo, hi, color, str(key)))
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                name=f"predicted: {name}",
                legendgroup=str(key),
                line={"color": color, "dash": "dot"},
                hovertemplate="N=%{x}<br>predicted %{y:.1f}%<extra>%{fullData.name}</extra>",
            )
        )
        seen = [r for r in rows if r["measured_efficiency"] is not None]
        if seen:
            fig.add_trace(
                go.Scatter(
                    x=[r["gpus"] for r in seen],
                    y=[100 * r["measured_efficiency"] for r in seen],
                    mode="markers",
                    name=f"measured: {name}",
                    legendgroup=str(key),
                    marker={"color": color, "size": 9, "symbol": "diamond"},
                    customdata=[[r["error_pp"]] for r in seen],
                    hovertemplate="N=%{x}<br>measured %{y:.1f}%<br>prediction error "
                    "%{customdata[0]:+.1f} pp<extra>%{fullData.name}</extra>",
                )
            )
    fig.add_hline(y=100, line={"color": "#888", "dash": "dash", "width": 1})
    return _layout(
        fig,
        "Projected scaling efficiency (dotted: predicted, band: 95% interval; diamonds: measured)",
        xaxis=_ws_axis(xs),
        yaxis={"title": "efficiency (%)"},
    )


def fig_energy(lines: list, metric: str) -> go.Figure | None:
    """Joules per sample (``metric``) against GPU count, one line per curve (precision,
    batch, ...)."""
    if not lines:
        return None
    fig = go.Figure()
    sizes = []
    for i, (name, line) in enumerate(lines):
        sizes.extend(line["world_size"])
        fig.add_trace(
            go.Scatter(
                x=line["world_size"],
                y=line[metric],
                mode="lines+markers",
                name=name,
                line={"color": PALETTE[i % len(PALETTE)]},
                hovertemplate="N=%{x}<br>%{y:.4g} J/sample<extra>%{fullData.name}</extra>",
            )
        )
    return _layout(
        fig,
        "Energy per training sample vs GPU count (GPU boards only; lower is cheaper)",
        xaxis=_ws_axis(sizes),
        yaxis={"title": "J per sample (median)", "rangemode": "tozero"},
    )


def fig_memory(frame: pd.DataFrame, fits: pd.DataFrame, capacity_gib: float | None) -> go.Figure:
    """Measured peaks (markers) and the fitted lines, against the device's memory."""
    fig = go.Figure()
    ok = frame[(frame["status"] == "ok") & frame[memory_model.METRIC].notna()]
    x_max = 1.0
    for i, fit in enumerate(fits.head(MAX_CURVES).to_dict("records")):
        color = PALETTE[i % len(PALETTE)]
        name = fmt.group_label(fit)
        mask = np.ones(len(ok), dtype=bool)
        for col in memory_model.GROUP_COLUMNS:
            mask &= (ok[col].astype(str) == str(fit[col])).to_numpy()
        points = ok[mask]
        top = memory_model.fits_within(fit, capacity_gib) or 0
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
    return _layout(
        fig,
        "Peak memory vs per-device batch (dotted: fixed + per-sample fit)",
        xaxis={"title": "per-device batch", "range": [0, x_max * 1.05]},
        yaxis={"title": "peak allocated memory per GPU (GiB)", "rangemode": "tozero"},
    )


def log_ticks(values: Sequence[float]) -> list[float]:
    """Tick values for a log axis over ``values``: 1, 2, 5 × 10^k from below the smallest to
    above the largest, thinned to 1 and 10^k alone when that gives more than 12."""
    finite = [v for v in values if v is not None and np.isfinite(v) and v > 0]
    if not finite:
        return []
    lo, hi = min(finite), max(finite)
    first, last = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    for mantissas in ((1, 2, 5), (1,)):
        ticks = [m * 10.0**k for k in range(first, last + 1) for m in mantissas]
        # Keep one tick at or below the smallest value and one at or above the largest.
        below = [t for t in ticks if t <= lo]
        above = [t for t in ticks if t >= hi]
        start = below[-1] if below else ticks[0]
        end = above[0] if above else ticks[-1]
        ticks = [t for t in ticks if start <= t <= end]
        if len(ticks) <= 12:
            return ticks
    return ticks


def fig_serving(
    rows: Sequence[dict[str, Any]], *, outliers: Mapping[int, str] | None = None
) -> go.Figure | None:
    """Requests/s (left) and latency p50/p95/p99 in ms (right) against concurrency.

    One colour per bench-serve run (rows grouped by started_at, checkpoint and texts per
    request); p50 solid, p95 dashed, p99 dotted. Levels with no successful request are left
    out of the lines (their values are null). ``outliers`` (index in ``rows`` -> why) get a
    red cross on the requests/s panel. None when there are no rows.
    """
    if not rows:
        return None
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Throughput", "Latency (end to end)"),
        horizontal_spacing=0.12,
    )
    runs: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = (
            row.get("started_at"),
            row.get("checkpoint"),
            row.get("texts_per_request"),
            row.get("batch_window_s"),
        )
        runs.setdefault(key, []).append(row)
    palette = qualitative.Plotly
    for i, ((started, ckpt, tpr, window), group) in enumerate(runs.items()):
        group = sorted(group, key=lambda r: r["concurrency"])
        colour = palette[i % len(palette)]
        batching = f" · batch window {window * 1000:g} ms" if window else ""
        name = f"{fmt.checkpoint_label(ckpt)} · {tpr} text/req{batching} · {started}"
        xs = [r["concurrency"] for r in group]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[r["requests_per_s"] for r in group],
                mode="lines+markers",
                name=name,
                legendgroup=name,
                line={"color": colour},
                hovertemplate="concurrency %{x}<br>%{y:.1f} requests/s<extra></extra>",
            ),
            row=1,
            col=1,
        )
        for q, dash in (("p50", "solid"), ("p95", "dash"), ("p99", "dot")):
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[fmt.to_ms(r.get(f"latency_s_{q}")) for r in group],
                    mode="lines+markers",
                    name=f"{q}",
                    legendgroup=name,
                    showlegend=False,
                    line={"color": colour, "dash": dash},
                    hovertemplate=f"concurrency %{{x}}<br>{q} %{{y:.1f}} ms<extra>{name}</extra>",
                ),
                row=1,
                col=2,
            )
    if outliers:
        flagged = [rows[i] for i in sorted(outliers)]
        fig.add_trace(
            go.Scatter(
                x=[r["concurrency"] for r in flagged],
                y=[r["requests_per_s"] for r in flagged],
                mode="markers",
                name="outlier level (far off the other runs; hover says why)",
                marker={"color": "#d62728", "symbol": "x", "size": 12},
                text=[outliers[i] for i in sorted(outliers)],
                hovertemplate="%{text}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    levels = sorted({r["concurrency"] for r in rows})
    latencies = [fmt.to_ms(r.get(f"latency_s_{q}")) for r in rows for q in ("p50", "p95", "p99")]
    for col in (1, 2):
        # Log axis: levels usually grow geometrically (1, 4, 16); ticks exactly at the levels.
        fig.update_xaxes(
            title_text="concurrent requests", type="log", tickvals=levels, row=1, col=col
        )
    fig.update_yaxes(title_text="requests/s", rangemode="tozero", row=1, col=1)
    # Log scale: queueing makes latency span milliseconds to seconds across the sweep. Ticks
    # on the 1-2-5 series, each labelled in full: plotly's own log ticks label 20 and 50 as a
    # bare "2" and "5" ("5, 2, 100, 5, 2, 10" read as nonsense).
    ticks = log_ticks([v for v in latencies if v is not None])
    fig.update_yaxes(
        title_text="latency ms (p50 solid, p95 dash, p99 dot)",
        type="log",
        tickvals=ticks,
        ticktext=[fmt.num(t, 0) if t >= 1 else f"{t:g}" for t in ticks],
        row=1,
        col=2,
    )
    fig.update_layout(
        title="Inference service under load",
        legend={"orientation": "h", "y": -0.25},
        template="plotly_white",
    )
    return _say_log_scale(fig)
