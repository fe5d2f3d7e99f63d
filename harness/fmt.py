"""Every formatter of the report, compare and project: numbers and labels in, text out.

One home for how a number or a configuration is spelled, so the HTML page, the terminal text,
the regression gate and the projection table agree:

- cells: :func:`num` (thousands separators, whole numbers without decimals), :func:`ci` (a median
  and its interval, ``1,234.5 [1,200.1, 1,250.0]``), :func:`level` / :func:`levels` (how much
  an interval covers, ``75%``, ``≥ 87.8%``: every interval's label carries it, see
  harness.analysis), :func:`pct` (the same as a percentage),
  :func:`pp` (percentage points), :func:`value_ci` (the projection's spelling, ``-`` for no value),
  :func:`signed_pct` / :func:`signed_pp` / :func:`bracket` / :func:`rate` (compare's change
  columns), :func:`env_value` (an env.json field), :func:`to_ms`;
- labels: :func:`device_unit` (``GPU`` or ``CPU rank``: words follow the device),
  :func:`fmt_value` (a configuration value), :func:`label_columns` (which varying
  columns are worth naming a point by), :func:`point_label` (``precision=bf16
  per_device_batch=32``), :func:`curve_names` / :func:`group_names` (the names of analysis'
  scaling curves and factor groups), :func:`group_label` (a memory-model group),
  :func:`checkpoint_label`.

Pure: no I/O, no plotly, nothing from the renderers (a test holds that).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distrinews import layout
from harness import analysis

# -- cells -----------------------------------------------------------------------------------


def num(value: Any, digits: int = 1) -> str:
    """``1,234`` for a whole number (at ``digits`` <= 1), ``1,234.5`` otherwise; "" for none."""
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


def ci(median: float, lo: float, hi: float, digits: int = 1, scale: float = 1.0) -> str:
    """``1,234.5 [1,200.1, 1,250.0]``; a bare number when there is no interval."""
    if median is None or not np.isfinite(median):
        return ""
    text = f"{median * scale:,.{digits}f}"
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo * scale:,.{digits}f}, {hi * scale:,.{digits}f}]"
    return text


def level(coverage: float | None, *, at_least: bool = False) -> str:
    """An interval's coverage as a label says it: ``75%``, ``96.8%``, ``≥ 56.2%`` (a lower bound);
    "" for none. Rounded down, so a label never claims more than the interval covers."""
    if coverage is None or not np.isfinite(coverage):
        return ""
    tenths = np.floor(coverage * 1000 + 1e-9) / 10
    text = f"{tenths:.0f}%" if float(tenths).is_integer() else f"{tenths:.1f}%"
    return f"≥ {text}" if at_least else text


def levels(coverages: Iterable[float], *, at_least: bool = False) -> str:
    """The coverages of several intervals in one label: ``75%``, ``75-93.7%``; "" for none."""
    finite = sorted({float(c) for c in coverages if c is not None and np.isfinite(c)})
    if not finite:
        return ""
    low, high = level(finite[0]), level(finite[-1])
    text = low if low == high else f"{low.rstrip('%')}-{high}"
    return f"≥ {text}" if at_least else text


def interval_note(summary: pd.DataFrame, metric: str = analysis.THROUGHPUT) -> str | None:
    """One sentence for a reader when some interval of ``summary``'s points (and so of their
    ratios) covers less than 95%, with the repeats that would reach it; None when all do or
    there are no intervals."""
    n_ok = summary.loc[summary[metric].notna(), "n_ok"] if len(summary) else []
    counts = sorted({int(n) for n in n_ok if n >= 2})
    if not counts:
        return None
    side = np.sqrt(analysis.LEVEL)
    point = [analysis.median_rank(n)[1] for n in counts]
    ratio = [analysis.median_rank(n, side)[1] ** 2 for n in counts]
    if min(ratio) >= analysis.LEVEL:
        return None
    need_point = next(n for n in range(2, 99) if analysis.median_rank(n)[1] >= analysis.LEVEL)
    need_ratio = next(
        n for n in range(2, 99) if analysis.median_rank(n, side)[1] ** 2 >= analysis.LEVEL
    )
    goal = level(analysis.LEVEL)
    return (
        f"With {' / '.join(map(str, counts))} ok repeats a point's interval covers its median "
        f"{' / '.join(map(level, point))} of the time and an efficiency or speedup interval at "
        f"least {' / '.join(map(level, ratio))}, not {goal}: {need_point} repeats reach {goal} "
        f"for a point, {need_ratio} for a ratio of two points."
    )


def pct(median: float, lo: float = np.nan, hi: float = np.nan) -> str:
    """A fraction as ``91.2% [90.1%, 92.0%]`` (:func:`ci` times 100)."""
    text = ci(median, lo, hi, digits=1, scale=100.0)
    return text.replace(" [", "% [").replace("]", "%]") + ("%" if "[" not in text and text else "")


def pp(value: float) -> str:
    """Percentage points, one decimal, no sign: ``4.2``."""
    return f"{value:.1f}" if np.isfinite(value) else ""


def value_ci(
    value: float | None, ci: Sequence[float] | None, *, scale: float, fmt: str, unit: str = ""
) -> str:
    """``value`` (times ``scale``, formatted with ``fmt``) and its interval, or "-" (the
    projection's tables: a missing prediction is a dash, not a blank)."""
    if value is None:
        return "-"
    text = f"{value * scale:{fmt}}{unit}"
    if ci:
        text += f" [{ci[0] * scale:{fmt}}, {ci[1] * scale:{fmt}}]"
    return text


def pct_ci(value: float | None, ci: Sequence[float] | None = None) -> str:
    """A fraction and its interval as ``39.1% [38.7, 39.2]`` (projection tables)."""
    return value_ci(value, ci, scale=100, fmt=".1f", unit="%")


def ms_ci(value: float | None, ci: Sequence[float] | None = None) -> str:
    """Milliseconds and their interval as ``256.30 [254.54, 256.62]`` (projection tables)."""
    return value_ci(value, ci, scale=1, fmt=",.2f")


def signed_pct(v: float) -> str:
    """A relative change as ``+4.2%`` ("" when not finite)."""
    return "" if v is None or not np.isfinite(v) else f"{v * 100:+.1f}%"


def signed_pp(v: float) -> str:
    """A change in percentage points as ``-3.1 pp`` ("" when not finite)."""
    return "" if v is None or not np.isfinite(v) else f"{v:+.1f} pp"


def bracket(
    lo: float,
    hi: float,
    fmt: Callable[[float], str],
    coverage: float | None = None,
    *,
    at_least: bool = False,
) -> str:
    """An interval as ``[lo, hi]`` with each end spelled by ``fmt``, then its coverage when
    given (``[-25.0%, -15.1%] 96.8%``); "" when either end is missing."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    tail = level(coverage, at_least=at_least)
    return f"[{fmt(lo)}, {fmt(hi)}]" + (f" {tail}" if tail else "")


def rate(v: float, n: int) -> str:
    """A median and how many runs it is over: ``1,234.5 (n=3)``."""
    return "" if not np.isfinite(v) else f"{v:,.1f} (n={n})"


def to_ms(value: float | None) -> float | None:
    """Seconds to milliseconds, None kept."""
    return None if value is None else value * 1000.0


def env_value(value: Any) -> str:
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


# -- labels ----------------------------------------------------------------------------------


def device_unit(frame: pd.DataFrame) -> str:
    """What one rank is, for labels: "GPU" when any point ran on CUDA, else "CPU rank"."""
    devices = set(frame["device"].dropna()) if "device" in frame and len(frame) else set()
    return "CPU rank" if devices and devices <= {"cpu"} else "GPU"


def device_count_title(unit: str) -> str:
    """An axis or column title for the number of devices: ``CPU ranks (world size)``."""
    return f"{unit}s (world size)"


def fmt_value(value: Any) -> str:
    """A configuration value as a label shows it: the spelling analysis groups levels by
    (2 and 2.0 alike, missing ``-``, empty ``none``), so a label and its group always agree."""
    return analysis.value_key(value)


def label_columns(
    frame: pd.DataFrame, columns: Iterable[str] = analysis.CONFIG_COLUMNS
) -> list[str]:
    """The varying columns worth naming a point by: derived ones (ranks per node, global
    batch) are left out when the columns they follow from already say it."""
    cols = analysis.varying(frame, columns)
    if "world_size" in cols or "nodes" in cols:
        cols = [c for c in cols if c != "nproc_per_node"]
    if "global_batch" in cols and ({"world_size", "per_device_batch"} & set(cols)):
        cols.remove("global_batch")
    return cols


def point_label(
    row: pd.Series | dict[str, Any], columns: Sequence[str], *, unit: str | None = None
) -> str:
    """A short human name for a point: ``precision=bf16 per_device_batch=32``.

    With ``unit`` (:func:`device_unit`), the report's spelling: the device count reads as
    words and compile as what it is (``2 CPU ranks torch.compile precision=bf16`` instead of
    ``world_size=2 compile=True precision=bf16``).
    """
    parts = []
    for c in columns:
        if c == "world_size" and unit is not None:
            n = row[c]
            parts.append(f"{fmt_value(n)} {unit if n == 1 else unit + 's'}")
        elif c == "compile" and unit is not None and isinstance(row[c], (bool, np.bool_)):
            parts.append("torch.compile" if row[c] else "eager")
        else:
            parts.append(f"{c}={fmt_value(row[c])}")
    return " ".join(parts) if parts else "all points"


def curve_names(curves: pd.DataFrame, points: pd.DataFrame) -> dict[str, str]:
    """curve_id -> name of every curve of :func:`harness.analysis.scaling`: its mode, then the
    settings that tell that mode's curves apart (``weak: precision=bf16``; the bare mode when
    nothing does). ``points`` holds the configuration columns of the curves' config_keys (the
    ledger frame or its summary)."""
    if curves.empty:
        return {}
    configs = points.drop_duplicates("config_key").set_index("config_key", drop=False)
    names: dict[str, str] = {}
    for mode, part in curves.groupby("scaling_mode", sort=False):
        keys = list(analysis.curve_columns(mode))
        on_curves = configs.loc[pd.unique(part["config_key"])]
        cols = label_columns(on_curves, keys)
        for cid, key in part.groupby("curve_id", sort=False)["config_key"].first().items():
            names[cid] = f"{mode}: {point_label(configs.loc[key], cols)}" if cols else mode
    return names


def with_curve_names(curves: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """``curves`` with a ``curve`` column (:func:`curve_names`) right after ``curve_id``."""
    named = curves.copy()
    at = named.columns.get_loc("curve_id") + 1
    named.insert(at, "curve", named["curve_id"].map(curve_names(curves, points)).astype(object))
    return named


def group_names(effect: pd.DataFrame, summary: pd.DataFrame, factor: str) -> list[str]:
    """The name of each row's group in :func:`harness.analysis.factor_effect`: the settings
    held equal that vary across ``summary`` (the points with a median), GPU count left out
    (``per_device_batch=32``; ``all points`` when none varies)."""
    others = analysis.factor_others(factor)
    cols = [c for c in label_columns(summary, others) if c != "world_size"]
    by_key = summary.drop_duplicates("config_key").set_index("config_key")
    return [point_label(by_key.loc[k], cols) for k in effect["config_key"]]


def group_label(row: dict[str, Any] | pd.Series) -> str:
    """``base bf16 fixed@128 x8 cuda`` -- a memory-model group (or a searched configuration)."""
    compiled = " compile" if bool(row.get("compile")) else ""
    return (
        f"{row.get('model')} {row.get('precision')} {row.get('seq_policy')}@"
        f"{num(row.get('max_length'))} x{num(row.get('world_size'))} "
        f"{row.get('device')}{compiled}"
    )


def checkpoint_label(ckpt: str | None) -> str:
    """``.../train-tiny/checkpoints/step-00000426`` -> ``train-tiny/step-00000426``."""
    if not ckpt:
        return "model"
    path = Path(ckpt)
    if path.parent.name == layout.CHECKPOINTS_DIR and path.parent.parent.name:
        return f"{path.parent.parent.name}/{path.name}"
    return path.name
