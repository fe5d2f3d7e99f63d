"""Why efficiency drops: split every scaling point's lost efficiency into measured causes.

Pure pandas: takes :func:`harness.analysis.per_configuration` (per-configuration medians) and
:func:`harness.analysis.scaling` (efficiency per curve and GPU count), returns frames and
sentences. The measurements come from the worker (distrinews/explain.py, defined in
distrinews/metrics.py): per optimizer step, the compute-only time, the data wait, the straggler
wait and the exposed communication.

The idea: a synchronous DDP step at N ranks costs roughly compute + data wait + straggler wait
+ exposed communication. Against the curve's reference point N0 (its smallest GPU count), each
part that grew costs efficiency in proportion to the step it now sits in::

    1 − E(N) = Σ_part (x_part(N) − k·x_part(N0)) / T(N)  +  unexplained

with T(N) the measured window's seconds per optimizer step and k = 1 (weak scaling) or N0/N
(strong scaling). The remainder is what the four parts do not account for; it is computed, not
assumed, so the parts and the remainder always sum exactly to 1 − E(N) and a large remainder is
shown as such. The definitions (:data:`DEFINITIONS`) are the one source for the report and the
docs/why.md.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

#: The parts of 1 − E(N), in the order they are stacked and named.
COMPONENTS = ("compute", "exposed_comm", "data_wait", "straggler", "unexplained")
#: The per-step seconds (ledger metric) each measured part is made of.
SOURCES = {
    "compute": "compute_step_time_s",
    "exposed_comm": "exposed_comm_s",
    "data_wait": "data_wait_s",
    "straggler": "straggler_wait_s",
}
#: Parts that are zero by definition at one rank (no all-reduce, nobody to wait for): the
#: worker records them as null there, and the decomposition reads that null as 0.
ZERO_AT_ONE_RANK = ("exposed_comm", "straggler")
#: Plain names for sentences and legends.
NAMES = {
    "compute": "compute slowdown",
    "exposed_comm": "exposed all-reduce",
    "data_wait": "data wait",
    "straggler": "straggler wait",
    "unexplained": "unexplained",
}
STRONG_COMPUTE_NAME = "compute (smaller per-device batch)"

#: What the decomposition means: printed in the report and docs/why.md (a test keeps them equal).
DEFINITIONS: tuple[tuple[str, str], ...] = (
    (
        "Lost efficiency",
        "1 − E(N) in percentage points (pp), split against the curve's reference point N0 "
        "(its smallest GPU count): 1 − E(N) = compute + exposed_comm + data_wait + straggler + "
        "unexplained, each part = (x(N) − k·x(N0)) / T(N), with x the part's seconds per "
        "optimizer step, T(N) the measured window's seconds per step, k = 1 for weak scaling "
        "and N0/N for strong scaling.",
    ),
    (
        "Weak scaling decomposition",
        "Each device's work per step is the same at N and N0 (k = 1): any second a part adds "
        "per step is lost efficiency.",
    ),
    (
        "Strong scaling decomposition",
        "Each device's share of the fixed global batch shrinks to N0/N, so the ideal step "
        "shrinks too (k = N0/N). The compute part then includes the smaller per-device batch's "
        "lower efficiency (small batches keep a device less busy): it is named compute "
        "(smaller per-device batch).",
    ),
    (
        "compute",
        "compute_step_time_s: an optimizer step under DDP's no_sync() (no all-reduce), same "
        "data stream, without its data wait; median over steps, then the lower median over "
        "ranks (the typical rank).",
    ),
    (
        "exposed_comm",
        "exposed_comm_s: the slowest rank's synchronised step minus its compute-only step "
        "(medians): the all-reduce time backward did not hide. overlap_share = 1 − exposed / "
        "the all-reduce ceiling (allreduce_time_s: one all-reduce of the gradient's bytes and "
        "dtype, same process group, median after warmup).",
    ),
    (
        "data_wait",
        "data_wait_s: seconds per step waiting for the next batch (mean over ranks).",
    ),
    (
        "straggler",
        "straggler_wait_s: per step, the slowest rank's compute-only step minus the typical "
        "rank's (median over steps): how long the others wait for the slowest.",
    ),
    (
        "unexplained",
        "What the four parts do not account for: 1 − E(N) minus their sum, shown as it is "
        "(negative too), never clipped. Noise, and costs none of the parts measures.",
    ),
)

#: Columns of :func:`decompose`.
COLUMNS = (
    "curve_id",
    "curve",
    "scaling_mode",
    "world_size",
    "base_world_size",
    "config_key",
    "base_key",
    "efficiency",
    "step_time_s",
    "loss_pp",
    *(f"{c}_pp" for c in COMPONENTS),
    "excess_step_s",
    *(f"{c}_s" for c in COMPONENTS),
    "explained",
)


def step_time_s(summary: pd.DataFrame) -> pd.Series:
    """Seconds per optimizer step over the measured window (the slowest rank's window)."""
    return summary["measured_time_s"].astype(float) / summary["measured_steps"].astype(float)


def part_seconds(summary: pd.DataFrame) -> pd.DataFrame:
    """Per point (indexed by config_key): each measured part in seconds per step.

    Parts that are zero by definition at one rank read 0 there; a part missing elsewhere
    (explain off, or a ledger older than the measurements) stays NaN.
    """
    out = pd.DataFrame(index=summary["config_key"].to_numpy())
    one_rank = summary["world_size"].astype(float).to_numpy() == 1
    for part, col in SOURCES.items():
        values = (
            pd.to_numeric(summary[col], errors="coerce").astype(float).to_numpy()
            if col in summary.columns
            else np.full(len(summary), np.nan)
        )
        if part in ZERO_AT_ONE_RANK:
            values = np.where(one_rank & np.isnan(values), 0.0, values)
        out[part] = values
    out["step_time_s"] = step_time_s(summary).to_numpy()
    return out


def decompose(summary: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per curve point with N > N0: efficiency, 1 − E(N) and its parts, in pp.

    ``explained`` is False where a part was not measured (its pp and the remainder are NaN
    then: nothing is guessed). Where it is True, the parts plus ``unexplained_pp`` equal
    ``loss_pp`` exactly.
    """
    if curves.empty or summary.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    parts = part_seconds(summary)
    rows = curves[curves["world_size"] > curves["base_world_size"]].copy()
    if rows.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    here = parts.loc[rows["config_key"]].to_numpy()
    base = parts.loc[rows["base_key"]].to_numpy()
    names = list(parts.columns)
    strong = (rows["scaling_mode"] == "strong").to_numpy()
    n, n0 = rows["world_size"].to_numpy(float), rows["base_world_size"].to_numpy(float)
    k = np.where(strong, n0 / n, 1.0)
    step = here[:, names.index("step_time_s")]
    rows["step_time_s"] = step
    rows["loss_pp"] = (1.0 - rows["efficiency"].to_numpy(float)) * 100.0
    # The same split in seconds per step over the ideal step k·T(N0) (for comparing two
    # configurations, whose pp sit on different T(N)).
    rows["excess_step_s"] = step - k * base[:, names.index("step_time_s")]
    measured = np.zeros(len(rows))
    measured_s = np.zeros(len(rows))
    complete = np.ones(len(rows), dtype=bool)
    for part in SOURCES:
        i = names.index(part)
        excess = here[:, i] - k * base[:, i]
        with np.errstate(invalid="ignore", divide="ignore"):
            pp = excess / step * 100.0
        rows[f"{part}_pp"], rows[f"{part}_s"] = pp, excess
        complete &= np.isfinite(pp)
        measured = measured + np.nan_to_num(pp)
        measured_s = measured_s + np.nan_to_num(excess)
    rows["unexplained_pp"] = np.where(complete, rows["loss_pp"].to_numpy() - measured, np.nan)
    rows["unexplained_s"] = np.where(complete, rows["excess_step_s"] - measured_s, np.nan)
    for part in SOURCES:
        rows.loc[~complete, [f"{part}_pp", f"{part}_s"]] = np.nan
    rows["explained"] = complete
    # ``curve`` (the curve's name) is there when the caller named the curves
    # (harness.fmt.with_curve_names); the numbers do not need it.
    return rows.reindex(columns=list(COLUMNS)).reset_index(drop=True)


def extra_loss_shares(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """Which parts the extra loss of ``other`` over ``reference`` (two :func:`decompose` rows of
    the same GPU count, e.g. with and without a planted fault) comes from, as shares summing
    to 1: each part's extra seconds per step over the extra step seconds.

    Seconds, not percentage points: the two rows' pp are shares of different step times, so
    a part that did not change in seconds would seem to shrink in the slower row.
    """
    extra = float(other["excess_step_s"]) - float(reference["excess_step_s"])
    if not math.isfinite(extra) or extra == 0:
        raise ValueError("the two rows lose the same time per step: no extra loss to split")
    return {c: (float(other[f"{c}_s"]) - float(reference[f"{c}_s"])) / extra for c in COMPONENTS}


def part_name(part: str, mode: str) -> str:
    """The part's plain name; in strong scaling compute names the per-device-batch effect."""
    return STRONG_COMPUTE_NAME if part == "compute" and mode == "strong" else NAMES[part]


def biggest_cause(row: dict[str, Any], point: dict[str, Any], base: dict[str, Any]) -> str:
    """One sentence: the biggest part of the loss at this point, with its numbers.

    ``row`` is a :func:`decompose` row; ``point``/``base`` the summary rows of the point and
    its curve's reference point (for the seconds behind the percentage points).
    """
    n = _int(row["world_size"])
    loss = float(row["loss_pp"])
    if not row.get("explained"):
        return f"At N={n}, {loss:.1f} points are lost; their causes were not measured."
    if loss <= 0:
        return f"At N={n} no efficiency is lost (efficiency {row['efficiency']:.0%})."
    part = max(COMPONENTS, key=lambda c: float(row[f"{c}_pp"]))
    share = float(row[f"{part}_pp"])
    name = part_name(part, row["scaling_mode"])
    head = f"At N={n}, {share:.1f} of the {loss:.1f} points lost are {name}"
    ms = 1e3
    if part == "exposed_comm":
        ceiling, overlap = point.get("allreduce_time_s"), point.get("overlap_share")
        if _finite(ceiling) and _finite(overlap):
            return (
                f"{head}: backward hides {overlap:.0%} of a {ceiling * ms:.1f} ms all-reduce "
                f"({point['exposed_comm_s'] * ms:.1f} ms exposed per step)."
            )
        return f"{head}: {point['exposed_comm_s'] * ms:.1f} ms of all-reduce exposed per step."
    if part == "straggler":
        return (
            f"{head}: the typical rank waits {point['straggler_wait_s'] * ms:.1f} ms per step "
            "for the slowest."
        )
    if part == "data_wait":
        return (
            f"{head}: {point['data_wait_s'] * ms:.1f} ms per step waiting for the next batch "
            f"(N={_int(row['base_world_size'])}: {base['data_wait_s'] * ms:.1f} ms)."
        )
    if part == "compute":
        k = row["base_world_size"] / row["world_size"] if row["scaling_mode"] == "strong" else 1.0
        return (
            f"{head}: a compute-only step takes {point['compute_step_time_s'] * ms:.1f} ms "
            f"against an ideal {base['compute_step_time_s'] * k * ms:.1f} ms "
            f"(N={_int(row['base_world_size'])})."
        )
    return f"{head}: none of the measured causes accounts for them."


def headline_row(decomp: pd.DataFrame, summary: pd.DataFrame, metric: str) -> dict[str, Any] | None:
    """The decomposition row the report's sentence is about: at the largest N, the fastest
    configuration there (as the headline picks it) among the explained rows."""
    rows = decomp[decomp["explained"].astype(bool)] if len(decomp) else decomp
    if rows.empty:
        rows = decomp
    if rows.empty:
        return None
    top = rows[rows["world_size"] == rows["world_size"].max()]
    speed = summary.set_index("config_key")[metric]
    order = top["config_key"].map(speed).fillna(-math.inf).to_numpy()
    return top.iloc[int(np.argmax(order))].to_dict()


def loss_pp_dict(row: dict[str, Any]) -> dict[str, float | None]:
    """The parts of one row as ``{compute, exposed_comm, data_wait, straggler, unexplained}``."""
    return {c: _json_number(row.get(f"{c}_pp")) for c in COMPONENTS}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _json_number(value: Any) -> float | None:
    return float(value) if _finite(value) else None


def _int(value: Any) -> int:
    return round(float(value))
