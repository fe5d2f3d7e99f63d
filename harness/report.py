"""The scaling report: pure plotly figure builders, one self-contained HTML page, a text digest.

Layers, from pure to I/O:

- ``fig_*`` builders take analysis frames and return a ``plotly.graph_objects.Figure`` or None
  when the data cannot support that chart (one GPU count, nothing varied, no telemetry, ...);
- :func:`build_report` assembles headline, notes, sections and tables into a :class:`Report`;
- :func:`render_html` / :func:`render_text` turn a Report into a string;
- :func:`render_report` is the only function that touches disk: it reads the sweep folder and
  writes the HTML atomically. ``distrinews-bench report RESULTS_DIR`` and the end of a sweep
  call it.

The page embeds plotly.js once (about 4.8 MB), so it opens on an air-gapped cluster or from an
e-mail attachment; it loads nothing from the network.
"""

from __future__ import annotations

import html
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from distrinews import layout
from distrinews.errors import UserError
from harness import analysis, attribution, max_batch, serving_store, store
from harness.analysis import THROUGHPUT
from harness.definitions import DEFINITIONS

#: Metrics that get a bootstrap interval wherever the report shows them.
SUMMARY_METRICS = (THROUGHPUT, "mfu", "mem_peak_gib", "step_time_s_rank_spread")
#: Curves drawn per chart at most (the table lists every point); one colour each.
MAX_CURVES = 10
#: Points whose GPU telemetry is plotted over time at most.
MAX_TELEMETRY_POINTS = 6
#: Samples per telemetry line at most (decimated evenly): keeps the page small.
MAX_SAMPLES = 400
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

# -- the report model ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Table:
    """A titled table: column names and rows of already formatted cells."""

    columns: tuple[str, ...]
    """Header cells."""
    rows: tuple[tuple[str, ...], ...]
    """Formatted cells; an empty string is a blank."""
    sort_values: tuple[tuple[Any, ...], ...] = ()
    """Raw values per cell for sorting (numbers sort as numbers); empty: sort on the text."""
    sortable: bool = False
    """Render with click-to-sort headers."""


@dataclass(frozen=True, kw_only=True)
class Section:
    """One part of the page: a title, a sentence of explanation, figures and tables."""

    id: str
    """HTML anchor; also names the figures' divs."""
    title: str
    """Heading."""
    intro: str = ""
    """What the reader is looking at, in plain words."""
    figures: tuple[go.Figure, ...] = ()
    """Charts, in order."""
    tables: tuple[Table, ...] = ()
    """Tables after the charts."""


@dataclass(frozen=True, kw_only=True)
class Report:
    """Everything a rendered report shows, independent of the output format."""

    title: str
    """Page title (the sweep name)."""
    kind: str = "Scaling"
    """What the page reports: "Scaling" (a training sweep) or "Serving" (bench-serve only)."""
    generated_at: str
    """When the report was built (ISO-8601 UTC)."""
    notes: tuple[str, ...]
    """Things the reader must be told first: empty sweep, failures, mixed schemas, gaps."""
    headline: Table
    """Best configuration and the figures at the largest GPU count."""
    sections: tuple[Section, ...] = field(default_factory=tuple)
    """Charts and tables, in page order."""


# -- formatting helpers ----------------------------------------------------------------------


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        if v.is_integer() and digits <= 1 and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:,.{digits}f}"
    return str(value)


def _ci(median: float, lo: float, hi: float, digits: int = 1, scale: float = 1.0) -> str:
    """``1,234.5 [1,200.1, 1,250.0]``; a bare number when there is no interval."""
    if median is None or not np.isfinite(median):
        return ""
    text = f"{median * scale:,.{digits}f}"
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo * scale:,.{digits}f}, {hi * scale:,.{digits}f}]"
    return text


def _pct(median: float, lo: float = np.nan, hi: float = np.nan) -> str:
    text = _ci(median, lo, hi, digits=1, scale=100.0)
    return text.replace(" [", "% [").replace("]", "%]") + ("%" if "[" not in text and text else "")


def _err(med: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict[str, Any] | None:
    """Asymmetric error bars from an interval (None when no point has one)."""
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


def _ws_axis(values: Sequence[float]) -> dict[str, Any]:
    ticks = sorted({int(v) for v in values if np.isfinite(v)})
    return {"title": "GPU count (world size)", "tickvals": ticks, "type": "log"}


# -- figures (pure) --------------------------------------------------------------------------


def fig_throughput(curves: pd.DataFrame, metric: str = THROUGHPUT) -> go.Figure | None:
    """Global throughput against GPU count per scaling curve, each with its ideal line."""
    if curves.empty:
        return None
    fig = go.Figure()
    for i, cid in enumerate(_top_curves(curves, metric)):
        c = curves[curves["curve_id"] == cid].sort_values("world_size")
        color = PALETTE[i % len(PALETTE)]
        name = c["curve"].iloc[0]
        med = c[metric].to_numpy(float)
        fig.add_trace(
            go.Scatter(
                x=c["world_size"],
                y=med,
                mode="lines+markers",
                name=name,
                legendgroup=cid,
                line={"color": color},
                error_y=_err(
                    med, c[f"{metric}_lo"].to_numpy(float), c[f"{metric}_hi"].to_numpy(float)
                ),
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
    return _layout(
        fig,
        "Throughput vs GPU count (dotted: ideal linear scaling from the reference point)",
        xaxis=_ws_axis(curves["world_size"]),
        yaxis={"title": "samples/s (global, median)", "type": "log"},
    )


def fig_efficiency(curves: pd.DataFrame) -> go.Figure | None:
    """Scaling efficiency per curve with its bootstrap 95% band; 100% is perfect scaling."""
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
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([x, x[::-1]]),
                    y=np.concatenate([hi, lo[::-1]]) * 100,
                    fill="toself",
                    fillcolor=_rgba(color, 0.15),
                    line={"width": 0},
                    hoverinfo="skip",
                    legendgroup=cid,
                    showlegend=False,
                    name="95% interval",
                )
            )
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
    title = "Scaling efficiency vs GPU count"
    # Promise a band only when one is drawn (single runs have no interval).
    title += " (band: bootstrap 95% interval)" if banded else " (single runs: no interval band)"
    return _layout(
        fig,
        title,
        xaxis=_ws_axis(curves["world_size"]),
        yaxis={"title": "efficiency (%)"},
    )


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


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
            lo, hi = part["speedup_lo"].to_numpy(float), part["speedup_hi"].to_numpy(float)
            fig.add_trace(
                go.Bar(
                    x=part["_x"],
                    y=med,
                    name=name,
                    marker={"color": color},
                    error_y=_err(med, lo, hi),
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


def fig_batch(summary: pd.DataFrame) -> go.Figure | None:
    """Throughput and peak memory against per-device batch size, one line per setting."""
    ok = summary[summary[THROUGHPUT].notna()]
    if ok.empty or ok["per_device_batch"].nunique() < 2:
        return None
    mem_col = "mem_peak_gib" if ok["mem_peak_gib"].notna().any() else "gpu_mem_used_gib_max"
    has_mem = ok[mem_col].notna().any()
    others = [
        c
        for c in analysis.label_columns(ok)
        if c not in ("per_device_batch", "global_batch", "grad_accum")
    ]
    fig = make_subplots(
        rows=1,
        cols=2 if has_mem else 1,
        subplot_titles=("throughput", "peak memory per GPU") if has_mem else ("throughput",),
    )
    lines = list(ok.groupby(analysis.row_keys(ok, others), sort=True)) if others else [("", ok)]
    lines.sort(key=lambda kv: -kv[1][THROUGHPUT].max())
    for i, (_, line) in enumerate(lines[:MAX_CURVES]):
        line = line.sort_values("per_device_batch")
        name = analysis.point_label(line.iloc[0], others)
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
                error_y=_err(
                    med,
                    line[f"{THROUGHPUT}_lo"].to_numpy(float),
                    line[f"{THROUGHPUT}_hi"].to_numpy(float),
                ),
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
    fig.update_xaxes(title_text="per-device batch", type="log")
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
        by = top.groupby(top[k].map(analysis.fmt_value))
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
    grid = top.assign(
        _a=top[a].map(analysis.fmt_value), _b=top[b].map(analysis.fmt_value)
    ).pivot_table(index="_b", columns="_a", values=THROUGHPUT, aggfunc="median")
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


def fig_stragglers(
    summary: pd.DataFrame, rank_times: dict[str, list[list[float]]], labels: dict[str, str]
) -> go.Figure | None:
    """Per-rank step-time spread: the spread per point, and per-rank step times of a few points."""
    multi = summary[(summary["world_size"] > 1) & summary["step_time_s_rank_spread"].notna()]
    if multi.empty and not rank_times:
        return None
    cols = 2 if rank_times else 1
    fig = make_subplots(
        rows=1,
        cols=cols,
        subplot_titles=(
            "slowest / fastest rank median step time",
            "step times per rank (worst points)",
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
        fig.update_xaxes(**_ws_axis(multi["world_size"]), row=1, col=1)
        fig.update_yaxes(title_text="spread (×)", row=1, col=1)
    for i, (label, times) in enumerate(rank_times.items()):
        for rank, steps in enumerate(times):
            fig.add_trace(
                go.Box(
                    y=steps,
                    # A short category per box (point P1.., rank); the legend names the points.
                    x=[f"P{i + 1} rank {rank}"] * len(steps),
                    name=f"P{i + 1}: {label}",
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
        fig.update_xaxes(title_text="point and rank", type="category", row=1, col=cols)
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


def fig_mfu_tokens(summary: pd.DataFrame, labels: dict[str, str]) -> go.Figure | None:
    """MFU against GPU count, and real vs padded tokens/s of the fastest points."""
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
                error_y=_err(
                    med, m["mfu_lo"].to_numpy(float) * 100, m["mfu_hi"].to_numpy(float) * 100
                )
                if "mfu_lo" in m
                else None,
                hovertemplate="N=%{x}<br>MFU %{y:.1f}%<br>%{text}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="GPU count", type="log", row=1, col=col)
        fig.update_yaxes(title_text="MFU (%)", rangemode="tozero", row=1, col=col)
        col += 1
    if has_tok:
        best = ok.sort_values(THROUGHPUT, ascending=False).head(8)
        names = [labels.get(k, k) for k in best["config_key"]]
        # Short categories on the axis (P1 = fastest), the full configuration on hover.
        cats = [f"P{i + 1}" for i in range(len(names))]
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
            title_text="fastest points (P1 fastest; hover for the configuration)",
            type="category",
            row=1,
            col=col,
        )
        fig.update_yaxes(title_text="tokens/s", row=1, col=col)
    return _layout(fig, "Model FLOPs utilisation and padding", barmode="group")


def _no_mfu_reason(ok: pd.DataFrame) -> str:
    """Why a sweep has no MFU: CPU ranks, or GPUs without a known peak."""
    devices = set(ok["device"].dropna()) if "device" in ok else set()
    if devices and devices <= {"cpu"}:
        return "CPU ranks have no peak FLOP/s to divide by"
    return "no known peak FLOP/s for this device and precision"


# -- assembling the report (pure) ------------------------------------------------------------


def fig_serving(rows: Sequence[dict[str, Any]]) -> go.Figure | None:
    """Requests/s (left) and latency p50/p95/p99 in ms (right) against concurrency.

    One colour per bench-serve run (rows grouped by started_at, checkpoint and texts per
    request); p50 solid, p95 dashed, p99 dotted. Levels with no successful request are left
    out of the lines (their values are null). None when there are no rows.
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
        name = f"{_checkpoint_label(ckpt)} · {tpr} text/req{batching} · {started}"
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
                    y=[_to_ms(r.get(f"latency_s_{q}")) for r in group],
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
    levels = sorted({r["concurrency"] for r in rows})
    for col in (1, 2):
        # Log axis: levels usually grow geometrically (1, 4, 16); ticks exactly at the levels.
        fig.update_xaxes(
            title_text="concurrent requests", type="log", tickvals=levels, row=1, col=col
        )
    fig.update_yaxes(title_text="requests/s", rangemode="tozero", row=1, col=1)
    # Log scale: queueing makes latency span milliseconds to seconds across the sweep.
    fig.update_yaxes(
        title_text="latency ms (p50 solid, p95 dash, p99 dot)", type="log", row=1, col=2
    )
    fig.update_layout(
        title="Inference service under load",
        legend={"orientation": "h", "y": -0.25},
        template="plotly_white",
    )
    return _say_log_scale(fig)


def _checkpoint_label(ckpt: str | None) -> str:
    """``.../train-tiny/checkpoints/step-00000426`` -> ``train-tiny/step-00000426``."""
    if not ckpt:
        return "model"
    path = Path(ckpt)
    if path.parent.name == layout.CHECKPOINTS_DIR and path.parent.parent.name:
        return f"{path.parent.parent.name}/{path.name}"
    return path.name


def _to_ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def telemetry_points(frame: pd.DataFrame) -> list[str]:
    """Which points' telemetry to plot: the fastest ok run of each GPU count, largest first."""
    ok = frame[(frame["status"] == "ok") & frame[THROUGHPUT].notna()]
    sampled = ok["telemetry_available"].astype("boolean").fillna(False).astype(bool)
    if sampled.any():  # prefer runs the sampler says it recorded
        ok = ok[sampled]
    if ok.empty:
        return []
    best = ok.sort_values(THROUGHPUT, ascending=False).groupby("world_size").head(1)
    best = best.sort_values("world_size", ascending=False)
    return list(best["point_dir"].dropna())[:MAX_TELEMETRY_POINTS]


def straggler_points(frame: pd.DataFrame, limit: int = 3) -> list[str]:
    """The multi-rank runs with the worst rank spread (their per-rank times are drawn)."""
    ok = frame[(frame["status"] == "ok") & (frame["world_size"] > 1)]
    ok = ok[ok["step_time_s_rank_spread"].notna()]
    worst = ok.sort_values("step_time_s_rank_spread", ascending=False)
    return list(worst["point_dir"].dropna())[:limit]


def build_report(
    frame: pd.DataFrame,
    *,
    env: dict[str, Any] | None,
    telemetry: pd.DataFrame | None = None,
    rank_times: dict[str, list[list[float]]] | None = None,
    title: str = "sweep",
    generated_at: str | None = None,
    serving: Sequence[dict[str, Any]] = (),
    max_batch_rows: Sequence[dict[str, Any]] = (),
    trials: pd.DataFrame | None = None,
    log_dirs: Collection[str] | None = None,
    projection: Any = None,
) -> Report:
    """Assemble the whole report from the ledger frame and the side files (all already read).

    ``serving`` holds bench-serve rows (serving.jsonl), shown in a section of their own;
    ``max_batch_rows`` the largest-batch searches (max_batch.jsonl) and ``trials`` their trial
    runs (harness.cost_report). ``log_dirs``: the point_dirs whose logs/ folder exists (None:
    not checked); the failures table names a logs folder only when it is there.
    ``projection`` a :class:`harness.project.Projection` (the "Projection" section).
    """
    from harness import cost_report  # it builds on this module's helpers

    telemetry = telemetry if telemetry is not None else pd.DataFrame()
    rank_times = rank_times or {}
    generated_at = generated_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    notes = list(frame.attrs.get("notes", []))
    summary = analysis.summarize(frame, SUMMARY_METRICS)
    curves = analysis.scaling(frame, summary=summary)
    label_cols = analysis.label_columns(summary)
    labels = {
        r["config_key"]: analysis.point_label(r, label_cols)
        for r in summary[["config_key", *label_cols]].to_dict("records")
    }
    run_labels = {
        d: f"{labels.get(k, k)} #{_num(rep)}"
        for d, k, rep in zip(frame["point_dir"], frame["config_key"], frame["repeat"], strict=True)
    }
    statuses = frame["status"] if len(frame) else pd.Series(dtype=object)
    n_runs, n_ok = len(frame), int((statuses == "ok").sum())
    # Skipped points never ran (they cannot run here): they are not failures.
    n_skipped = int((statuses == "skipped").sum())
    n_failed = n_runs - n_ok - n_skipped
    serving_only = n_runs == 0 and bool(serving)
    if serving_only:
        notes.insert(0, "This folder holds serving benchmarks only: no training sweep points.")
    elif n_runs == 0:
        notes.insert(0, "This sweep has no finished points yet: the ledger is empty.")
    elif n_ok == 0 and not n_skipped:
        notes.insert(0, f"All {n_runs} runs failed: no throughput to show. See the failures table.")
    elif n_ok == 0 and not n_failed:
        notes.insert(
            0,
            f"All {n_runs} points were skipped: none can run on this machine (the reasons are "
            "under Skipped). Nothing failed.",
        )
    elif n_ok == 0:
        notes.insert(
            0,
            f"No run finished ok: {n_failed} failed (see Failures) and {n_skipped} were skipped "
            "(see Skipped).",
        )
    else:
        if n_failed:
            notes.append(f"{n_failed} of {n_runs} runs failed; they are listed under Failures.")
        if n_skipped:
            notes.append(
                f"{n_skipped} of {n_runs} points were skipped (they cannot run on this "
                "machine); the reasons are listed under Skipped."
            )
    if n_ok and (summary["n_ok"] == 1).all():
        notes.append("Every point ran once: no repeats, so no confidence intervals.")
    if env is None and not serving_only:
        notes.append("env.json is missing: the environment of this sweep is unknown.")
    notes.extend(_telemetry_notes(frame, telemetry))

    cost = cost_report.cost_sections(
        summary,
        curves,
        labels,
        env=env,
        memory_frame=cost_report.memory_frame(frame, trials),
        searches=max_batch_rows,
    )
    # Energy per sample sits beside the efficiency curve; why it drops follows, then the
    # memory model and the largest batch.
    energy = [s for s in cost if s.id == "energy"]
    sections: list[Section] = []
    if n_ok:
        sections.extend(_scaling_sections(frame, summary, curves))
    sections.extend(energy)
    if n_ok:
        why = _why_section(summary, curves)
        if why is not None:
            sections.append(why)
        sections.extend(_projection_sections(projection))
    sections.extend(s for s in cost if s.id != "energy")
    if n_ok:
        sections.extend(_settings_sections(frame, summary))
        sections.extend(_hardware_sections(summary, telemetry, rank_times, labels, run_labels))
    if serving:
        sections.append(_serving_section(serving))
    failures = _failures_table(frame, labels, log_dirs)
    if failures is not None:
        sections.append(
            Section(
                id="failures",
                title="Failures",
                intro="Every run that failed, with the reason and where its logs are.",
                tables=(failures,),
            )
        )
    skipped = _skipped_table(frame, labels)
    if skipped is not None:
        sections.append(
            Section(
                id="skipped",
                title="Skipped",
                intro="Points this machine cannot run, so they never started (no logs).",
                tables=(skipped,),
            )
        )
    if len(summary):
        sections.append(
            Section(
                id="points",
                title="All points",
                intro="One row per configuration (median over ok repeats). Click a header to sort.",
                tables=(_points_table(summary, curves, label_cols),),
            )
        )
    if not serving_only:  # bench-serve rows carry their own checkpoint and host
        sections.append(
            Section(id="environment", title="Environment", tables=(_env_table(env, frame),))
        )
    sections.append(
        Section(
            id="definitions",
            title="What the numbers mean",
            tables=(
                Table(
                    columns=("term", "definition"),
                    rows=(*DEFINITIONS, *attribution.DEFINITIONS),
                ),
            ),
        )
    )
    return Report(
        title=title,
        kind="Serving" if serving_only else "Scaling",
        generated_at=generated_at,
        notes=tuple(notes),
        headline=_serving_headline(serving)
        if serving_only
        else _headline(frame, summary, curves, labels),
        sections=tuple(sections),
    )


def _serving_headline(rows: Sequence[dict[str, Any]]) -> Table:
    """A serving-only folder: the best requests/s and the latency at that level."""
    done = [r for r in rows if isinstance(r.get("requests_per_s"), (int, float))]
    out = [("bench-serve levels", _num(len(rows), 0))]
    if done:
        best = max(done, key=lambda r: r["requests_per_s"])
        out.append(("best requests/s", _num(best["requests_per_s"])))
        out.append(("at concurrency", _num(best.get("concurrency"), 0)))
        out.append(
            (
                "its p50 / p99 latency (ms)",
                " / ".join(
                    _num(_to_ms(best.get(k))) or "n/a" for k in ("latency_s_p50", "latency_s_p99")
                ),
            )
        )
    return Table(columns=("", ""), rows=tuple(out))


def _serving_section(rows: Sequence[dict[str, Any]]) -> Section:
    """The inference service under load: requests/s and latency per concurrency level."""
    ordered = sorted(rows, key=lambda r: (str(r.get("started_at")), r.get("concurrency", 0)))
    table = Table(
        columns=(
            "run",
            "concurrency",
            "requests",
            "errors",
            "requests/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
        ),
        rows=tuple(
            (
                f"{_checkpoint_label(r.get('checkpoint'))} · {r.get('started_at')}",
                _num(r.get("concurrency"), 0),
                _num(r.get("requests"), 0),
                _num(r.get("errors"), 0),
                _num(r.get("requests_per_s")),
                _num(_to_ms(r.get("latency_s_p50"))),
                _num(_to_ms(r.get("latency_s_p95"))),
                _num(_to_ms(r.get("latency_s_p99"))),
            )
            for r in ordered
        ),
    )
    figure = fig_serving(rows)
    return Section(
        id="serving",
        title="Serving",
        intro="distrinews-bench bench-serve against the HTTP inference service: closed-loop "
        "clients per concurrency level; latency is end to end (request sent to answer read).",
        figures=(figure,) if figure is not None else (),
        tables=(table,),
    )


def _telemetry_notes(frame: pd.DataFrame, telemetry: pd.DataFrame) -> list[str]:
    if not len(frame):
        return []
    claimed = frame["telemetry_available"].astype("boolean").fillna(False).astype(bool)
    if telemetry.empty and not claimed.any():
        return ["No GPU telemetry in this sweep (CPU run, or NVML unavailable)."]
    if telemetry.empty and claimed.any():
        return ["GPU telemetry was recorded but no telemetry.jsonl file could be read."]
    return []


def _headline(
    frame: pd.DataFrame, summary: pd.DataFrame, curves: pd.DataFrame, labels: dict[str, str]
) -> Table:
    n_points = len(summary)
    n_runs = len(frame)
    statuses = frame["status"].value_counts().to_dict() if n_runs else {}
    rows = [
        ("points / runs", f"{n_points} / {n_runs}"),
        ("runs by status", ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "none"),
    ]
    ok = summary[summary[THROUGHPUT].notna()]
    if not ok.empty:
        n_max = ok["world_size"].max()
        top = ok[ok["world_size"] == n_max].sort_values(THROUGHPUT, ascending=False).iloc[0]
        unit = device_unit(frame)
        rows.append((f"largest {unit} count", _num(n_max)))
        rows.append((f"best configuration at N={_num(n_max)}", labels.get(top["config_key"], "")))
        rows.append(
            (
                "its throughput (samples/s)",
                _ci(top[THROUGHPUT], top[f"{THROUGHPUT}_lo"], top[f"{THROUGHPUT}_hi"]),
            )
        )
        n = float(top["world_size"])
        per_gpu = _ci(top[THROUGHPUT] / n, top[f"{THROUGHPUT}_lo"] / n, top[f"{THROUGHPUT}_hi"] / n)
        rows.append((f"its samples/s per {unit}", per_gpu))
        eff = curves[curves["config_key"] == top["config_key"]]
        if not eff.empty:
            e = eff.iloc[0]
            ref = _num(e["base_world_size"])
            rows.append(
                (
                    f"its scaling efficiency ({e['scaling_mode']}, vs N={ref})",
                    _pct(e["efficiency"], e["efficiency_lo"], e["efficiency_hi"]),
                )
            )
        else:
            rows.append(("its scaling efficiency", f"no smaller {unit} count on its curve"))
        rows.append(
            ("its MFU", _pct(top["mfu"], top["mfu_lo"], top["mfu_hi"]) or "unknown (no peak)")
        )
        fastest = ok.sort_values(THROUGHPUT, ascending=False).iloc[0]
        if fastest["config_key"] != top["config_key"]:
            rows.append(("fastest overall", labels.get(fastest["config_key"], "")))
    return Table(columns=("", ""), rows=tuple(rows))


def device_unit(frame: pd.DataFrame) -> str:
    """What one rank is, for labels: "GPU" when any point ran on CUDA, else "CPU rank"."""
    devices = set(frame["device"].dropna()) if "device" in frame and len(frame) else set()
    return "CPU rank" if devices and devices <= {"cpu"} else "GPU"


def _scaling_sections(
    frame: pd.DataFrame, summary: pd.DataFrame, curves: pd.DataFrame
) -> list[Section]:
    if curves.empty:
        return [
            Section(
                id="scaling",
                title="Scaling",
                intro="Only one GPU count has ok results, so there is no scaling curve to draw.",
            )
        ]
    modes = sorted(set(curves["scaling_mode"]))
    described = {
        "weak": "weak scaling (per-device batch fixed, global batch grows with N)",
        "strong": "strong scaling (global batch fixed, per-device batch shrinks)",
    }
    n_curves = curves["curve_id"].nunique()
    more = (
        f" Showing the {MAX_CURVES} fastest of {n_curves} curves." if n_curves > MAX_CURVES else ""
    )
    intro = (
        "Curves use " + " and ".join(described[m] for m in modes) + "; each curve's name starts "
        "with its mode. Efficiency = X(N)·N0/(N·X(N0)) against the curve's smallest GPU count N0."
        + more
    )
    table = scaling_table(curves)
    figs = tuple(f for f in (fig_throughput(curves), fig_efficiency(curves)) if f is not None)
    return [Section(id="scaling", title="Scaling", intro=intro, figures=figs, tables=(table,))]


def scaling_table(curves: pd.DataFrame) -> Table:
    """One row per curve: its mode, reference N0, efficiency at each GPU count, top throughput."""
    # The reference count is 100% by definition: only GPU counts above some curve's N0 get a column.
    above = curves[curves["world_size"] > curves["base_world_size"]]
    sizes = sorted({int(n) for n in above["world_size"]})
    rows, sort_values = [], []
    by_curve: dict[str, list[dict[str, Any]]] = {}
    for r in curves.sort_values("world_size").to_dict("records"):
        by_curve.setdefault(r["curve_id"], []).append(r)
    for recs in by_curve.values():
        by_n = {int(r["world_size"]): r for r in recs}
        first, last = recs[0], recs[-1]
        cells = [
            _pct(by_n[n]["efficiency"], by_n[n]["efficiency_lo"], by_n[n]["efficiency_hi"])
            if n in by_n
            else ""
            for n in sizes
        ]
        rows.append(
            (
                first["curve"],
                _num(first["base_world_size"]),
                *cells,
                _ci(last[THROUGHPUT], last[f"{THROUGHPUT}_lo"], last[f"{THROUGHPUT}_hi"]),
            )
        )
        sort_values.append(
            (
                first["curve"],
                first["base_world_size"],
                *(by_n[n]["efficiency"] if n in by_n else None for n in sizes),
                last[THROUGHPUT],
            )
        )
    order = np.argsort([-(v[-1] or 0) for v in sort_values], kind="stable")
    return Table(
        columns=("curve", "N0", *(f"eff. N={n}" for n in sizes), "samples/s at largest N"),
        rows=tuple(rows[i] for i in order),
        sort_values=tuple(sort_values[i] for i in order),
        sortable=True,
    )


def _projection_sections(projection: Any) -> list[Section]:
    """Predicted efficiency to 1024 GPUs with its band, the measured points on it, the inputs."""
    if projection is None or not projection.rows:
        return []
    from harness.project import TABLE_COLUMNS, input_lines, table_rows

    s = projection.settings
    intro = (
        "What the model predicts at more GPUs than were measured, from this sweep's own "
        "measurements: step = compute-only step + the all-reduce time backward cannot hide + "
        "a straggler allowance. The all-reduce is bucketed (DDP's buckets, one after another; "
        "the bucket produced last in backward cannot hide), ring inside a node, hierarchical "
        "across nodes (ring or tree, whichever NCCL would pick), with a latency per algorithm "
        "step and 2(N−1)/N·bytes/busbw. Inputs: the compute-only step at N = 1, DDP's buckets, "
        f"the bus bandwidth and overlap measured at the largest N below each prediction (no "
        f"peeking), and past that the fabric {s['fabric']} ({s['gpus_per_node']} GPUs per "
        "node). Bands: 95% bootstrap over the measured inputs. Where the sweep measured an N, "
        "the measured efficiency sits on the curve and the table gives the error in "
        "percentage points. Other fabrics, hooks and GPU counts: distrinews-bench project."
    )
    figure = fig_projection(projection)
    tables = []
    by_curve: dict[Any, list[dict[str, Any]]] = {}
    for r in projection.rows:
        by_curve.setdefault(r.get("curve_id"), []).append(r)
    infos = {c["curve_id"]: c for c in projection.curves}
    for key in list(by_curve)[:MAX_CURVES]:
        rows = table_rows(by_curve[key])
        name = infos[key]["curve"] or "pure inputs"
        tables.append(
            Table(
                columns=("model input", ""),
                rows=tuple((name, line) for line in input_lines(projection, infos[key])),
            )
        )
        tables.append(Table(columns=TABLE_COLUMNS, rows=tuple(rows)))
    for note in projection.notes:
        intro += f" Note: {note}."
    return [
        Section(
            id="projection",
            title="Projection",
            intro=intro,
            figures=(figure,) if figure is not None else (),
            tables=tuple(tables),
        )
    ]


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
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([x, x[::-1]]),
                    y=np.concatenate([hi, lo[::-1]]),
                    fill="toself",
                    fillcolor=_rgba(color, 0.15),
                    line={"width": 0},
                    hoverinfo="skip",
                    legendgroup=str(key),
                    showlegend=False,
                    name="95% interval",
                )
            )
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


def _settings_sections(frame: pd.DataFrame, summary: pd.DataFrame) -> list[Section]:
    out = []
    figs = []
    for factor, ref, title in (
        ("precision", "fp32", "Precision speedup (vs fp32, or the slowest precision present)"),
        ("compile", False, "torch.compile speedup (vs eager)"),
    ):
        effect = analysis.factor_effect(frame, factor, reference=ref, summary=summary)
        fig = fig_factor(effect, factor, title)
        if fig is not None:
            figs.append(fig)
    if figs:
        out.append(
            Section(
                id="precision",
                title="Precision and compile",
                intro="Speedup of each setting over its reference with all else equal "
                "(bars: median ratio; whiskers: bootstrap 95% interval).",
                figures=tuple(figs),
            )
        )
    batch = fig_batch(summary)
    if batch is not None:
        out.append(
            Section(
                id="batch",
                title="Batch size",
                intro="Throughput and peak memory per GPU as the per-device batch grows.",
                figures=(batch,),
            )
        )
    knobs = analysis.varying(
        summary[summary[THROUGHPUT].notna()], (*analysis.DDP_COLUMNS, "nccl_env")
    )
    fig = fig_knobs(summary, knobs)
    if fig is not None:
        out.append(
            Section(
                id="knobs",
                title="DDP knobs and NCCL settings",
                intro=f"Varied: {', '.join(knobs)}. Compared at the largest device count.",
                figures=(fig,),
            )
        )
    return out


def _hardware_sections(
    summary: pd.DataFrame,
    telemetry: pd.DataFrame,
    rank_times: dict[str, list[list[float]]],
    labels: dict[str, str],
    run_labels: dict[str, str],
) -> list[Section]:
    out = []
    named_times = {run_labels.get(k, k): v for k, v in rank_times.items()}
    fig = fig_stragglers(summary, named_times, labels)
    if fig is not None:
        out.append(
            Section(
                id="stragglers",
                title="Stragglers",
                intro="A spread near 1.00 means all ranks step at the same pace; a slow rank "
                "holds every all-reduce back.",
                figures=(fig,),
            )
        )
    fig = fig_telemetry(telemetry, run_labels)
    if fig is not None:
        out.append(
            Section(
                id="telemetry",
                title="GPU telemetry",
                intro="NVML samples of the fastest run at each GPU count (utilisation and power: "
                "mean over GPUs; memory: max over GPUs).",
                figures=(fig,),
            )
        )
    fig = fig_mfu_tokens(summary, labels)
    if fig is not None:
        out.append(
            Section(
                id="mfu",
                title="MFU and padding",
                intro="MFU counts real tokens only; the gap between padded and real tokens/s is "
                "compute spent on padding.",
                figures=(fig,),
            )
        )
    return out


def _failures_table(
    frame: pd.DataFrame, labels: dict[str, str], log_dirs: Collection[str] | None = None
) -> Table | None:
    bad = frame[~frame["status"].isin(("ok", "skipped"))] if len(frame) else frame
    if bad.empty:
        return None
    bad = bad.sort_values(["status", "world_size", "config_key", "repeat"], kind="stable")
    rows = tuple(
        (
            r["status"],
            labels.get(r["config_key"], r["config_key"]),
            _num(r["repeat"]),
            "" if r["reason"] is None or r["reason"] != r["reason"] else str(r["reason"]),
            f"{r['point_dir']}/logs/"
            if isinstance(r["point_dir"], str) and (log_dirs is None or r["point_dir"] in log_dirs)
            else "no logs",
        )
        for r in bad.to_dict("records")
    )
    return Table(columns=("status", "point", "repeat", "reason", "logs"), rows=rows, sortable=True)


def _skipped_table(frame: pd.DataFrame, labels: dict[str, str]) -> Table | None:
    skipped = frame[frame["status"] == "skipped"] if len(frame) else frame
    if skipped.empty:
        return None
    skipped = skipped.sort_values(["world_size", "config_key", "repeat"], kind="stable")
    rows = tuple(
        (
            labels.get(r["config_key"], r["config_key"]),
            _num(r["repeat"]),
            "" if r["reason"] is None or r["reason"] != r["reason"] else str(r["reason"]),
        )
        for r in skipped.to_dict("records")
    )
    return Table(columns=("point", "repeat", "why it cannot run here"), rows=rows, sortable=True)


POINT_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("world_size", "N", 0),
    ("per_device_batch", "batch/device", 0),
    ("global_batch", "global batch", 0),
    ("precision", "precision", 0),
    ("compile", "compile", 0),
    ("scaling_mode", "mode", 0),
)


def _points_table(summary: pd.DataFrame, curves: pd.DataFrame, label_cols: list[str]) -> Table:
    eff = {
        r["config_key"]: r
        for r in curves[["config_key", "efficiency", "efficiency_lo", "efficiency_hi"]].to_dict(
            "records"
        )
    }
    extra = [c for c in label_cols if c not in {c for c, _, _ in POINT_COLUMNS}]
    columns = (
        *(h for _, h, _ in POINT_COLUMNS),
        *extra,
        "ok/runs",
        "samples/s [95% CI]",
        "samples/s/device",
        "efficiency",
        "MFU",
        "mem GiB",
        "rank spread",
        "failed",
    )
    rows, sort_values = [], []
    order = summary.sort_values([THROUGHPUT], ascending=False, na_position="last")
    for r in order.to_dict("records"):
        e = eff.get(
            r["config_key"],
            {"efficiency": np.nan, "efficiency_lo": np.nan, "efficiency_hi": np.nan},
        )
        n = float(r["world_size"]) if np.isfinite(r["world_size"]) else np.nan
        raw = (
            *(r[c] for c, _, _ in POINT_COLUMNS),
            *(r[c] for c in extra),
            r["n_ok"],
            r[THROUGHPUT],
            r[THROUGHPUT] / n,
            e["efficiency"],
            r["mfu"],
            r["mem_peak_gib"],
            r["step_time_s_rank_spread"],
            r["failed"],
        )
        text = (
            *(analysis.fmt_value(r[c]) for c, _, _ in POINT_COLUMNS),
            *(analysis.fmt_value(r[c]) for c in extra),
            f"{int(r['n_ok'])}/{int(r['n_runs'])}",
            _ci(r[THROUGHPUT], r[f"{THROUGHPUT}_lo"], r[f"{THROUGHPUT}_hi"]),
            _ci(r[THROUGHPUT] / n, r[f"{THROUGHPUT}_lo"] / n, r[f"{THROUGHPUT}_hi"] / n),
            _pct(e["efficiency"], e["efficiency_lo"], e["efficiency_hi"]),
            _pct(r["mfu"], r["mfu_lo"], r["mfu_hi"]),
            _ci(r["mem_peak_gib"], r["mem_peak_gib_lo"], r["mem_peak_gib_hi"], digits=2),
            _ci(
                r["step_time_s_rank_spread"],
                r["step_time_s_rank_spread_lo"],
                r["step_time_s_rank_spread_hi"],
                digits=3,
            ),
            r["failed"],
        )
        rows.append(text)
        sort_values.append(raw)
    return Table(
        columns=tuple(columns), rows=tuple(rows), sort_values=tuple(sort_values), sortable=True
    )


def _env_table(env: dict[str, Any] | None, frame: pd.DataFrame) -> Table:
    rows: list[tuple[str, str]] = []
    if env is None:
        rows.append((layout.ENV_JSON, "missing"))
    else:
        fields = env.get("fingerprint_fields") or {}
        rows.append(("fingerprint", str(env.get("fingerprint", ""))))
        for key, value in fields.items():
            rows.append((key, _env_value(value)))
        for key, value in env.items():
            # The fingerprint's fields come first; each is shown once.
            if key not in ("fingerprint", "fingerprint_fields", *fields):
                rows.append((key, _env_value(value)))
    if len(frame):
        prints = sorted({str(p) for p in frame["env_fingerprint"].dropna()})
        if len(prints) > 1:
            rows.append(("ledger fingerprints", "MIXED: " + ", ".join(prints)))
    return Table(columns=("field", "value"), rows=tuple(rows))


def _env_value(value: Any) -> str:
    """A readable cell: no raw None, [], {}, True/False."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "not available"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, dict)) and not value:
        return "none"
    numbers = isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)
    if numbers:
        return ", ".join(str(v) for v in value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        counts = pd.Series(value).value_counts()
        return ", ".join(f"{n} × {name}" for name, n in counts.items())
    if isinstance(value, (dict, list)):
        text = json.dumps(value, indent=1)
        return text if len(text) < 4000 else text[:4000] + " ..."
    return str(value)


# -- rendering (pure) ------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:26px}
h2{margin:36px 0 8px;font-size:20px;border-bottom:1px solid #dde;padding-bottom:4px}
.meta{color:#667;font-size:13px}
.notes{background:#fff7e0;border:1px solid #f0d48a;border-radius:6px;padding:8px 16px;margin:16px 0}
.notes li{margin:4px 0}
.card{background:#fff;border:1px solid #dde;border-radius:8px;padding:12px 16px;margin:12px 0}
.plot{background:#fff;border:1px solid #dde;border-radius:8px;margin:12px 0;padding:4px}
table{border-collapse:collapse;font-size:13px;background:#fff;width:100%}
th,td{border:1px solid #e2e4ea;padding:4px 8px;text-align:left;vertical-align:top}
td{white-space:pre-wrap}
th{background:#eef0f5}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" ▲"}
table.sortable th[aria-sort=descending]::after{content:" ▼"}
.headline td:first-child{color:#556;width:34%}
.headline td:last-child{font-weight:600}
.scroll{max-height:640px;overflow:auto;border:1px solid #dde;border-radius:8px}
nav a{margin-right:12px;font-size:13px}
"""

# Sorting: numbers by their raw value (data-v), text by locale order; blanks always last.
_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col];
        var v = cell.getAttribute("data-v");
        if (v === null || v === "") { return null; }
        var n = Number(v);
        return isNaN(n) ? v : n;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null) { return y === null ? 0 : 1; }
        if (y === null) { return -1; }
        var c = (typeof x === "number" && typeof y === "number") ? x - y
              : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def render_html(report: Report) -> str:
    """The whole page as one string: inline CSS, plotly.js once, figures, tables, sort script."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>distrinews {esc(report.kind.lower())} report: {esc(report.title)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{esc(report.kind)} report: {esc(report.title)}</h1>",
        f'<div class="meta">generated {esc(report.generated_at)} by distrinews-bench</div>',
    ]
    nav = " ".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in report.sections)
    parts.append(f"<nav>{nav}</nav>")
    if report.notes:
        items = "".join(f"<li>{esc(n)}</li>" for n in report.notes)
        parts.append(f'<div class="notes" id="notes"><ul>{items}</ul></div>')
    parts.append('<h2 id="headline">Headline</h2>')
    parts.append(_table_html(report.headline, css="headline"))
    plotly_included = False
    for section in report.sections:
        parts.append(f'<h2 id="{esc(section.id)}">{esc(section.title)}</h2>')
        if section.intro:
            parts.append(f"<p>{esc(section.intro)}</p>")
        for i, fig in enumerate(section.figures):
            div = pio.to_html(
                fig,
                full_html=False,
                include_plotlyjs=not plotly_included,  # the library once, inline
                div_id=f"fig-{section.id}-{i}",
                config={"displaylogo": False, "responsive": True},
                validate=False,
            )
            plotly_included = True
            parts.append(f'<div class="plot" data-figure="{esc(section.id)}">{div}</div>')
        for table in section.tables:
            parts.append(_table_html(table))
    parts.append(f"</main><script>{_SORT_JS}</script></body></html>")
    return "\n".join(parts)


def _table_html(table: Table, css: str = "") -> str:
    esc = html.escape
    classes = " ".join(c for c in (css, "sortable" if table.sortable else "") if c)
    head = "".join(f'<th scope="col">{esc(c)}</th>' for c in table.columns)
    body = []
    for i, row in enumerate(table.rows):
        raw = table.sort_values[i] if table.sort_values else row
        cells = "".join(
            f'<td data-v="{esc(_sort_attr(v))}">{esc(t)}</td>'
            if table.sortable
            else f"<td>{esc(t)}</td>"
            for t, v in zip(row, raw, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    head_html = f"<thead><tr>{head}</tr></thead>" if any(table.columns) else ""
    out = f'<table class="{classes}">{head_html}<tbody>{"".join(body)}</tbody></table>'
    return f'<div class="scroll">{out}</div>' if len(table.rows) > 25 else out


def _sort_attr(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value))
    return str(value)


def render_text(report: Report) -> str:
    """The headline, notes, scaling and failures tables as plain text for a terminal."""
    out = [f"{report.kind} report: {report.title}  (generated {report.generated_at})", ""]
    for note in report.notes:
        out.append(f"! {note}")
    if report.notes:
        out.append("")
    out.append(_table_text(report.headline, "Headline"))
    for section in report.sections:
        if section.id == "why":
            out.append(f"{section.title}\n{'-' * len(section.title)}\n{section.intro}\n")
        if section.id in (
            "scaling", "why", "energy", "max-batch", "serving", "failures", "skipped"
        ):  # fmt: skip
            for table in section.tables:
                out.append(_table_text(table, section.title))
            if section.intro and (not section.tables or section.id == "energy"):
                out.append(f"{section.title}: {section.intro}\n")
    return "\n".join(out).rstrip() + "\n"


def _table_text(table: Table, title: str) -> str:
    columns = table.columns if any(table.columns) else ("",) * len(table.columns)
    widths = [len(c) for c in columns]
    for row in table.rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [title, "-" * len(title)]
    if any(table.columns):
        lines.append(line(columns))
    lines.extend(line(r) for r in table.rows)
    return "\n".join(lines) + "\n"


# -- the I/O ---------------------------------------------------------------------------------


def load_report(sweep_dir: Path) -> Report:
    """Read a sweep folder (ledger, env.json, a few telemetry and record files) into a Report."""
    sweep_dir = _sweep_dir(sweep_dir)
    frame = analysis.load_frame(sweep_dir)
    env = analysis.load_env(sweep_dir)
    telemetry = analysis.load_telemetry(sweep_dir, telemetry_points(frame)) if len(frame) else None
    rank_times = (
        analysis.load_rank_step_times(sweep_dir, straggler_points(frame)) if len(frame) else {}
    )
    serving = (
        serving_store.read_serving_rows(sweep_dir)
        if serving_store.serving_path(sweep_dir).is_file()
        else []
    )
    trials_dir = sweep_dir / layout.MAX_BATCH_DIR
    log_dirs = {
        d
        for d in (frame["point_dir"].dropna().unique() if len(frame) else ())
        if (sweep_dir / str(d) / layout.LOGS_DIR).is_dir()
    }
    return build_report(
        frame,
        env=env,
        telemetry=telemetry,
        rank_times=rank_times,
        title=sweep_dir.name,
        serving=serving,
        max_batch_rows=max_batch.read_results(sweep_dir),
        trials=analysis.load_frame(trials_dir) if trials_dir.is_dir() else None,
        log_dirs=log_dirs,
        projection=_load_projection(sweep_dir, frame),
    )


def _load_projection(sweep_dir: Path, frame: pd.DataFrame) -> Any:
    """The default projection of a sweep (to 1024 GPUs, dgx-h100 past the measured points),
    or None when the sweep cannot feed one: no ok N = 1 point, or no compute-only step time
    (sweeps recorded before the worker measured it)."""
    from harness import project

    if frame.empty or "compute_step_time_s" not in frame.columns:
        return None
    ok = frame["status"] == "ok"
    if not (ok & pd.to_numeric(frame["compute_step_time_s"], errors="coerce").notna()).any():
        return None
    try:
        return project.run_project(
            sweep_dir, gpus=None, gpus_per_node=8, fabric=None, busbw_gbps=None, pure=None
        )
    except UserError:
        return None


def _sweep_dir(sweep_dir: Path) -> Path:
    """``sweep_dir`` as a Path, refused (UserError) when it is not a sweep's results folder.

    A results root (sweeps inside) names them; a folder holding no ledger, sweep.json or
    serving ledger is not results at all: refused, as export and compare do.
    """
    sweep_dir = Path(sweep_dir)
    if sweep_dir.is_dir() and not store.ledger_path(sweep_dir).is_file():
        inside = sorted(p.name for p in sweep_dir.iterdir() if store.ledger_path(p).is_file())
        if inside:  # a results root, not one sweep: say which sweeps it holds
            raise UserError(
                f"{sweep_dir}: not a sweep folder; it holds the sweeps {', '.join(inside)} -- "
                f"pass one of them, e.g. {sweep_dir / inside[0]}"
            )
        # A sweep just started has sweep.json and no ledger yet; a bench-serve folder has
        # serving.jsonl. Anything else is not results: refuse, as export and compare do.
        markers = (layout.SWEEP_JSON, layout.SERVING_LEDGER)
        if not any((sweep_dir / m).is_file() for m in markers):
            raise UserError(
                f"{sweep_dir}: not a sweep folder (no {layout.LEDGER_NAME}, {layout.SWEEP_JSON} or "
                f"{layout.SERVING_LEDGER}); pass results/<sweep>"
            )
    return sweep_dir


def is_report_html(head: bytes) -> bool:
    """Whether a file's first bytes are a report this module rendered (it may be replaced)."""
    return head.startswith(b"<!DOCTYPE html>") and b"<title>distrinews scaling report" in head


def render_report(sweep_dir: Path, out_path: Path | None = None) -> Path:
    """Render ``sweep_dir`` to one self-contained HTML file (atomically); return its path.

    ``out_path`` defaults to ``sweep_dir/report.html``. Bad input (missing folder, corrupt
    ledger) raises UserError with a one-line reason.
    """
    sweep_dir = Path(sweep_dir)
    if out_path is None:  # report.html is the sweep folder's own file (see harness.store)
        out = sweep_dir / layout.REPORT_HTML
        store.check_output(out, kind="HTML report", written_by_us=lambda head: True)
    else:
        out = Path(out_path)
        store.check_output(out, kind="HTML report", written_by_us=is_report_html)
    store.atomic_write_text(out, render_html(load_report(sweep_dir)))
    return out


# -- why efficiency drops (harness.attribution) ----------------------------------------------

#: Stack colours of the loss parts (unexplained in grey: it is the remainder, not a cause).
PART_COLORS = {
    "compute": "#636efa",
    "exposed_comm": "#ef553b",
    "data_wait": "#00cc96",
    "straggler": "#ab63fa",
    "unexplained": "#b0b7c3",
}


def fig_why(decomp: pd.DataFrame, curve_id: str) -> go.Figure | None:
    """Stacked bars: each GPU count's lost efficiency split into its parts (pp) on one curve.

    Parts can be negative (a part smaller than at N0, or a negative remainder): they stack
    below zero, and the black marker is the total 1 − E(N).
    """
    rows = decomp[(decomp["curve_id"] == curve_id) & decomp["explained"].astype(bool)]
    if rows.empty:
        return None
    rows = rows.sort_values("world_size")
    x = [f"N={int(n)}" for n in rows["world_size"]]
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
        xaxis={"title": f"GPU count (vs N0={int(rows['base_world_size'].iloc[0])})"},
        yaxis={"title": "lost efficiency (percentage points)"},
    )


def fig_allreduce(summary: pd.DataFrame, curve: pd.DataFrame) -> go.Figure | None:
    """Per GPU count on one curve: the all-reduce ceiling, DDP's buckets at the ceiling, and
    what DDP's step actually exposed, in ms per step."""
    keys = curve.loc[curve["world_size"] > 1, "config_key"]
    pts = summary[summary["config_key"].isin(keys)].sort_values("world_size")
    if pts.empty or pts["allreduce_time_s"].isna().all():
        return None
    x = [f"N={int(n)}" for n in pts["world_size"]]
    fig = go.Figure()
    bars = (
        ("allreduce_time_s", "ceiling: one all-reduce of the whole gradient", "#8c9bb5"),
        ("allreduce_bucketed_time_s", "DDP's buckets, one by one, at the ceiling", "#636efa"),
        ("exposed_comm_s", "exposed in DDP's step (not hidden by backward)", "#ef553b"),
    )
    for col, name, color in bars:
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
        xaxis={"title": "GPU count"},
        yaxis={"title": "ms per step"},
    )


def why_table(decomp: pd.DataFrame) -> Table:
    """Every decomposed point: efficiency, the points lost and each part, in pp."""
    rows, sort_values = [], []
    for r in decomp.sort_values(["curve", "world_size"]).to_dict("records"):
        parts = [r[f"{c}_pp"] for c in attribution.COMPONENTS]
        rows.append(
            (
                r["curve"],
                _num(r["world_size"], 0),
                _pct(r["efficiency"]),
                _pp(r["loss_pp"]),
                *(_pp(p) if r["explained"] else "not measured" for p in parts),
            )
        )
        sort_values.append((r["curve"], r["world_size"], r["efficiency"], r["loss_pp"], *parts))
    return Table(
        columns=(
            "curve",
            "N",
            "efficiency",
            "pp lost",
            *(f"{attribution.NAMES[c]} pp" for c in attribution.COMPONENTS),
        ),
        rows=tuple(rows),
        sort_values=tuple(sort_values),
        sortable=True,
    )


def _pp(value: float) -> str:
    return f"{value:.1f}" if np.isfinite(value) else ""


def why_sentence(decomp: pd.DataFrame, summary: pd.DataFrame) -> str | None:
    """The biggest cause of lost efficiency at the largest N, with its numbers."""
    row = attribution.headline_row(decomp, summary, THROUGHPUT)
    if row is None:
        return None
    by_key = summary.set_index("config_key")
    return attribution.biggest_cause(
        row, by_key.loc[row["config_key"]].to_dict(), by_key.loc[row["base_key"]].to_dict()
    )


def _why_section(summary: pd.DataFrame, curves: pd.DataFrame) -> Section | None:
    decomp = attribution.decompose(summary, curves)
    if decomp.empty:
        return None
    sentence = why_sentence(decomp, summary) or ""
    row = attribution.headline_row(decomp, summary, THROUGHPUT)
    curve = curves[curves["curve_id"] == row["curve_id"]]
    figs = tuple(
        f
        for f in (fig_why(decomp, row["curve_id"]), fig_allreduce(summary, curve))
        if f is not None
    )
    intro = (
        f"{sentence} Each GPU count's lost efficiency 1 − E(N), in percentage points against "
        "the curve's smallest GPU count N0, split into the causes measured after each point's "
        "window; the remainder is shown as it is (definitions at the end of the report)."
    )
    return Section(id="why", title="Why efficiency drops", intro=intro, figures=figs,
                   tables=(why_table(decomp),))  # fmt: skip


# -- JSON for machines -----------------------------------------------------------------------

#: Columns of each scaling-curve row in the JSON report.
JSON_CURVE_COLUMNS = (
    "curve_id", "curve", "scaling_mode", "world_size", "base_world_size", "config_key",
    THROUGHPUT, f"{THROUGHPUT}_lo", f"{THROUGHPUT}_hi", "speedup", "speedup_lo", "speedup_hi",
    "efficiency", "efficiency_lo", "efficiency_hi",
)  # fmt: skip


def build_json(frame: pd.DataFrame, *, title: str = "sweep") -> dict[str, Any]:
    """The report's numbers for machines: headline, scaling curves and the decomposition.

    Numbers stay numbers (NaN -> null); ``decomposition`` rows carry the configuration columns
    (analysis.CONFIG_COLUMNS, ``fault`` included), ``world_size``, ``efficiency`` and
    ``loss_pp`` = {compute, exposed_comm, data_wait, straggler, unexplained}.
    """
    summary = analysis.summarize(frame, SUMMARY_METRICS)
    curves = analysis.scaling(frame, summary=summary)
    decomp = attribution.decompose(summary, curves)
    by_key = summary.set_index("config_key") if len(summary) else summary
    headline: dict[str, Any] = {
        "points": len(summary),
        "runs": len(frame),
        "runs_by_status": frame["status"].value_counts().to_dict() if len(frame) else {},
    }
    ok = summary[summary[THROUGHPUT].notna()] if len(summary) else summary
    if len(ok):
        n_max = ok["world_size"].max()
        top = ok[ok["world_size"] == n_max].sort_values(THROUGHPUT, ascending=False).iloc[0]
        eff = curves[curves["config_key"] == top["config_key"]]
        headline.update(
            {
                "largest_world_size": n_max,
                "best_config_key": top["config_key"],
                THROUGHPUT: top[THROUGHPUT],
                f"{THROUGHPUT}_lo": top[f"{THROUGHPUT}_lo"],
                f"{THROUGHPUT}_hi": top[f"{THROUGHPUT}_hi"],
                "efficiency": eff["efficiency"].iloc[0] if len(eff) else None,
                "mfu": top["mfu"],
            }
        )
    headline["why"] = why_sentence(decomp, summary) if len(decomp) else None
    rows = []
    for r in decomp.to_dict("records"):
        config = by_key.loc[r["config_key"]]
        rows.append(
            {
                **{c: analysis.plain_value(config[c]) for c in analysis.CONFIG_COLUMNS},
                "config_key": r["config_key"],
                "curve_id": r["curve_id"],
                "scaling_mode": r["scaling_mode"],
                "world_size": analysis.plain_value(r["world_size"]),
                "base_world_size": analysis.plain_value(r["base_world_size"]),
                "efficiency": r["efficiency"],
                "loss_pp": attribution.loss_pp_dict(r),
                "total_loss_pp": r["loss_pp"],
            }
        )
    body = {
        "title": title,
        "headline": headline,
        "curves": curves[list(JSON_CURVE_COLUMNS)].to_dict("records"),
        "decomposition": rows,
        "definitions": {t: d for t, d in (*DEFINITIONS, *attribution.DEFINITIONS)},
    }
    return _json_clean(body)


def _json_clean(value: Any) -> Any:
    """Plain JSON: numpy scalars to Python, NaN/inf to null, whole floats kept as floats."""
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return None if pd.isna(value) else str(value)


def render_json(sweep_dir: Path) -> str:
    """The JSON report of a sweep folder (one object, pretty-printed)."""
    sweep_dir = _sweep_dir(sweep_dir)
    frame = analysis.load_frame(sweep_dir)
    return json.dumps(build_json(frame, title=sweep_dir.name), indent=2, allow_nan=False) + "\n"
