"""The page model: what a report contains, whatever it is rendered to.

A :class:`Report` is a title, notes the reader must see first, a headline :class:`Table` and
:class:`Section` s (each a title, an intro, figures and tables of already formatted cells).
:mod:`harness.report.build` fills one from analysis frames; the renderers (``page_html``,
``page_text``) turn it into a page, and ``page_json`` gives the same numbers to machines.

Also here: the loading decisions -- which metrics get intervals (:data:`SUMMARY_METRICS`) and
which runs' side files are worth reading (:func:`telemetry_points`, :func:`straggler_points`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from harness.analysis import THROUGHPUT


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
    measured: Table | None = None
    """What was measured, before any number: devices, model, data (synthetic said so),
    sequence, precision, backend, hosts, machine class, load (:mod:`harness.report.measured`)."""
    answer: tuple[str, ...] = ()
    """The first screen's answer in sentences: how well it scales (speedup and efficiency
    with their intervals) and why (the biggest cause, or why it cannot be said)."""
    quiet_notes: tuple[str, ...] = ()
    """Expected absences (no GPU telemetry or MFU on a CPU run): told once, not as warnings."""
    sections: tuple[Section, ...] = field(default_factory=tuple)
    """Charts and tables, in page order."""


#: Metrics that get an interval (harness.analysis.median_interval) wherever the report shows them.
SUMMARY_METRICS = (THROUGHPUT, "mfu", "mem_peak_gib", "step_time_s_rank_spread")


#: Points whose GPU telemetry is plotted over time at most.
MAX_TELEMETRY_POINTS = 6


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
