"""Assemble a report: the ledger frame and side files (already read) in, a Report out (pure).

:func:`build_report` computes the per-point summary and the named scaling curves once, writes
the notes the reader must see first (empty sweep, failures, skipped points, no repeats, no
telemetry, no env.json) and puts the sections in page order: scaling, energy beside it, why
efficiency drops, projection, memory model and largest batch, settings, hardware, serving,
failures, skipped, all points, environment, definitions.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from harness import analysis, attribution, fmt
from harness.report import cost
from harness.report.measured import how_well, measured_facts, measured_table, why_unknown
from harness.report.model import SUMMARY_METRICS, Report, Section
from harness.report.sections import (
    definitions_section,
    environment_section,
    failures_section,
    hardware_sections,
    headline_table,
    points_section,
    projection_sections,
    scaling_sections,
    serving_headline,
    serving_section,
    settings_sections,
    skipped_section,
    why_section,
    why_sentence,
)


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
    runs (:mod:`harness.report.cost`). ``log_dirs``: the point_dirs whose logs/ folder exists (None:
    not checked); the failures table names a logs folder only when it is there.
    ``projection`` a :class:`harness.projection.Projection` (the "Projection" section).
    """
    telemetry = telemetry if telemetry is not None else pd.DataFrame()
    rank_times = rank_times or {}
    generated_at = generated_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    notes = list(frame.attrs.get("notes", []))
    summary = analysis.per_configuration(frame, SUMMARY_METRICS)
    curves = fmt.with_curve_names(analysis.scaling(frame, summary=summary), summary)
    unit = fmt.device_unit(frame)
    label_cols = fmt.label_columns(summary)
    labels = {
        r["config_key"]: fmt.point_label(r, label_cols, unit=unit)
        for r in summary[["config_key", *label_cols]].to_dict("records")
    }
    # A run is its configuration and its repeat, spelled out (a bare "#3" explained nothing).
    run_labels = {
        d: f"{labels.get(k, k)}, repeat {fmt.num(rep)}"
        for d, k, rep in zip(frame["point_dir"], frame["config_key"], frame["repeat"], strict=True)
    }
    statuses = frame["status"] if len(frame) else pd.Series(dtype=object)
    n_runs, n_ok = len(frame), int((statuses == "ok").sum())
    # Skipped points never ran (they cannot run here): they are not failures.
    n_skipped = int((statuses == "skipped").sum())
    n_failed = n_runs - n_ok - n_skipped
    serving_only = n_runs == 0 and bool(serving)
    quiet: list[str] = []
    if serving_only:  # what the folder is, not a problem: said quietly
        quiet.append("This folder holds serving benchmarks only: no training sweep points.")
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
    elif n_ok and (few := fmt.interval_note(summary)):
        # What the intervals cover at the repeats the sweep chose: a fact to read, not a fault.
        quiet.append(few)
    if env is None and not serving_only:
        notes.append("env.json is missing: the environment of this sweep is unknown.")
    for note in _telemetry_notes(frame, telemetry):
        (quiet if note.startswith(CPU_RUN_NOTE) else notes).append(note)
    answer: list[str] = []
    # One decomposition (of each point's median run) for the first screen's "Why" and the why
    # section: computed twice, the first screen used column medians and could disagree.
    decomp = attribution.decompose(summary, curves, frame) if n_ok else None
    if n_ok:
        answer.extend(how_well(curves, summary, unit))
        why = why_sentence(decomp, summary) if len(decomp) else None
        answer.append(f"Why: {why}" if why else why_unknown(summary, curves, unit))

    cost_parts = cost.cost_sections(
        summary,
        curves,
        labels,
        env=env,
        memory_frame=cost.memory_frame(frame, trials),
        searches=max_batch_rows,
    )
    # Energy per sample sits beside the efficiency curve; why it drops follows, then the
    # memory model and the largest batch.
    energy = [s for s in cost_parts if s.id == "energy"]
    sections: list[Section] = []
    if n_ok:
        sections.extend(scaling_sections(frame, summary, curves))
    sections.extend(energy)
    if n_ok:
        why_part = why_section(summary, curves, decomp, frame)
        if why_part is not None:
            sections.append(why_part)
        sections.extend(projection_sections(projection))
    sections.extend(s for s in cost_parts if s.id != "energy")
    if n_ok:
        sections.extend(settings_sections(frame, summary))
        sections.extend(hardware_sections(summary, telemetry, rank_times, labels, run_labels))
    if serving:
        sections.append(serving_section(serving))
    sections.extend(
        s
        for s in (
            failures_section(frame, labels, log_dirs),
            skipped_section(frame, labels),
            points_section(summary, curves, label_cols) if len(summary) else None,
            # bench-serve rows carry their own checkpoint and host
            environment_section(env, frame) if not serving_only else None,
            definitions_section(training=not serving_only, serving=bool(serving)),
        )
        if s is not None
    )
    return Report(
        title=title,
        kind="Serving" if serving_only else "Scaling",
        generated_at=generated_at,
        notes=tuple(notes),
        headline=serving_headline(serving)
        if serving_only
        else headline_table(frame, summary, curves, labels),
        sections=tuple(sections),
        measured=None if serving_only else measured_table(measured_facts(frame, env)),
        answer=tuple(answer),
        quiet_notes=tuple(quiet),
    )


#: How the expected absences of a CPU-only sweep start (a quiet note, not a warning).
CPU_RUN_NOTE = "CPU run:"


def _telemetry_notes(frame: pd.DataFrame, telemetry: pd.DataFrame) -> list[str]:
    if not len(frame):
        return []
    claimed = frame["telemetry_available"].astype("boolean").fillna(False).astype(bool)
    if fmt.device_unit(frame) == "CPU rank":
        # Expected, not a problem: CPU ranks have no NVML, no peak FLOP/s, no CUDA allocator.
        return [
            f"{CPU_RUN_NOTE} no GPU telemetry, MFU, peak memory or energy (they are GPU "
            "measurements); throughput, scaling and its causes are measured as on GPUs."
        ]
    if telemetry.empty and not claimed.any():
        return ["No GPU telemetry in this sweep (NVML unavailable on the GPU nodes)."]
    if telemetry.empty and claimed.any():
        return ["GPU telemetry was recorded but no telemetry.jsonl file could be read."]
    return []
