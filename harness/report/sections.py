"""The report's sections: each part of the page built from analysis frames (pure).

A section function takes the frames :mod:`harness.report.build` computed (the ledger frame,
its per-point summary, the named scaling curves, labels) and returns a
:class:`~harness.report.model.Section` (or None / [] when the sweep has no data for it):
headline, scaling, why efficiency drops, projection, precision/compile, batch, DDP knobs,
stragglers, telemetry, MFU, serving, failures, skipped, all points, environment, definitions.
The cost sections (energy, memory model, largest batch) are in :mod:`harness.report.cost`.
Cells are spelled by :mod:`harness.fmt`, charts drawn by :mod:`harness.report.figures`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

from distrinews import layout
from harness import analysis, attribution, fmt
from harness.analysis import THROUGHPUT
from harness.definitions import DEFINITIONS, SERVING_DEFINITIONS, SERVING_OUTLIER_RATIO
from harness.fmt import device_unit
from harness.report.figures import (
    MAX_CURVES,
    fig_allreduce,
    fig_batch,
    fig_efficiency,
    fig_factor,
    fig_knobs,
    fig_mfu_tokens,
    fig_projection,
    fig_serving,
    fig_stragglers,
    fig_telemetry,
    fig_throughput,
    fig_why,
)
from harness.report.model import Section, Table


def headline_table(
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
        at_max = ok[ok["world_size"] == n_max].sort_values(THROUGHPUT, ascending=False)
        top = at_max.iloc[0]
        unit = device_unit(frame)
        n = fmt.num(n_max)
        rows.append((f"largest {unit} count", n))
        # Named by what varies besides the device count (the row already says N): a label
        # "world_size=2" under "best configuration at N=2" told the reader nothing.
        others = [c for c in fmt.label_columns(ok) if c not in ("world_size", "nodes")]
        if len(at_max) > 1:
            rows.append(
                (f"fastest configuration at N={n}", fmt.point_label(top, others, unit=unit))
            )
        elif others:
            rows.append((f"configuration at N={n}", fmt.point_label(top, others, unit=unit)))
        rows.append(
            (
                "its throughput (samples/s)",
                fmt.ci(top[THROUGHPUT], top[f"{THROUGHPUT}_lo"], top[f"{THROUGHPUT}_hi"]),
            )
        )
        k = float(top["world_size"])
        per_device = fmt.ci(
            top[THROUGHPUT] / k, top[f"{THROUGHPUT}_lo"] / k, top[f"{THROUGHPUT}_hi"] / k
        )
        rows.append((f"its samples/s per {unit}", per_device))
        eff = curves[curves["config_key"] == top["config_key"]]
        if not eff.empty and eff.iloc[0]["world_size"] > eff.iloc[0]["base_world_size"]:
            e = eff.iloc[0]
            ref = fmt.num(e["base_world_size"])
            speedup = fmt.ci(e["speedup"], e["speedup_lo"], e["speedup_hi"], digits=2)
            ideal = float(e["world_size"]) / float(e["base_world_size"])
            rows.append((f"its speedup (vs N={ref}; ideal {ideal:g}×)", f"{speedup} ×"))
            rows.append(
                (
                    f"its scaling efficiency ({e['scaling_mode']}, vs N={ref})",
                    fmt.pct(e["efficiency"], e["efficiency_lo"], e["efficiency_hi"]),
                )
            )
        else:
            rows.append(("its scaling efficiency", f"no smaller {unit} count on its curve"))
        if unit == "GPU":  # CPU ranks have no peak FLOP/s: said once among the quiet notes
            rows.append(
                (
                    "its MFU",
                    fmt.pct(top["mfu"], top["mfu_lo"], top["mfu_hi"]) or "unknown (no peak)",
                )
            )
        fastest = ok.sort_values(THROUGHPUT, ascending=False).iloc[0]
        if fastest["config_key"] != top["config_key"]:
            rows.append(("fastest overall", labels.get(fastest["config_key"], "")))
    return Table(columns=("", ""), rows=tuple(rows))


def scaling_sections(
    frame: pd.DataFrame, summary: pd.DataFrame, curves: pd.DataFrame
) -> list[Section]:
    unit = device_unit(frame)
    if curves.empty:
        return [
            Section(
                id="scaling",
                title="Scaling",
                intro=f"Only one {unit} count has ok results, so there is no scaling curve to "
                "draw.",
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
        f"with its mode. Efficiency = X(N)·N0/(N·X(N0)) against the curve's smallest {unit} "
        "count N0." + more
    )
    intro += interval_caption(curves)
    table = scaling_table(curves)
    figs = tuple(
        f
        for f in (fig_throughput(curves, unit=unit), fig_efficiency(curves, unit=unit))
        if f is not None
    )
    return [Section(id="scaling", title="Scaling", intro=intro, figures=figs, tables=(table,))]


def interval_caption(curves: pd.DataFrame) -> str:
    """`` Brackets are intervals: ...`` -- how much the scaling intervals cover ("" if none)."""
    above = curves[curves["world_size"] > curves["base_world_size"]]
    point = fmt.levels(curves[f"{THROUGHPUT}_level"])
    ratio = fmt.levels(above["efficiency_level"], at_least=True)
    if not (point or ratio):
        return ""
    return (
        f" Brackets are intervals: a throughput's covers its median {point or '-'} of the time, "
        f"an efficiency's {ratio or '-'} (Repeats and intervals, under Definitions)."
    )


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
            fmt.pct(by_n[n]["efficiency"], by_n[n]["efficiency_lo"], by_n[n]["efficiency_hi"])
            if n in by_n
            else ""
            for n in sizes
        ]
        rows.append(
            (
                first["curve"],
                fmt.num(first["base_world_size"]),
                *cells,
                fmt.ci(last[THROUGHPUT], last[f"{THROUGHPUT}_lo"], last[f"{THROUGHPUT}_hi"]),
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


def why_section(
    summary: pd.DataFrame,
    curves: pd.DataFrame,
    decomp: pd.DataFrame,
    frame: pd.DataFrame | None = None,
) -> Section | None:
    """Why efficiency drops: ``decomp`` (:func:`harness.attribution.decompose`) as a sentence,
    the stacked parts, DDP's all-reduce against its ceiling, and the failed checks."""
    if decomp.empty:
        return None
    sentence = why_sentence(decomp, summary) or ""
    row = attribution.headline_row(decomp, summary, THROUGHPUT)
    curve = curves[curves["curve_id"] == row["curve_id"]]
    unit = device_unit(frame if frame is not None else summary)
    figs = tuple(
        f
        for f in (
            fig_why(decomp, row["curve_id"], unit=unit),
            fig_allreduce(summary, curve, unit=unit),
        )
        if f is not None
    )
    by_key = summary.set_index("config_key")
    # Contention gets its own sentence (its evidence and what to do) unless it leads already.
    contention = (
        None
        if attribution.biggest_part(row) == "contention" or float(row["loss_pp"]) <= 0
        else attribution.contention_sentence(row, by_key.loc[row["config_key"]].to_dict())
    )
    intro = (
        f"{sentence}{' ' + contention if contention else ''} Each {unit} count's lost "
        f"efficiency 1 − E(N), in percentage points against the curve's smallest {unit} count "
        "N0, split into "
        "the causes measured inside each point's window, step by step, on every rank; the "
        "remainder is shown as it is (definitions at the end of the report)."
    )
    # Checks beside the chart: where the same run's measurements disagree, say which.
    failed = [c for r in decomp.to_dict("records") for c in (r.get("checks") or ())]
    if failed:
        intro += " Checks that failed (read these parts with care): " + " ".join(failed)
    return Section(id="why", title="Why efficiency drops", intro=intro, figures=figs,
                   tables=(why_table(decomp),))  # fmt: skip


def why_table(decomp: pd.DataFrame) -> Table:
    """Every decomposed point: efficiency, the points lost and each part, in pp."""
    rows, sort_values = [], []
    for r in decomp.sort_values(["curve", "world_size"]).to_dict("records"):
        parts = [r[f"{c}_pp"] for c in attribution.COMPONENTS]
        rows.append(
            (
                r["curve"],
                fmt.num(r["world_size"], 0),
                fmt.pct(r["efficiency"]),
                fmt.pp(r["loss_pp"]),
                *(fmt.pp(p) if r["explained"] else "not measured" for p in parts),
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


def why_sentence(decomp: pd.DataFrame, summary: pd.DataFrame) -> str | None:
    """The biggest cause of lost efficiency at the largest N, with its numbers."""
    row = attribution.headline_row(decomp, summary, THROUGHPUT)
    if row is None:
        return None
    by_key = summary.set_index("config_key")
    return attribution.biggest_cause(
        row, by_key.loc[row["config_key"]].to_dict(), by_key.loc[row["base_key"]].to_dict()
    )


def projection_sections(projection: Any) -> list[Section]:
    """Predicted efficiency to 1024 GPUs with its band, the measured points on it, the inputs,
    and for every measured point whether the prediction held it."""
    if projection is None or not projection.rows:
        return []
    from harness.projection import TABLE_COLUMNS, input_lines, table_rows
    from harness.projection.render import driver_line, fabric_lines, verdict_lines

    s = projection.settings
    on_fabric = any(r.get("algorithm") != "measured ring" for r in projection.rows)
    link = (
        "costed with NCCL's own model (its algorithm and protocol choice, latencies and "
        "bandwidths, from src/graph/tuning.cc), the link efficiency calibrated on the bus "
        "bandwidth measured at the largest N below each prediction (no peeking), past that the "
        f"fabric {s['fabric']} ({s['gpus_per_node']} GPUs per node) with its stated efficiency "
        "range"
        if on_fabric
        else "costed as a ring with the latency and bus bandwidth measured at the largest N "
        "below each prediction (no peeking), on this sweep's own host: a GPU fabric would be a "
        "what-if (distrinews-bench project --what-if)"
    )
    intro = (
        "What the model predicts at more GPUs than were measured, from this sweep's own "
        "measurements: step = compute-only step + host overhead + the all-reduce time backward "
        "cannot hide + a straggler allowance. The all-reduce is bucketed (DDP's buckets, one "
        f"after another, each starting when backward has produced it) and {link}. "
        f"Bands: {s['interval']}. Where the sweep measured an N, the table gives the error in "
        "percentage points and the lines below it say whether the prediction's interval holds "
        "the measurement. Other fabrics, hooks and GPU counts: distrinews-bench project."
    )
    figure = fig_projection(projection)
    tables = []
    if on_fabric:
        fabric = tuple(("fabric", x) for x in fabric_lines(projection))
        tables.append(Table(columns=("fabric", ""), rows=fabric))
    by_curve: dict[Any, list[dict[str, Any]]] = {}
    for r in projection.rows:
        by_curve.setdefault(r.get("curve_id"), []).append(r)
    infos = {c["curve_id"]: c for c in projection.curves}
    for key in list(by_curve)[:MAX_CURVES]:
        rows = table_rows(by_curve[key])
        name = infos[key]["curve"] or "pure inputs"
        lines = input_lines(projection, infos[key]) + verdict_lines(by_curve[key])
        drive = driver_line(by_curve[key])
        if drive:
            lines.append(drive)
        tables.append(Table(columns=("model input", ""), rows=tuple((name, x) for x in lines)))
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


def settings_sections(frame: pd.DataFrame, summary: pd.DataFrame) -> list[Section]:
    out = []
    figs = []
    for factor, ref, title in (
        ("precision", "fp32", "Precision speedup (vs fp32, or the slowest precision present)"),
        ("compile", False, "torch.compile speedup (vs eager)"),
    ):
        effect = analysis.factor_effect(frame, factor, reference=ref, summary=summary)
        effect.insert(
            0, "group", fmt.group_names(effect, summary[summary[THROUGHPUT].notna()], factor)
        )
        fig = fig_factor(effect, factor, title)
        if fig is not None:
            figs.append(fig)
    if figs:
        out.append(
            Section(
                id="precision",
                title="Precision and compile",
                intro="Speedup of each setting over its reference with all else equal "
                "(bars: median ratio; whiskers: the ratio's interval, which covers at least "
                "the product of the two points' levels: see Repeats and intervals).",
                figures=tuple(figs),
            )
        )
    unit = device_unit(frame)
    batch = fig_batch(summary, unit=unit)
    if batch is not None:
        out.append(
            Section(
                id="batch",
                title="Batch size",
                intro=f"Throughput and peak memory per {unit} as the batch per {unit} grows.",
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


def hardware_sections(
    summary: pd.DataFrame,
    telemetry: pd.DataFrame,
    rank_times: dict[str, list[list[float]]],
    labels: dict[str, str],
    run_labels: dict[str, str],
) -> list[Section]:
    named_times = {run_labels.get(k, k): v for k, v in rank_times.items()}
    unit = device_unit(summary)
    candidates = (
        (
            fig_stragglers(summary, named_times, labels, unit=unit),
            "stragglers",
            "Stragglers",
            "A spread near 1.00 means all ranks step at the same pace; a slow rank holds every "
            "all-reduce back.",
        ),
        (
            fig_telemetry(telemetry, run_labels),
            "telemetry",
            "GPU telemetry",
            "NVML samples of the fastest run at each GPU count (utilisation and power: mean over "
            "GPUs; memory: max over GPUs).",
        ),
        (
            fig_mfu_tokens(summary, labels, unit=unit),
            "mfu",
            "MFU and padding" if unit == "GPU" else "Padding",
            ("MFU counts real tokens only; t" if unit == "GPU" else "T")
            + "he gap between padded and real tokens/s is compute spent on padding.",
        ),
    )
    # A section only where its figure has something to draw.
    return [
        Section(id=sid, title=title, intro=intro, figures=(fig,))
        for fig, sid, title, intro in candidates
        if fig is not None
    ]


def serving_headline(rows: Sequence[dict[str, Any]]) -> Table:
    """A serving-only folder: the best requests/s and the latency at that level."""
    done = [r for r in rows if isinstance(r.get("requests_per_s"), (int, float))]
    out = [("bench-serve levels", fmt.num(len(rows), 0))]
    if done:
        best = max(done, key=lambda r: r["requests_per_s"])
        out.append(("best requests/s", fmt.num(best["requests_per_s"])))
        out.append(("at concurrency", fmt.num(best.get("concurrency"), 0)))
        out.append(
            (
                "its p50 / p99 latency (ms)",
                " / ".join(
                    fmt.num(fmt.to_ms(best.get(k))) or "n/a"
                    for k in ("latency_s_p50", "latency_s_p99")
                ),
            )
        )
    return Table(columns=("", ""), rows=tuple(out))


def serving_outliers(rows: Sequence[dict[str, Any]]) -> dict[int, str]:
    """Index in ``rows`` -> why that level is an outlier: its requests/s is
    SERVING_OUTLIER_RATIO times off the median of every run at the same concurrency (itself
    included, so of two runs only the one far below is flagged, never both)."""
    by_level: dict[Any, list[int]] = {}
    for i, r in enumerate(rows):
        if isinstance(r.get("requests_per_s"), (int, float)) and r["requests_per_s"] > 0:
            by_level.setdefault(r.get("concurrency"), []).append(i)
    flagged: dict[int, str] = {}
    for level, idx in by_level.items():
        if len(idx) < 2:
            continue  # one run at this level: nothing to compare it with
        level_median = float(np.median([rows[j]["requests_per_s"] for j in idx]))
        for i in idx:
            mine = float(rows[i]["requests_per_s"])
            if max(level_median / mine, mine / level_median) < SERVING_OUTLIER_RATIO:
                continue
            others = float(np.median([rows[j]["requests_per_s"] for j in idx if j != i]))
            ratio = max(others / mine, mine / others)
            side = "below" if mine < others else "above"
            flagged[i] = (
                f"outlier: {ratio:,.0f}× {side} the other runs' {fmt.num(others)} "
                f"requests/s at concurrency {fmt.num(level, 0)}"
            )
    return flagged


def serving_section(rows: Sequence[dict[str, Any]]) -> Section:
    """The inference service under load: requests/s and latency per concurrency level, with
    levels far off the other runs at the same concurrency flagged (:func:`serving_outliers`)."""
    flags = serving_outliers(rows)
    order = sorted(
        range(len(rows)),
        key=lambda i: (str(rows[i].get("started_at")), rows[i].get("concurrency", 0)),
    )
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
            "flag",
        ),
        rows=tuple(
            (
                f"{fmt.checkpoint_label(r.get('checkpoint'))} · {r.get('started_at')}",
                fmt.num(r.get("concurrency"), 0),
                fmt.num(r.get("requests"), 0),
                fmt.num(r.get("errors"), 0),
                fmt.num(r.get("requests_per_s")),
                fmt.num(fmt.to_ms(r.get("latency_s_p50"))),
                fmt.num(fmt.to_ms(r.get("latency_s_p95"))),
                fmt.num(fmt.to_ms(r.get("latency_s_p99"))),
                flags.get(i, ""),
            )
            for i, r in ((i, rows[i]) for i in order)
        ),
    )
    figure = fig_serving(rows, outliers=flags)
    intro = (
        "distrinews-bench bench-serve against the HTTP inference service: closed-loop "
        "clients per concurrency level; latency is end to end (request sent to answer read)."
    )
    if flags:
        intro += (
            f" {len(flags)} level(s) are flagged as outliers (crosses on the chart): their "
            f"requests/s is {SERVING_OUTLIER_RATIO:g}× or more off the other runs at the same "
            "concurrency. Suspect the run (errors, a busy machine) before the service."
        )
    return Section(
        id="serving",
        title="Serving",
        intro=intro,
        figures=(figure,) if figure is not None else (),
        tables=(table,),
    )


def failures_table(
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
            fmt.num(r["repeat"]),
            "" if r["reason"] is None or r["reason"] != r["reason"] else str(r["reason"]),
            f"{r['point_dir']}/logs/"
            if isinstance(r["point_dir"], str) and (log_dirs is None or r["point_dir"] in log_dirs)
            else "no logs",
        )
        for r in bad.to_dict("records")
    )
    return Table(columns=("status", "point", "repeat", "reason", "logs"), rows=rows, sortable=True)


def skipped_table(frame: pd.DataFrame, labels: dict[str, str]) -> Table | None:
    skipped = frame[frame["status"] == "skipped"] if len(frame) else frame
    if skipped.empty:
        return None
    skipped = skipped.sort_values(["world_size", "config_key", "repeat"], kind="stable")
    rows = tuple(
        (
            labels.get(r["config_key"], r["config_key"]),
            fmt.num(r["repeat"]),
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

#: How the points table spells a compile setting (a bare False read as an error).
COMPILE_CELLS = {True: "torch.compile", False: "eager"}

#: What the efficiency cell of a curve's reference point says: 100% by definition, so no
#: interval ("100.0% [100.0, 100.0%]" looked like a measurement).
REFERENCE_CELL = "100% (reference)"


def point_cell(column: str, value: Any) -> str:
    """A configuration cell of the points table."""
    if column == "compile" and not (isinstance(value, float) and np.isnan(value)):
        return COMPILE_CELLS.get(bool(value), fmt.fmt_value(value))
    return fmt.fmt_value(value)


def efficiency_cell(e: dict[str, Any]) -> str:
    """A point's efficiency with its interval; the reference point of its curve says so."""
    if e.get("reference"):
        return REFERENCE_CELL
    return fmt.pct(e["efficiency"], e["efficiency_lo"], e["efficiency_hi"])


def points_table(summary: pd.DataFrame, curves: pd.DataFrame, label_cols: list[str]) -> Table:
    """Every configuration: its settings, runs, throughput, efficiency and the per-device
    figures; a column nothing in the sweep has (MFU and memory on CPU ranks) is left out."""
    eff = {
        r["config_key"]: {**r, "reference": r["world_size"] == r["base_world_size"]}
        for r in curves[
            ["config_key", "world_size", "base_world_size", "efficiency", "efficiency_lo",
             "efficiency_hi"]
        ].to_dict("records")
    }  # fmt: skip
    unit = device_unit(summary)
    extra = [c for c in label_cols if c not in {c for c, _, _ in POINT_COLUMNS}]
    optional = {
        "MFU": "mfu",
        "mem GiB": "mem_peak_gib",
        "rank spread": "step_time_s_rank_spread",
    }
    above = curves["world_size"] > curves["base_world_size"]  # N0 is exactly 100%
    ratio_covers = fmt.levels(curves.loc[above, "efficiency_level"], at_least=True)
    columns = [
        *(h for _, h, _ in POINT_COLUMNS),
        *extra,
        "ok/runs",
        f"samples/s [interval, covers {fmt.levels(summary[f'{THROUGHPUT}_level']) or '-'}]",
        f"samples/s/{unit}",
        f"efficiency [covers {ratio_covers or '-'}]",
        "MFU",
        "mem GiB",
        "rank spread",
        "failed",
    ]
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
            *(point_cell(c, r[c]) for c, _, _ in POINT_COLUMNS),
            *(fmt.fmt_value(r[c]) for c in extra),
            f"{int(r['n_ok'])}/{int(r['n_runs'])}",
            fmt.ci(r[THROUGHPUT], r[f"{THROUGHPUT}_lo"], r[f"{THROUGHPUT}_hi"]),
            fmt.ci(r[THROUGHPUT] / n, r[f"{THROUGHPUT}_lo"] / n, r[f"{THROUGHPUT}_hi"] / n),
            efficiency_cell(e),
            fmt.pct(r["mfu"], r["mfu_lo"], r["mfu_hi"]),
            fmt.ci(r["mem_peak_gib"], r["mem_peak_gib_lo"], r["mem_peak_gib_hi"], digits=2),
            fmt.ci(
                r["step_time_s_rank_spread"],
                r["step_time_s_rank_spread_lo"],
                r["step_time_s_rank_spread_hi"],
                digits=3,
            ),
            r["failed"],
        )
        rows.append(text)
        sort_values.append(raw)
    # Columns with no value anywhere (MFU and peak memory on CPU ranks, rank spread with one
    # rank) would only be blank: leave them out.
    keep = [
        i
        for i, name in enumerate(columns)
        if name not in optional or summary[optional[name]].notna().any()
    ]
    return Table(
        columns=tuple(columns[i] for i in keep),
        rows=tuple(tuple(row[i] for i in keep) for row in rows),
        sort_values=tuple(tuple(v[i] for i in keep) for v in sort_values),
        sortable=True,
    )


def env_table(env: dict[str, Any] | None, frame: pd.DataFrame) -> Table:
    rows: list[tuple[str, str]] = []
    if env is None:
        rows.append((layout.ENV_JSON, "missing"))
    else:
        fields = env.get("fingerprint_fields") or {}
        rows.append(("fingerprint", str(env.get("fingerprint", ""))))
        for key, value in fields.items():
            rows.append((key, fmt.env_value(value)))
        for key, value in env.items():
            # The fingerprint's fields come first; each is shown once.
            if key not in ("fingerprint", "fingerprint_fields", *fields):
                rows.append((key, fmt.env_value(value)))
    if len(frame):
        prints = sorted({str(p) for p in frame["env_fingerprint"].dropna()})
        if len(prints) > 1:
            rows.append(("ledger fingerprints", "MIXED: " + ", ".join(prints)))
    return Table(columns=("field", "value"), rows=tuple(rows))


def failures_section(
    frame: pd.DataFrame, labels: dict[str, str], log_dirs: Collection[str] | None
) -> Section | None:
    """Every run that failed, with its reason and logs folder (None when none failed)."""
    failures = failures_table(frame, labels, log_dirs)
    if failures is None:
        return None
    return Section(
        id="failures",
        title="Failures",
        intro="Every run that failed, with the reason and where its logs are.",
        tables=(failures,),
    )


def skipped_section(frame: pd.DataFrame, labels: dict[str, str]) -> Section | None:
    """The points this machine cannot run (None when none was skipped)."""
    skipped = skipped_table(frame, labels)
    if skipped is None:
        return None
    return Section(
        id="skipped",
        title="Skipped",
        intro="Points this machine cannot run, so they never started (no logs).",
        tables=(skipped,),
    )


def points_section(summary: pd.DataFrame, curves: pd.DataFrame, label_cols: list[str]) -> Section:
    """Every configuration in one sortable table."""
    return Section(
        id="points",
        title="All points",
        intro="One row per configuration (median over ok repeats). Click a header to sort.",
        tables=(points_table(summary, curves, label_cols),),
    )


def environment_section(env: dict[str, Any] | None, frame: pd.DataFrame) -> Section:
    """env.json, fingerprint fields first, and a warning when the ledger mixes fingerprints."""
    return Section(id="environment", title="Environment", tables=(env_table(env, frame),))


def definitions_section(*, training: bool = True, serving: bool = False) -> Section:
    """What every metric and term on the page means (harness.definitions, attribution): the
    training terms for a sweep, the serving terms where the folder holds bench-serve rows."""
    rows = (
        *((*DEFINITIONS, *attribution.DEFINITIONS) if training else ()),
        *(SERVING_DEFINITIONS if serving else ()),
    )
    return Section(
        id="definitions",
        title="What the numbers mean",
        tables=(Table(columns=("term", "definition"), rows=rows),),
    )
