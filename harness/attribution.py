"""Why efficiency drops: split every scaling point's lost efficiency into measured causes.

Pure pandas: takes :func:`harness.analysis.per_configuration` (per-configuration medians) and
:func:`harness.analysis.scaling` (efficiency per curve and GPU count), returns frames and
sentences. The measurements come from the worker (distrinews/explain.py, distrinews/timing.py;
figures in distrinews/metrics.py): per optimizer step of the measured window, timed from the
inside by the step probe, the typical rank's own work, its waiting for a core, its waiting for
the last rank, the last rank's waiting for the all-reduce (split at what the all-reduce costs
alone), and the window's data wait.

The idea: a synchronous DDP step at N ranks costs the typical rank's work + waiting for a core
+ waiting for the data + waiting for the slowest rank + the all-reduce backward did not hide.
Those five are measured inside the same steps, so they add up to the step by construction.
Against the curve's reference point N0 (its smallest GPU count), each part that grew costs
efficiency in proportion to the step it now sits in::

    1 − E(N) = Σ_part (x_part(N) − k·x(N0)) / T(N)  +  unexplained

with T(N) the measured window's seconds per optimizer step and k = 1 (weak scaling) or N0/N
(strong scaling). The remainder is computed, not assumed, so the parts and the remainder always
sum exactly to 1 − E(N). Each point is also checked against what else the same run measured
(:func:`checks`): a part larger than the all-reduce inside the step, a straggler wait the
ranks' spread cannot explain, a probed step unlike the window's, a large remainder -- each
named in a sentence the report prints beside the chart. The definitions (:data:`DEFINITIONS`)
are the one source for the report and docs/why.md.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

#: The parts of 1 − E(N), in the order they are stacked and named.
COMPONENTS = ("compute", "contention", "exposed_comm", "data_wait", "straggler", "unexplained")
#: The per-step seconds (ledger metrics) each measured part is the sum of. Compute and
#: contention also trade the GPU's clock-throttling loss (:func:`part_seconds`).
SOURCES = {
    "compute": ("step_work_s",),
    "contention": ("run_queue_wait_s", "comm_contention_s", "straggler_run_queue_s"),
    "exposed_comm": ("exposed_comm_s",),
    "data_wait": ("data_wait_s",),
    "straggler": ("straggler_wait_s",),
}
#: Metrics a part may lack and still be measured: absent counters (no schedstat, a CUDA
#: run's host thread, one rank without a ceiling) mean that time sits in compute instead.
OPTIONAL = ("run_queue_wait_s", "comm_contention_s", "straggler_run_queue_s")
#: Parts that are zero by definition at one rank (nobody to wait for): a null there is 0.
ZERO_AT_ONE_RANK = ("exposed_comm", "straggler")
#: The telemetry column with the GPU's clock-throttling loss (harness.telemetry).
CLOCK_LOSS = "gpu_clock_loss_share"
#: Plain names for sentences and legends.
NAMES = {
    "compute": "compute slowdown",
    "contention": "contention",
    "exposed_comm": "exposed all-reduce",
    "data_wait": "data wait",
    "straggler": "straggler wait",
    "unexplained": "unexplained",
}
STRONG_COMPUTE_NAME = "compute (smaller per-device batch)"
#: A check fails beyond these: |unexplained| over max(5 pp, 15% of the loss), a part below
#: −5 pp, a time beyond its bound by more than 10% and half a millisecond.
UNEXPLAINED_PP, UNEXPLAINED_SHARE, NEGATIVE_PP = 5.0, 0.15, -5.0
#: ... and the typical rank's probed step beyond this share of the window's step: the probe's
#: marks leave out what happens between steps (its own bookkeeping, the window's barriers),
#: which a loaded box stretches by several percent.
PROBE_STEP_REL = 0.15
REL_TOL, ABS_TOL_S = 0.10, 0.0005

#: What the decomposition means: printed in the report and docs/why.md (a test keeps them equal).
DEFINITIONS: tuple[tuple[str, str], ...] = (
    (
        "Lost efficiency",
        "1 − E(N) in percentage points (pp), split against the curve's reference point N0 "
        "(its smallest GPU count): 1 − E(N) = compute + contention + exposed_comm + data_wait "
        "+ straggler + unexplained, each part = (x(N) − k·x(N0)) / T(N), with x the part's "
        "seconds per optimizer step, T(N) the measured window's seconds per step, k = 1 for "
        "weak scaling and N0/N for strong scaling. The parts are measured inside the measured "
        "window's own steps, on every rank, by the step probe (on whenever explain is: DDP's "
        "all-reduce then runs through a Python comm hook that times it); one rank included: "
        "DDP runs its reducer over a group of one, and what that costs belongs to the "
        "reference.",
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
        "Typical rank",
        "The rank whose mean work (below) over the measured window is the lower median of the "
        "ranks' (with two ranks, the one that worked less on average): one rank for the whole "
        "window, so its work per step is one rank's, not the least of N noisy draws. Its "
        "waits are what a synchronous step costs everybody else.",
    ),
    (
        "compute",
        "step_work_s: the typical rank's step minus its data wait, its waits (DDP's forward "
        "collective, and from its last bucket's comm-hook call until every bucket's all-reduce "
        "completed, never below 0) and its run-queue wait, clamped at 0 per step, mean over "
        "the window's steps. It "
        "includes DDP's own work in the step (gradients copied into buckets and back, the "
        "hook's division). On a GPU the share lost to clock throttling (gpu_clock_loss_share) "
        "moves to contention. compute_step_time_s (a step under no_sync(), no all-reduce, "
        "median) is shown beside it and is not part of the sum.",
    ),
    (
        "contention",
        "Time lost to competing for the hardware: run_queue_wait_s (CPU: per step, the "
        "typical rank's training thread runnable but waiting for a core, from "
        "/proc/thread-self/schedstat, data fetches excluded, never below 0; blank without "
        "schedstat or on "
        "CUDA, and that time then stays in compute) + comm_contention_s (the last rank's wait "
        "for the buckets beyond what they expose at their uncontended ceiling: the all-reduce "
        "running slower inside the step, beside backward, the other ranks and whatever else "
        "wants the cores, than alone on free cores) + straggler_run_queue_s (per step, the "
        "part of the typical rank's wait for the last rank that the last rank spent waiting "
        "for a core beyond the typical rank's own wait: a busy core slows one rank and, "
        "through the synchronous step, everyone) + on a GPU "
        "step_work_s × gpu_clock_loss_share. The report names the evidence beside it.",
    ),
    (
        "exposed_comm",
        "exposed_comm_s: per step, the waits of the rank that arrived last (the shortest "
        "waits: nobody left to wait for, so only communication): DDP's forward collective as "
        "measured, plus its wait for the buckets' all-reduce capped at what the buckets would "
        "expose at their ceiling (each bucket starting when it is ready and the one before it "
        "is done, costing its ceiling without the wait for a core, allreduce_uncontended_s in "
        "record.json buckets = allreduce_time_s minus the rank's threads' run-queue wait during "
        "it, plus what its comm hook spent before issuing it: dividing, compressing, a planted "
        "delay); mean over the window's steps. At one rank the cap is unknown and the whole "
        "wait counts. "
        "overlap_share = 1 − exposed_comm_s / allreduce_bucketed_time_s (allreduce_time_s "
        "without bucket times), clamped to 0..1.",
    ),
    (
        "data_wait",
        "data_wait_s: seconds per step waiting for the next batch over the measured window "
        "(mean over ranks, not the typical rank's own).",
    ),
    (
        "straggler",
        "straggler_wait_s: per step, the typical rank's waits minus the last rank's: how long "
        "it waits for the slowest (a slower rank's longer data wait counts here too), less "
        "the slowest rank's extra wait for a core (that is contention, above); mean "
        "over the window's steps. step_work_s_rank_spread = the slowest rank's mean work "
        "per step / the typical rank's: the spread the straggler wait must agree with.",
    ),
    (
        "unexplained",
        "What the five parts do not account for: 1 − E(N) minus their sum, shown as it is "
        "(negative too), never clipped. A point's parts are those of its median run (the "
        "repeat with the median throughput; the mean of the two middle ones for an even "
        "count), and they add up to the typical rank's step as the probe saw it "
        "(step_time_instrumented_s, with the window's mean data wait in place of its own) "
        "while T(N) is the slowest rank's window: the remainder is that difference, and the "
        "same at N0.",
    ),
    (
        "In-step all-reduce",
        "allreduce_step_time_s: per step, how long some bucket's all-reduce was in flight "
        "inside DDP's step (the union of each bucket's comm-hook call to its future's "
        "completion; CUDA: events on the compute stream and on a stream synchronised with "
        "NCCL's), mean. record.json buckets carry per bucket ready_s (from backward's start "
        "to the hook call: the bucket is ready) and step_allreduce_s (hook call to "
        "completion), medians over the steps, typical rank; backward_time_s is backward's "
        "start to its last gradient, median.",
    ),
    (
        "Contention evidence",
        "Read at the measured window's edges: cpu_cores (the cores a rank may run on), "
        "cpu_oversubscription (ranks on the machine × torch threads per rank / cpu_cores; "
        "gloo's own threads come on top), load_avg_1m (the machine's 1-minute load average "
        "at the window's end), cpu_steal_share (CPU time the hypervisor took, /proc/stat), "
        "involuntary_switches_per_step (a rank's process, mean over ranks), "
        "window_run_queue_wait_s (the training thread's wait for a core per step). On GPUs, "
        "gpu_clock_loss_share: over the window's telemetry samples, 1 − SM clock / maximum "
        "SM clock where NVML names a power or thermal limit, else 0, averaged.",
    ),
    (
        "Checks",
        "Each decomposed point is checked against the same run's other measurements: "
        "exposed_comm + comm_contention within the in-step all-reduce (allreduce_step_time_s) "
        "and exposed_comm within the bucketed ceiling, straggler_wait_s within the ranks' "
        "spread of work (step_work_s × (spread − 1)), each to 10% and 0.5 ms; the "
        "probed step within 15% of the window's step; |unexplained| within max(5 pp, "
        "15% of the loss); no part below −5 pp. A failed check is printed beside the chart, "
        "naming the measurements that disagree.",
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
    "checks",
)


def step_time_s(summary: pd.DataFrame) -> pd.Series:
    """Seconds per optimizer step over the measured window (the slowest rank's window)."""
    return summary["measured_time_s"].astype(float) / summary["measured_steps"].astype(float)


def _column(summary: pd.DataFrame, name: str) -> np.ndarray:
    if name not in summary.columns:
        return np.full(len(summary), np.nan)
    return pd.to_numeric(summary[name], errors="coerce").astype(float).to_numpy()


def part_seconds(summary: pd.DataFrame) -> pd.DataFrame:
    """Per point (indexed by config_key): each measured part in seconds per step.

    A part is the sum of its sources (:data:`SOURCES`); an optional source that is missing
    counts 0 (its time is then inside compute, see :data:`OPTIONAL`). Parts that are zero by
    definition at one rank read 0 there; a required source missing elsewhere (explain off,
    or a ledger older than the measurements) leaves the part NaN.
    """
    out = pd.DataFrame(index=summary["config_key"].to_numpy())
    one_rank = summary["world_size"].astype(float).to_numpy() == 1
    for part, cols in SOURCES.items():
        total = np.zeros(len(summary))
        for col in cols:
            values = _column(summary, col)
            if col in OPTIONAL or (part in ZERO_AT_ONE_RANK):
                fill = np.ones(len(summary), bool) if col in OPTIONAL else one_rank
                values = np.where(fill & np.isnan(values), 0.0, values)
            total = total + values
        out[part] = total
    # A GPU running below its maximum clock for power or heat: that share of the work is
    # contention, not compute (harness.telemetry's gpu_clock_loss_share; blank on CPU).
    loss = np.nan_to_num(np.clip(_column(summary, CLOCK_LOSS), 0.0, 1.0))
    throttled = out["compute"].to_numpy() * loss
    out["compute"] = out["compute"].to_numpy() - np.nan_to_num(throttled)
    out["contention"] = out["contention"].to_numpy() + np.nan_to_num(throttled)
    out["step_time_s"] = step_time_s(summary).to_numpy()
    return out


def median_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, the run with the median throughput (the mean of the two middle runs
    for an even count): one row per config_key, the ledger's columns.

    A run's parts add up to its own step; medians taken column by column do not add up to the
    median step when repeats differ a lot (a 2-core box's runs differ by 40%), so the parts of
    a point are those of its median run, whose step is the median step the efficiency uses.
    """
    ok = frame[(frame["status"] == "ok") & frame["samples_per_s"].notna()]
    if ok.empty:
        return ok.iloc[0:0]
    # Whole columns at once (a cell-by-cell loop took 28 s for a 1,000-point sweep).
    order = ok["config_key"].drop_duplicates()
    ranked = ok.sort_values("samples_per_s", kind="stable")
    group = ranked.groupby("config_key", sort=False)
    n = group["samples_per_s"].transform("size").to_numpy()
    pos = group.cumcount().to_numpy()
    low = ranked[pos == (n - 1) // 2].set_index("config_key").loc[order]
    high = ranked[pos == n // 2].set_index("config_key").loc[order]
    out = low.copy()
    for col in low.columns:
        try:
            a = pd.to_numeric(low[col], errors="coerce")
            b = pd.to_numeric(high[col], errors="coerce")
        except (TypeError, ValueError):  # lists or dicts in the column: the lower run's
            continue
        text = low[col].map(lambda v: isinstance(v, str)).to_numpy(bool)
        both = a.notna().to_numpy() & b.notna().to_numpy() & ~text
        if both.any():
            mean = (a.to_numpy(float) + b.to_numpy(float)) / 2
            column = out[col].astype(object).to_numpy(copy=True)
            column[both] = mean[both]
            out[col] = column
    out = out.reset_index()
    return out[list(ok.columns)].infer_objects().reset_index(drop=True)


def decompose(
    summary: pd.DataFrame, curves: pd.DataFrame, frame: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per curve point with N > N0: efficiency, 1 − E(N) and its parts, in pp.

    ``explained`` is False where a part was not measured (its pp and the remainder are NaN
    then: nothing is guessed). Where it is True, the parts plus ``unexplained_pp`` equal
    ``loss_pp`` exactly. ``checks`` holds the sentences of the failed checks (:func:`checks`).
    With the runs (``frame``), each point's parts are its median run's (:func:`median_runs`);
    without, the summary's per-column medians.
    """
    if curves.empty or summary.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    source = summary
    if frame is not None and len(frame):
        runs = median_runs(frame)
        if set(summary["config_key"]) <= set(runs["config_key"]):
            source = runs
    parts = part_seconds(source)
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
    by_key = summary.set_index("config_key")
    seconds = parts.to_dict("index")  # the seconds behind each point's parts
    spreads = part_ranges(frame) if frame is not None and len(frame) else {}
    rows["checks"] = [
        tuple(checks(r, by_key.loc[r["config_key"]].to_dict(), seconds=seconds, spreads=spreads))
        if r["explained"]
        else ()
        for r in rows.to_dict("records")
    ]
    # ``curve`` (the curve's name) is there when the caller named the curves
    # (harness.fmt.with_curve_names); the numbers do not need it.
    return rows.reindex(columns=list(COLUMNS)).reset_index(drop=True)


def _over(value: Any, bound: Any) -> bool:
    """``value`` beyond ``bound`` by more than the checks' tolerance (both finite)."""
    return _finite(value) and _finite(bound) and value > bound * (1 + REL_TOL) + ABS_TOL_S


def part_ranges(frame: pd.DataFrame) -> dict[str, dict[str, tuple[float, float]]]:
    """Per configuration and part, the lowest and highest seconds over its ok repeats."""
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return {}
    per_run = part_seconds(ok.reset_index(drop=True))
    per_run["config_key"] = ok["config_key"].to_numpy()
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for key, g in per_run.groupby("config_key"):
        out[str(key)] = {c: (float(g[c].min()), float(g[c].max())) for c in SOURCES}
    return out


def checks(
    row: dict[str, Any],
    point: dict[str, Any],
    *,
    seconds: dict[str, dict[str, float]] | None = None,
    spreads: dict[str, dict[str, tuple[float, float]]] | None = None,
) -> list[str]:
    """What the same run measured that disagrees with this decomposition row, one sentence
    each (empty: every check holds). ``row``: a :func:`decompose` row (its pp filled);
    ``point``: the summary row of its point (the seconds behind them); ``seconds``: each
    point's parts in seconds (:func:`part_seconds`), ``spreads``: their ranges over repeats
    (:func:`part_ranges`), to say which measurement a part below zero comes from."""
    ms, n = 1e3, _int(row["world_size"])
    found = []
    exposed, extra = point.get("exposed_comm_s"), point.get("comm_contention_s") or 0.0
    inflight = point.get("allreduce_step_time_s")
    if _finite(exposed) and _over(exposed + extra, inflight):
        found.append(
            f"N={n}: the all-reduce wait after backward ({(exposed + extra) * ms:.1f} ms per "
            f"step) is longer than the all-reduce was in flight inside the step "
            f"({inflight * ms:.1f} ms): the step waited for something else too."
        )
    ceiling = point.get("allreduce_bucketed_time_s")
    if not _finite(ceiling):
        ceiling = point.get("allreduce_time_s")
    if _over(exposed, ceiling):
        found.append(
            f"N={n}: exposed all-reduce ({exposed * ms:.1f} ms per step) exceeds the whole "
            f"all-reduce at its ceiling ({ceiling * ms:.1f} ms)."
        )
    work, spread = point.get("step_work_s"), point.get("step_work_s_rank_spread")
    straggler = point.get("straggler_wait_s")
    if _finite(work) and _finite(spread) and _finite(straggler):
        lag = work * max(0.0, spread - 1.0)
        jitter = REL_TOL * work + ABS_TOL_S  # per-step jitter of who is last is legitimate
        if abs(straggler - lag) > jitter + ABS_TOL_S:
            found.append(
                f"N={n}: straggler wait ({straggler * ms:.1f} ms per step) disagrees with the "
                f"ranks' spread of work ({spread:.2f}: the slowest rank works "
                f"{lag * ms:.1f} ms more per step than the typical one)."
            )
    window = row.get("step_time_s")
    inside = point.get("step_time_instrumented_s")
    if _finite(window) and _finite(inside) and abs(inside - window) > PROBE_STEP_REL * window:
        found.append(
            f"N={n}: the typical rank's probed step ({inside * ms:.1f} ms) is unlike the "
            f"window's ({window * ms:.1f} ms per step): the parts describe another step."
        )
    loss, rest = row.get("loss_pp"), row.get("unexplained_pp")
    if (
        _finite(loss)
        and _finite(rest)
        and abs(rest) > max(UNEXPLAINED_PP, UNEXPLAINED_SHARE * abs(loss))
    ):
        total = loss - rest
        found.append(
            f"N={n}: the measured parts add up to {total:.1f} pp of a {loss:.1f} pp loss "
            f"(unexplained {rest:+.1f} pp)."
        )
    n0 = _int(row["base_world_size"])
    for c in COMPONENTS[:-1]:
        v = row.get(f"{c}_pp")
        if not (_finite(v) and v < NEGATIVE_PP):
            continue
        here = (seconds or {}).get(row["config_key"], {}).get(c)
        base = (seconds or {}).get(row["base_key"], {}).get(c)
        said = f"N={n}: {NAMES[c]} is {v:.1f} pp: it measured less per step than at N={n0}"
        if _finite(here) and _finite(base):
            said += f" ({here * ms:.1f} ms against {base * ms:.1f} ms"
            lo, hi = (spreads or {}).get(row["base_key"], {}).get(c, (math.nan, math.nan))
            if _finite(lo) and _finite(hi) and hi > lo:
                said += f"; N={n0}'s repeats ranged {lo * ms:.1f}-{hi * ms:.1f} ms"
            said += ")"
        found.append(said + ".")
    return found


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
    """One sentence: the biggest part of the loss at this point, as a share, with its numbers.

    The share is of what the parts above zero add up to, so it never exceeds 100% (with a
    part below zero, that total is larger than the loss, and the sentence says so).
    ``row`` is a :func:`decompose` row; ``point``/``base`` the summary rows of the point and
    its curve's reference point (for the seconds behind the percentage points).
    """
    n = _int(row["world_size"])
    loss = float(row["loss_pp"])
    if not row.get("explained"):
        return (
            f"At N={n}, {loss:.1f} points are lost; their causes were not measured (explain "
            "off, or results older than the in-step measurements: rerun the point)."
        )
    if loss <= 0:
        return f"At N={n} no efficiency is lost (efficiency {row['efficiency']:.0%})."
    values = {c: float(row[f"{c}_pp"]) for c in COMPONENTS}
    part = biggest_part(row)
    positive = sum(v for v in values.values() if v > 0)
    pp = values[part]
    name = part_name(part, row["scaling_mode"])
    share = f"{pp / positive:.0%} of them" if positive > 0 else "all of them"
    if positive > loss + 0.5:
        share = f"{pp / positive:.0%} of the {positive:.1f} pp the parts above zero add up to"
    lead = f"At N={n}, {loss:.1f} points of efficiency are lost; the biggest cause is {name}"
    if part == "contention":  # the contention sentence carries its points, evidence and advice
        words, advice = contention_words(row, point)
        return f"{lead}, {share}: {words}. To win it back, {advice}."
    head = f"{lead}, {share} ({pp:.1f} pp)"
    ms = 1e3
    if part == "exposed_comm":
        ceiling = point.get("allreduce_bucketed_time_s")
        if not _finite(ceiling):
            ceiling = point.get("allreduce_time_s")
        overlap = point.get("overlap_share")
        if _finite(ceiling) and _finite(overlap):
            return (
                f"{head}: backward hides {overlap:.0%} of a {ceiling * ms:.1f} ms all-reduce "
                f"(DDP's buckets at their ceiling); {point['exposed_comm_s'] * ms:.1f} ms is "
                "exposed per step."
            )
        return f"{head}: {point['exposed_comm_s'] * ms:.1f} ms of all-reduce exposed per step."
    if part == "straggler":
        spread = point.get("step_work_s_rank_spread")
        tail = f" (the slowest rank works {spread:.2f}× as long)" if _finite(spread) else ""
        return (
            f"{head}: the typical rank waits {point['straggler_wait_s'] * ms:.1f} ms per step "
            f"for the slowest{tail}."
        )
    if part == "data_wait":
        return (
            f"{head}: {point['data_wait_s'] * ms:.1f} ms per step waiting for the next batch "
            f"(N={_int(row['base_world_size'])}: {base['data_wait_s'] * ms:.1f} ms)."
        )
    if part == "compute":
        k = row["base_world_size"] / row["world_size"] if row["scaling_mode"] == "strong" else 1.0
        alone = point.get("compute_step_time_s")
        tail = f"; under no_sync() (no all-reduce) {alone * ms:.1f} ms" if _finite(alone) else ""
        return (
            f"{head}: a rank's own work takes {point['step_work_s'] * ms:.1f} ms per step "
            f"against an ideal {base['step_work_s'] * k * ms:.1f} ms "
            f"(N={_int(row['base_world_size'])}){tail}."
        )
    return f"{head}: none of the measured causes accounts for them."


def biggest_part(row: dict[str, Any]) -> str | None:
    """The part with the most points of a :func:`decompose` row (None where unmeasured)."""
    if not row.get("explained"):
        return None
    return max(COMPONENTS, key=lambda c: float(row[f"{c}_pp"]))


def contention_cause(point: dict[str, Any]) -> str:
    """What the run measured that names its contention, in words (no trailing period)."""
    ms = 1e3
    bits = []
    cores, over = point.get("cpu_cores"), point.get("cpu_oversubscription")
    if _finite(cores) and _finite(over):
        ranks = _int(point.get("nproc_per_node") or 1)
        threads = max(1, round(over * cores / max(1, ranks)))
        bits.append(
            f"ranks competing for {_int(cores)} cores ({ranks} ranks × {threads} "
            f"thread{'s' if threads != 1 else ''}, gloo's threads on top"
        )
        load = point.get("load_avg_1m")
        if _finite(load):
            bits[-1] += f"; load average {load:.1f}"
        steal = point.get("cpu_steal_share")
        if _finite(steal) and steal >= 0.01:
            bits[-1] += f"; {steal:.0%} stolen by the hypervisor"
        bits[-1] += ")"
    rq = point.get("run_queue_wait_s")
    if _finite(rq) and rq > 0:
        bits.append(f"the training thread waited {rq * ms:.1f} ms per step for a core")
    behind = point.get("straggler_run_queue_s")
    if _finite(behind) and behind > 0:
        bits.append(f"the ranks waited {behind * ms:.1f} ms per step for a last rank that was "
                    "waiting for a core")  # fmt: skip
    comm = point.get("comm_contention_s")
    if _finite(comm) and comm > 0:
        bits.append(f"the all-reduce ran {comm * ms:.1f} ms longer inside the step than alone")
    loss = point.get(CLOCK_LOSS)
    if _finite(loss) and loss > 0:
        reasons = point.get("gpu_throttle_reasons") or "a power or thermal limit"
        bits.append(f"the GPUs ran {loss:.0%} below their maximum clock ({reasons})")
    return "; ".join(bits) if bits else "the step's parts ran slower than alone"


#: What to do about contention, by where it was measured.
CONTENTION_ADVICE = {
    "cpu": "give every rank cores of its own: fewer ranks or threads per machine "
    "(OMP_NUM_THREADS), nothing else running on those cores",
    "gpu": "check the GPUs' power limit and cooling (nvidia-smi -q -d PERFORMANCE)",
}


def contention_words(row: dict[str, Any], point: dict[str, Any]) -> tuple[str, str]:
    """The contention part in words ("ranks competing for 2 cores: 12.3 pp (...)"), and what
    to do about it."""
    pp = float(row["contention_pp"])
    where = "gpu" if _finite(point.get(CLOCK_LOSS)) and point[CLOCK_LOSS] > 0 else "cpu"
    cause = contention_cause(point)
    if cause.startswith("ranks competing"):
        head, _, rest = cause.partition(" (")
        cause = f"{head}: {pp:.1f} pp ({rest}"
    else:
        cause = f"contention: {pp:.1f} pp ({cause})"
    return cause, CONTENTION_ADVICE[where]


def contention_sentence(row: dict[str, Any], point: dict[str, Any]) -> str | None:
    """The contention part in words with what to do about it, or None below 1 pp."""
    pp = row.get("contention_pp")
    if not row.get("explained") or not _finite(pp) or pp < 1.0:
        return None
    words, advice = contention_words(row, point)
    return f"At N={_int(row['world_size'])}, {words}. To win it back, {advice}."


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


def markdown(width: int = 98) -> str:
    """The definition bullets of docs/why.md (``python -m harness.attribution`` prints them)."""
    from harness import definitions

    return definitions.markdown(width, DEFINITIONS)


if __name__ == "__main__":
    print(markdown(), end="")
