"""What a user reads: the changes as text, Markdown or JSON, the CI verdict, the HTML page.

The page (:func:`render_html`) is a :class:`harness.report.model.Report` rendered by the
scaling report's own page code (:func:`harness.report.page_html.render_html`: one
self-contained file, plotly.js inline once): a headline, the table of changes, and one chart
per series -- throughput and scaling efficiency over time, each run a point, each change point
a dashed line labelled with its size and what changed -- series with the newest regression
first.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import sqlalchemy as sa
from plotly.subplots import make_subplots

from harness.history import schema
from harness.history.changes import Change, Series
from harness.outputs import OutputKind
from harness.report.model import Report, Section, Table

#: Charts on one page at most (a store of thousands of series would make a page no browser
#: opens); the series with changes come first, and a note says how many were left out.
MAX_CHARTS = 300
#: Fields of what_changed shown first (the usual suspects), then the rest in name order.
_FIRST = (
    "git_sha",
    "torch",
    "cuda",
    "nccl",
    "driver",
    "gpu_uuids",
    "hostname",
    "fault",
    "fault_ms",
)


def short_value(value: Any, width: int = 40) -> str:
    """A what_changed value as text: commits shortened, long text cut."""
    if value is None:
        return "none"
    text = (",".join(map(str, value)) or "none") if isinstance(value, list) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def ordered_fields(what: dict[str, list[Any]]) -> list[str]:
    first = [f for f in _FIRST if f in what]
    return first + sorted(f for f in what if f not in _FIRST)


def describe_changes(what: dict[str, list[Any]], *, limit: int = 6) -> str:
    """``torch: 2.13.0 -> 2.14.0; commit abc1234..def5678`` (what a line or a label says)."""
    parts = []
    for name in ordered_fields(what):
        old, new = what[name]
        if name == "git_sha":
            parts.append(f"commit {short_value(old)[:7]}..{short_value(new)[:7]}")
        else:
            parts.append(f"{name}: {short_value(old, 24)} -> {short_value(new, 24)}")
    if not parts:
        return "nothing recorded changed"
    more = len(parts) - limit
    return "; ".join(parts[:limit]) + (f"; and {more} more" if more > 0 else "")


def pct(value: float, ci: Sequence[float] | None = None) -> str:
    """``-23.4% [-27.0%, -19.8%]``."""
    if not math.isfinite(value):
        return "-"
    text = f"{value:+.1f}%"
    if ci and all(math.isfinite(v) for v in ci):
        text += f" [{ci[0]:+.1f}%, {ci[1]:+.1f}%]"
    return text


# -- changes as text -------------------------------------------------------------------------


def render_changes(
    changes: Sequence[Change], series: Sequence[Series], *, metric: str, fmt: str, where: str
) -> str:
    """``history changes`` in the chosen format (text, markdown, json)."""
    if fmt == "json":
        body = {
            "store": where,
            "metric": metric,
            "series": len(series),
            "changes": [c.to_json() for c in changes],
        }
        return json.dumps(body, indent=2, sort_keys=False) + "\n"
    nights = sum(len(s.nights) for s in series)
    head = f"{len(series)} series, {nights} series-nights of {metric} in {where}: {_count(changes)}"
    if fmt == "markdown":
        return (
            f"**{head}**\n\n"
            + (markdown_table(changes) if changes else "")
            + ("\n" if changes else "")
        )
    lines = [head + (", newest first" if changes else "")]
    for c in changes:
        lines.append(f"{c.kind:<11} {pct(c.change_pct, c.change_pct_ci):<32} {c.series}")
        lines.append(
            f"  since {c.started_at}  sweep {c.sweep} ({c.sweep_dir})  commit "
            f"{(c.git_sha or 'unknown')[:12]}  p={c.pvalue:.2g}, {c.nights_before} night(s) "
            f"before, {c.nights_after} after"
        )
        lines.append(f"  what changed: {describe_changes(c.what_changed, limit=12)}")
    return "\n".join(lines) + "\n"


def _count(changes: Sequence[Change]) -> str:
    reg = sum(c.kind == "regression" for c in changes)
    imp = len(changes) - reg
    if not changes:
        return "no change"
    return f"{reg} regression(s), {imp} improvement(s)"


def markdown_table(changes: Sequence[Change]) -> str:
    """The changes as a Markdown table (a CI job summary renders it)."""
    lines = [
        "| series | change | since | commit | what changed |",
        "|---|---|---|---|---|",
    ]
    for c in changes:
        cells = [
            f"{c.kind}: {c.series}",
            pct(c.change_pct, c.change_pct_ci),
            f"{c.started_at} ({c.sweep})",
            f"`{(c.git_sha_before or '?')[:7]}..{(c.git_sha or '?')[:7]}`",
            describe_changes(c.what_changed),
        ]
        lines.append("| " + " | ".join(_md(x) for x in cells) + " |")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_check(
    changes: Sequence[Change], *, sweep: str, folder: str, n_series: int, metric: str
) -> str:
    """``history check``'s Markdown: the regressions this sweep opens, or that it opens none."""
    regressions = [c for c in changes if c.kind == "regression"]
    others = [c for c in changes if c.kind != "regression"]
    lines = [f"## distrinews history check: {_md(sweep)}", "", f"Sweep folder: `{folder}`", ""]
    if regressions:
        lines.append(
            f"**{len(regressions)} regression(s)** of {metric} open at this sweep, against the "
            f"history of its {n_series} series:"
        )
        lines += ["", markdown_table(regressions)]
    else:
        lines.append(
            f"No regression: this sweep opens no {metric} regression in its {n_series} series."
        )
    if others:
        lines += ["", f"{len(others)} improvement(s) open at this sweep too:", ""]
        lines.append(markdown_table(others))
    return "\n".join(lines) + "\n"


# -- the page --------------------------------------------------------------------------------


def load_points(st: schema.Store, series_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Each series' runs for the charts: time, throughput, efficiency, sweep, commit, repeat."""
    runs, sweeps = schema.runs, schema.sweeps
    out: dict[int, list[Any]] = {}
    if not series_ids:
        return out
    with st.read() as conn:
        for r in conn.execute(
            sa.select(
                runs.c.series_id,
                runs.c.started_at,
                runs.c.samples_per_s,
                runs.c.efficiency,
                sweeps.c.name,
                sweeps.c.git_sha,
                runs.c.repeat,
            )
            .join(sweeps, sweeps.c.id == runs.c.sweep_id)
            .where(runs.c.series_id.in_(list(series_ids)), runs.c.status == "ok")
            .order_by(runs.c.series_id, runs.c.started_at)
        ):
            out.setdefault(r.series_id, []).append(r)
    return out


def series_order(series: Sequence[Series], changes: Sequence[Change]) -> list[Series]:
    """Series with the newest regression first, then those with changes, then the rest."""
    newest: dict[int, tuple[int, str]] = {}
    for c in changes:
        rank = (2 if c.kind == "regression" else 1, c.started_at)
        newest[c.series_id] = max(newest.get(c.series_id, (0, "")), rank)
    return sorted(series, key=lambda s: (newest.get(s.id, (0, "")), s.label), reverse=True)


def figure(s: Series, points: Sequence[Any], changes: Sequence[Change]) -> go.Figure:
    """Throughput (top) and scaling efficiency (bottom) of one series over time."""
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.62, 0.38]
    )
    times = [p.started_at for p in points]
    hover = [
        f"{p.name} r{p.repeat}<br>commit {(p.git_sha or '?')[:10]}<br>{p.started_at}"
        for p in points
    ]
    fig.add_trace(
        go.Scatter(
            x=times,
            y=[p.samples_per_s for p in points],
            mode="markers",
            name="samples/s",
            marker={"size": 6, "color": "#2f6fd0"},
            text=hover,
            hovertemplate="%{y:,.1f} samples/s<br>%{text}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    eff = [
        (t, p.efficiency, h)
        for t, p, h in zip(times, points, hover, strict=True)
        if p.efficiency is not None
    ]
    fig.add_trace(
        go.Scatter(
            x=[e[0] for e in eff],
            y=[e[1] for e in eff],
            mode="markers",
            name="scaling efficiency",
            marker={"size": 6, "color": "#1b9e77"},
            text=[e[2] for e in eff],
            hovertemplate="efficiency %{y:.3f}<br>%{text}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    for c in changes:
        color = "#d62728" if c.kind == "regression" else "#2ca02c"
        fig.add_shape(
            type="line", x0=c.started_at, x1=c.started_at, yref="paper", y0=0, y1=1,
            line={"color": color, "dash": "dash", "width": 2},
        )  # fmt: skip
        label = f"{c.kind} {pct(c.change_pct)}: {describe_changes(c.what_changed, limit=3)}"
        fig.add_annotation(
            x=c.started_at, y=1.0, yref="paper", yanchor="bottom", showarrow=False,
            text=html.escape(label), font={"color": color, "size": 11}, xanchor="right",
        )  # fmt: skip
    fig.update_layout(
        title={"text": html.escape(s.label), "x": 0.01, "y": 0.98},
        height=430,
        margin={"l": 60, "r": 20, "t": 80, "b": 40},
        showlegend=False,
        template="plotly_white",
    )
    fig.update_yaxes(title_text="samples/s", row=1, col=1)
    fig.update_yaxes(title_text="efficiency", row=2, col=1)
    return fig


def build_page(
    st: schema.Store, series: Sequence[Series], changes: Sequence[Change], *, metric: str
) -> Report:
    """The history page's model (headline, changes table, one chart per series)."""
    ordered = series_order(series, changes)
    shown = ordered[:MAX_CHARTS]
    points = load_points(st, [s.id for s in shown])
    by_series: dict[int, list[Change]] = {}
    for c in changes:
        by_series.setdefault(c.series_id, []).append(c)
    with st.read() as conn:
        n_sweeps = conn.execute(sa.select(sa.func.count()).select_from(schema.sweeps)).scalar_one()
        n_runs = conn.execute(sa.select(sa.func.count()).select_from(schema.runs)).scalar_one()
    regressions = [c for c in changes if c.kind == "regression"]
    newest = regressions[0] if regressions else None
    headline = Table(
        columns=("", ""),
        rows=(
            ("store", st.where),
            ("sweeps, runs, series", f"{n_sweeps:,}, {n_runs:,}, {len(series):,}"),
            ("changes found (" + metric + ")", _count(changes)),
            (
                "newest regression",
                f"{pct(newest.change_pct, newest.change_pct_ci)} {newest.series} since "
                f"{newest.started_at}: {describe_changes(newest.what_changed)}"
                if newest
                else "none",
            ),
        ),
    )
    table = Table(
        columns=("kind", "series", "change", "since", "sweep", "commit", "p", "what changed"),
        rows=tuple(
            (
                c.kind,
                c.series,
                pct(c.change_pct, c.change_pct_ci),
                c.started_at,
                c.sweep,
                f"{(c.git_sha_before or '?')[:7]}..{(c.git_sha or '?')[:7]}",
                f"{c.pvalue:.2g}",
                describe_changes(c.what_changed, limit=20),
            )
            for c in changes
        ),
        sort_values=tuple(
            (c.kind, c.series, c.change_pct, c.started_at, c.sweep, c.git_sha or "", c.pvalue, "")
            for c in changes
        ),
        sortable=True,
    )
    notes = []
    if len(ordered) > len(shown):
        notes.append(
            f"{len(ordered) - len(shown)} series without a recent change are not drawn "
            f"(at most {MAX_CHARTS} charts); `distrinews-bench history changes` lists them all."
        )
    figures = tuple(figure(s, points.get(s.id, []), by_series.get(s.id, [])) for s in shown)
    return Report(
        title=st.where,
        kind="History",
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        notes=tuple(notes),
        headline=headline,
        sections=(
            Section(
                id="changes",
                title="Changes, newest first",
                intro=(
                    f"Change points of {metric} in every series (one configuration on one class "
                    "of machine), found by E-divisive means over one value per sweep (the median "
                    "of its runs); the size is the Hodges-Lehmann shift over the runs on either "
                    "side, with a 95% interval; 'what changed' lists every environment, sweep "
                    "or run field that differs between the last run before and the first after."
                ),
                tables=(table,),
            ),
            Section(
                id="series",
                title="Series",
                intro=(
                    "Throughput (top) and scaling efficiency (bottom) of each run over time; a "
                    "dashed line marks each change, red a regression, green an improvement. "
                    "Series with the newest regression come first."
                ),
                figures=figures,
            ),
        ),
    )


def is_history_html(head: bytes) -> bool:
    """Whether a file's first bytes are a history page (an older one may be replaced)."""
    return head.startswith(b"<!DOCTYPE html>") and b"<title>distrinews history report" in head


#: What ``history report`` writes: an earlier history page may be replaced, nothing else.
HISTORY_PAGE_KIND = OutputKind(
    name="history report", recognizes=lambda _path, head: is_history_html(head)
)
