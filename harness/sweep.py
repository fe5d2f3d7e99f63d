"""Sweep orchestration: spec -> points -> launch -> collect -> store, with resume.

``distrinews-bench sweep FILE`` calls :func:`run_sweep`, which

1. expands the sweep for this machine (:mod:`harness.spec`),
2. takes the sweep folder's lock, writes ``env.json`` and ``sweep.json``,
3. reads the ledger and plans each point (:func:`plan`): already ok -> done; failed before ->
   kept unless ``retry_failed``; cannot run here -> a "skipped" row with the reason;
   otherwise run,
4. when the sweep asks for it (``[max_batch]``, ``--find-max-batch``), first searches each
   configuration's largest per-device batch that fits (:mod:`harness.max_batch`),
5. runs the points round by round (every configuration once per repeat, ascending GPU count
   inside a round), each with a fresh torchrun (:mod:`harness.launch`)
   while NVML is sampled (:mod:`harness.telemetry`; energy: :mod:`harness.energy`), and
   appends ONE ledger row per finished point -- the last thing a point does, so an
   interrupted point leaves no row and runs again on the next invocation. A CUDA point whose
   predicted peak memory exceeds the device's is skipped with the reason instead
   (:mod:`harness.memory_model`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distrinews import layout
from distrinews.errors import UserError
from distrinews.files import ordinary_mode
from distrinews.layout import LAUNCHER_LOG, LOGS_DIR, RECORD_JSON, RUN_JSON, TELEMETRY_LOG
from distrinews.runspec import RunSpec
from distrinews.safeio import decimal

from . import energy, envinfo, max_batch, memory_model, store, telemetry
from .launch import (
    Outcome,
    build_env,
    build_srun_argv,
    build_srun_telemetry_argv,
    build_torchrun_argv,
    effective_nccl_env,
    free_port,
    kill_tree,
    outcome_of,
    read_errors,
    read_logs,
    run_process,
    slurm_cancel_steps,
    slurm_gpus_per_node,
    slurm_hosts,
    slurm_job_state,
    step_name,
)
from .spec import DEFAULT_MAX_POINTS, LAUNCHERS, Point, Resources, SweepSpec

#: What the sweep does with a point, decided before anything runs.
ACTIONS = ("run", "done", "kept_failed", "skip", "skip_recorded")


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """How to run a sweep (the CLI's options)."""

    results: Path = Path("results")
    """Root folder; the sweep writes results/<name>/."""
    name: str | None = None
    """Folder name under results (default: the sweep file's name)."""
    timeout_s: float | None = None
    """Per-point limit; None takes the sweep file's timeout_s."""
    retry_failed: bool = False
    """Re-run points whose latest row is a failure (oom, timeout, crashed, ...)."""
    launcher: str = "local"
    """local (torchrun on this machine) or slurm (srun torchrun inside an allocation)."""
    nodes: int | None = None
    """Nodes available to the slurm launcher (default: the allocation's size)."""
    progress: bool = True
    """Show a tqdm progress bar on stderr (only when stderr is a terminal)."""
    python: str = field(default_factory=lambda: sys.executable)
    """Interpreter that runs torchrun and the worker."""
    max_points: int = DEFAULT_MAX_POINTS
    """Refuse a grid larger than this (a guard against typos; raise it on purpose)."""
    find_max_batch: bool | None = None
    """Search the largest batch that fits (harness.max_batch); None: as the sweep file says."""
    predict_oom: bool = True
    """Skip CUDA points the memory model predicts to run out of memory (harness.memory_model)."""

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise UserError(f"launcher = {self.launcher!r}; allowed: {', '.join(LAUNCHERS)}")
        if self.timeout_s is not None and not (
            math.isfinite(self.timeout_s) and self.timeout_s > 0
        ):
            raise UserError(f"timeout_s = {self.timeout_s!r}; expected a finite number > 0")
        if self.max_points < 1:
            raise UserError(f"max_points = {self.max_points!r}; expected an integer >= 1")
        if self.nodes is not None and self.nodes < 1:
            raise UserError(f"nodes = {self.nodes!r}; expected an integer >= 1")
        if self.nodes is not None and self.launcher == "local":
            raise UserError(
                "--nodes applies to --launcher slurm; the local launcher runs on this machine"
            )


@dataclass(frozen=True, kw_only=True)
class PlannedPoint:
    """A point and what this invocation does with it."""

    point: Point
    action: str
    """One of ACTIONS."""
    note: str | None = None
    """The skip reason or the earlier failure, for --dry-run."""


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    """Where the results are and how the points stand after this invocation."""

    sweep_dir: Path
    ran: int
    """Points launched by this invocation."""
    statuses: dict[str, int]
    """Latest status per point of this sweep -> number of points."""


def detect_resources(options: SweepOptions, env: dict[str, str] | None = None) -> Resources:
    """GPUs per node and nodes available, from torch locally or the SLURM allocation."""
    env = dict(os.environ if env is None else env)
    import torch

    local_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if options.launcher == "local":
        return Resources(nodes=1, gpus_per_node=local_gpus, launcher="local")
    count = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or ""
    nodes = options.nodes or decimal(count.strip()) or 1
    gpus = slurm_gpus_per_node(env) or local_gpus
    cpus = env.get("SLURM_CPUS_ON_NODE", "")
    return Resources(
        nodes=nodes,
        gpus_per_node=gpus,
        launcher="slurm",
        **({"cpus_per_node": n} if (n := decimal(cpus)) else {}),
    )


def plan(
    points: Sequence[Point], rows: Sequence[dict[str, Any]], *, retry_failed: bool
) -> list[PlannedPoint]:
    """What to do with each point given the ledger so far (pure; latest row per run_id wins)."""
    latest = store.latest_by_run_id(rows)
    out = []
    for point in points:
        prev = latest.get(point.run_id)
        prev_status = prev.get("status") if prev else None
        if point.skip_reason is not None:
            same = prev_status == "skipped" and prev.get("reason") == point.skip_reason
            action = "skip_recorded" if same else "skip"
            out.append(PlannedPoint(point=point, action=action, note=point.skip_reason))
        elif prev_status == "ok":
            out.append(PlannedPoint(point=point, action="done"))
        elif prev_status in store.FAILED_STATUSES and not retry_failed:
            note = f"{prev_status}: {prev.get('reason')}"
            out.append(PlannedPoint(point=point, action="kept_failed", note=note))
        else:
            out.append(PlannedPoint(point=point, action="run"))
    return out


def describe(point: Point) -> str:
    """A short human label of a point's configuration."""
    s = point.spec
    parts = [
        f"{s.nodes}x{s.nproc_per_node} {s.device}",
        f"b{s.per_device_batch}" + (f"x{s.grad_accum}" if s.grad_accum > 1 else ""),
        s.precision,
        s.seq_policy,
    ]
    if s.compile:
        parts.append("compile")
    if s.ddp != type(s.ddp)():
        parts.append("ddp(" + ",".join(_ddp_diff(s)) + ")")
    if s.nccl_env:
        parts.append(",".join(f"{k}={v}" for k, v in s.nccl_env))
    if s.fault != "none":
        parts.append(f"fault={s.fault}")
    parts.append(f"r{s.repeat}")
    return " ".join(parts)


def _ddp_diff(spec: RunSpec) -> list[str]:
    default = type(spec.ddp)()
    return [
        f"{f.name}={getattr(spec.ddp, f.name)}"
        for f in dataclasses.fields(spec.ddp)
        if getattr(spec.ddp, f.name) != getattr(default, f.name)
    ]


def format_plan(planned: Sequence[PlannedPoint]) -> str:
    """The --dry-run listing: one line per point."""
    lines = []
    for i, p in enumerate(planned, start=1):
        tail = f"  ({p.note})" if p.note else ""
        lines.append(f"{i:>3}  {p.point.run_id}  {p.action:<13} {describe(p.point)}{tail}")
    counts = Counter(p.action for p in planned)
    lines.append(f"{len(planned)} points: " + ", ".join(f"{n} {a}" for a, n in counts.items()))
    return "\n".join(lines)


def prepare(spec: SweepSpec, options: SweepOptions) -> tuple[Path, list[PlannedPoint]]:
    """The sweep folder and the plan, without writing anything (used by --dry-run too)."""
    spec = _named(spec, options)
    sweep_dir = Path(options.results) / spec.name
    points = spec.expand(detect_resources(options), max_points=options.max_points)
    return sweep_dir, plan(points, store.read_ledger(sweep_dir), retry_failed=options.retry_failed)


def dry_run(spec: SweepSpec, options: SweepOptions, *, chosen: str = "") -> str:
    """What ``--dry-run`` prints: the sweep's first line, then one line per point."""
    sweep_dir, planned = prepare(spec, options)
    first = start_line(
        _named(spec, options),
        planned,
        sweep_dir,
        chosen=chosen,
        rows=store.read_ledger(sweep_dir),
        timeout_s=options.timeout_s or spec.timeout_s,
    )
    return f"{first}\n{format_plan(planned)}"


def default_sampler(spec: RunSpec, env: dict[str, str]) -> telemetry.Sampler:
    """NVML on the GPUs a CUDA point uses (CUDA_VISIBLE_DEVICES order); nothing for CPU."""
    if spec.device != "cuda":
        return telemetry.NullSampler("cpu point: no GPU to sample")
    return telemetry.make_sampler(
        visible=env.get("CUDA_VISIBLE_DEVICES"), count=spec.nproc_per_node
    )


SamplerFactory = Callable[[RunSpec, dict[str, str]], telemetry.Sampler]


def run_sweep(
    spec: SweepSpec,
    options: SweepOptions,
    *,
    echo: Callable[[str], None] = print,
    sampler_for: SamplerFactory = default_sampler,
    chosen: str = "",
) -> SweepResult:
    """Run (or resume) a sweep; see the module docstring. Returns where the results are.

    ``chosen`` says why this sweep runs (:func:`chosen_because`); the first line printed
    (:func:`start_line`) carries it, whether or not the output is a terminal.
    """
    spec = _named(spec, options)
    sweep_dir = Path(options.results) / spec.name
    timeout_s = options.timeout_s or spec.timeout_s
    if options.launcher == "slurm":
        hosts = slurm_hosts(os.environ)  # outside an allocation: one line before anything runs
        if options.nodes is not None and options.nodes > len(hosts):
            # A point needing more nodes than there are would fail to build its srun line.
            raise UserError(
                f"--nodes {options.nodes}: the allocation has {len(hosts)} node(s) "
                f"({', '.join(hosts[:8])}{', ...' if len(hosts) > 8 else ''})"
            )
    with store.sweep_lock(sweep_dir):
        env_info = envinfo.collect()
        _write_env(sweep_dir, env_info)
        # Planned under the lock, so the ledger cannot change under us.
        points = spec.expand(detect_resources(options), max_points=options.max_points)
        planned = plan(points, store.read_ledger(sweep_dir), retry_failed=options.retry_failed)
        _write_sweep_json(sweep_dir, spec, planned)
        for p in planned:
            if p.action == "skip":
                _record_skip(sweep_dir, spec, p, env_info["fingerprint"])
        to_run = [p.point for p in planned if p.action == "run"]
        done = sum(p.action == "done" for p in planned)
        kept = sum(p.action == "kept_failed" for p in planned)
        echo(start_line(spec, planned, sweep_dir, chosen=chosen, rows=store.read_ledger(sweep_dir),
                        timeout_s=timeout_s))  # fmt: skip
        if done or kept:
            echo(
                f"resuming {sweep_dir}: {done} point(s) already ok"
                + (f", {kept} failed kept (--retry-failed re-runs them)" if kept else "")
            )
        run_here = functools.partial(
            run_point,
            sweep=spec.name,
            scaling_mode=spec.scaling,
            timeout_s=timeout_s,
            options=options,
            env_info=env_info,
            sampler_for=sampler_for,
        )
        searching = spec.max_batch
        if options.find_max_batch is not None:
            searching = dataclasses.replace(searching, search=options.find_max_batch)
        if searching.search:
            max_batch.run_searches(
                [p.point.spec for p in planned if p.action in ("run", "done", "kept_failed")],
                sweep_dir,
                searching,
                run_trial=run_here,
                echo=echo,
                redo=options.retry_failed,
            )
        bar = _progress(len(to_run), enabled=options.progress)
        try:
            for point in to_run:
                if options.predict_oom and (why := _predicted_oom(point, sweep_dir, env_info)):
                    _record_predicted_oom(sweep_dir, spec, point, why, env_info["fingerprint"])
                    bar.update(1)
                    bar.write(f"{'skipped':<10} {point.run_id}  {describe(point)}  {why}")
                    continue
                bar.set_description_str(f"running {point.run_id} {describe(point)}")
                row = run_here(point.spec, sweep_dir)
                bar.set_postfix_str(f"last: {row['status']}")
                bar.update(1)
                bar.write(format_row(row, point))
        finally:
            bar.close()
            _note_load_end(sweep_dir)
    latest = store.latest_by_run_id(store.read_ledger(sweep_dir))
    statuses = Counter(
        latest[p.point.run_id]["status"] for p in planned if p.point.run_id in latest
    )
    return SweepResult(sweep_dir=sweep_dir, ran=len(to_run), statuses=dict(statuses))


def chosen_because(arg: str | None, *, gpu_count: int) -> str:
    """Why this sweep, in words: the machine picked it (no argument), or the user named it."""
    if arg is None:
        if gpu_count == 0:
            return "no GPU found: the default for a machine without one"
        return f"{gpu_count} GPU(s) found: the default for a GPU node"
    return "named on the command line"


@dataclass(frozen=True)
class Estimate:
    """How long the points to run should take, and what that figure rests on."""

    seconds: float | None
    """None: nothing to estimate from (the line then gives the timeout as the bound)."""
    basis: str
    """Where the figure comes from, in words, machine included."""


def estimate(
    to_run: Sequence[Point], rows: Sequence[dict[str, Any]], spec: SweepSpec, timeout_s: float
) -> Estimate:
    """The time ``to_run`` should take (pure), from the best basis there is.

    1. This folder's own ok runs (same machine, same sweep): each point the median duration of
       the earlier runs at its world size (all earlier runs where none has it).
    2. The sweep file's ``[estimate]``: ``point_s`` a point, measured where ``measured_on`` says.
    3. Nothing: no figure, and each point's bound (``timeout_s``) instead.
    """
    past = [
        r
        for r in rows
        if r.get("status") == "ok"
        and isinstance(r.get("duration_s"), (int, float))
        and math.isfinite(r["duration_s"])
    ]
    if past:
        by_size: dict[Any, list[float]] = {}
        for r in past:
            by_size.setdefault(r.get("world_size"), []).append(float(r["duration_s"]))
        overall = statistics.median(float(r["duration_s"]) for r in past)
        total = sum(
            statistics.median(by_size[p.spec.world_size])
            if p.spec.world_size in by_size
            else overall
            for p in to_run
        )
        return Estimate(
            total, f"median duration of the {len(past)} earlier ok run(s) in this folder"
        )
    if spec.point_s is not None:
        return Estimate(
            len(to_run) * spec.point_s,
            f"{spec.point_s:g} s a point, measured on {spec.measured_on}; {spec.source} [estimate]",
        )
    return Estimate(
        None,
        "no earlier runs in this folder and no [estimate] in the sweep file; each point may "
        f"take up to its timeout of {duration(timeout_s)}",
    )


def duration(seconds: float) -> str:
    """``45 s``, ``1 min 25 s``, ``2 h 05 min``: a wall time as a person reads it."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def start_line(
    spec: SweepSpec,
    planned: Sequence[PlannedPoint],
    sweep_dir: Path,
    *,
    chosen: str,
    rows: Sequence[dict[str, Any]],
    timeout_s: float,
) -> str:
    """The sweep's first line: which sweep, why it was chosen, how many points, how long.

    ``sweep cpu-smoke (harness/sweeps/cpu-smoke.toml; no GPU found: ...): 10 points, 10 to
    run, estimated 1 min 25 s (8.5 s a point, measured on ...)``. Nothing to run says so
    and how to run more.
    """
    why = f"; {chosen}" if chosen else ""
    head = f"sweep {spec.name} ({spec.source}{why}) -> {sweep_dir}: {len(planned)} points"
    counts = Counter(p.action for p in planned)
    to_run = [p.point for p in planned if p.action == "run"]
    if not to_run:
        return (
            f"{head}, none to run ({counts['done']} already ok, {counts['kept_failed']} failed "
            f"kept, {counts['skip'] + counts['skip_recorded']} skipped): nothing to do. To "
            "measure again, give a new folder (--name NEW) or more repeats (--repeats N); "
            "--retry-failed re-runs failed points."
        )
    est = estimate(to_run, rows, spec, timeout_s)
    when = f"estimated {duration(est.seconds)}" if est.seconds is not None else "no estimate"
    return f"{head}, {len(to_run)} to run; {when} ({est.basis})"


def format_row(row: dict[str, Any], point: Point) -> str:
    """One line per finished point: status, id, configuration, and the headline or reason."""
    if row["status"] == "ok":
        tail = f"{row['samples_per_s']:,.1f} samples/s, p50 step {row['step_time_s_p50']:.4f} s"
    else:
        tail = row["reason"] or ""
    return f"{row['status']:<10} {point.run_id}  {describe(point)}  {tail}"


def _write_sweep_json(sweep_dir: Path, spec: SweepSpec, planned: Sequence[PlannedPoint]) -> None:
    """The expanded sweep as this invocation sees it (readers use it to label points)."""
    points = [
        {
            "run_id": p.point.run_id,
            "skip_reason": p.point.skip_reason,
            "spec": p.point.spec.to_dict(),
        }
        for p in planned
    ]
    store.atomic_write_json(
        sweep_dir / layout.SWEEP_JSON, {"name": spec.name, "spec": spec.to_dict(), "points": points}
    )


def _record_skip(sweep_dir: Path, spec: SweepSpec, p: PlannedPoint, fingerprint: str) -> None:
    now = _now()
    row = store.make_row(
        sweep=spec.name,
        spec=p.point.spec,
        status="skipped",
        reason=p.note,
        started_at=now,
        finished_at=now,
        duration_s=0.0,
        scaling_mode=spec.scaling,
        point_dir=_rel(p.point.run_id),
        record=None,
        telemetry={
            **telemetry.window_columns([], None, available=False),
            **energy.unavailable("the point was skipped"),
        },
        env_fingerprint=fingerprint,
    )
    store.append_row(sweep_dir, row)


def _predicted_oom(point: Point, sweep_dir: Path, env_info: dict[str, Any]) -> str | None:
    """Why the memory model (or the max-batch search) says this point will not fit, or None."""
    if point.spec.device != "cuda":
        return None
    rows = [
        *store.latest_by_run_id(store.read_ledger(sweep_dir)).values(),
        *store.latest_by_run_id(store.read_ledger(sweep_dir / layout.MAX_BATCH_DIR)).values(),
    ]
    return memory_model.oom_reason(
        store.config_columns(point.spec),
        rows=rows,
        searches=max_batch.read_results(sweep_dir),
        capacity_gib=memory_model.device_capacity_gib(env_info),
    )


def _record_predicted_oom(
    sweep_dir: Path, spec: SweepSpec, point: Point, why: str, fingerprint: str
) -> None:
    """A "skipped" row with the prediction; not repeated when the last row says the same."""
    prev = store.latest_by_run_id(store.read_ledger(sweep_dir)).get(point.run_id)
    if prev and prev.get("status") == "skipped" and prev.get("reason") == why:
        return
    _record_skip(sweep_dir, spec, PlannedPoint(point=point, action="skip", note=why), fingerprint)


def _named(spec: SweepSpec, options: SweepOptions) -> SweepSpec:
    """The spec under --name (validated like a name in the file)."""
    return dataclasses.replace(spec, name=options.name) if options.name else spec


def _write_env(sweep_dir: Path, env_info: dict[str, Any]) -> None:
    """env.json once per sweep folder; a different machine resuming it is refused."""
    path = sweep_dir / layout.ENV_JSON
    previous = store.read_json(path)
    if previous and previous.get("fingerprint") != env_info["fingerprint"]:
        raise UserError(
            f"{sweep_dir} holds results from another environment (fingerprint "
            f"{previous.get('fingerprint')}, this one {env_info['fingerprint']}); mixing them "
            "would make comparisons meaningless -- use another --name"
        )
    if previous is None:
        store.atomic_write_json(path, env_info)


def _note_load_end(sweep_dir: Path) -> None:
    """env.json gets the load averages as this invocation ends (``load_avg_end``), beside those
    at its start, so compare can say how busy the machine was during the sweep."""
    path = sweep_dir / layout.ENV_JSON
    env = store.read_json(path)
    if isinstance(env, dict):
        store.atomic_write_json(path, {**env, "load_avg_end": envinfo.load_average()})


def run_point(
    spec: RunSpec,
    sweep_dir: Path,
    *,
    sweep: str,
    scaling_mode: str,
    timeout_s: float,
    options: SweepOptions,
    env_info: dict[str, Any],
    sampler_for: SamplerFactory = default_sampler,
) -> dict[str, Any]:
    """Launch one point, collect what it left, append its ledger row; returns the row."""
    # Whatever is here is an unfinished attempt (no row) or a failure being retried: it moves
    # to attempts/<n>/, so the new attempt starts clean and the old evidence is kept.
    pdir = store.fresh_point_dir(sweep_dir, spec.run_id)
    store.atomic_write_text(pdir / RUN_JSON, spec.to_json() + "\n")
    env = build_env(spec)
    nccl = effective_nccl_env(env)
    on_kill = None
    job_id = os.environ.get("SLURM_JOB_ID", "") if options.launcher == "slurm" else ""
    if options.launcher == "slurm":
        hosts = slurm_hosts(os.environ)
        argv = build_srun_argv(spec, pdir, hosts=hosts, port=free_port(), python=options.python)
        if job_id:
            # A timed-out point's tasks on the other nodes are not in our process tree:
            # cancelling its step is what stops them.
            def on_kill() -> None:
                slurm_cancel_steps(job_id, step_name(spec))

        if sampler_for is default_sampler:
            # One sampler per node, as a job step beside the point's (on a CPU point it
            # samples nothing, but each node still writes its files).
            sampler = SrunSampler(
                build_srun_telemetry_argv(
                    spec, pdir / layout.TELEMETRY_DIR, hosts=hosts, python=options.python
                ),
                env=env,
                folder=pdir / layout.TELEMETRY_DIR,
                log_path=pdir / LOGS_DIR / TELEMETRY_LOG,
                job_id=job_id or None,
                step=step_name(spec, "telemetry"),
            )
        else:
            sampler = sampler_for(spec, env)
    else:
        argv = build_torchrun_argv(spec, pdir, python=options.python)
        sampler = sampler_for(spec, env)
    started_at = _now()
    try:
        result = run_process(
            argv,
            env=env,
            log_path=pdir / LOGS_DIR / LAUNCHER_LOG,
            timeout_s=timeout_s,
            on_start=sampler.start,  # after the fork, so no sampler thread exists during it
            on_kill=on_kill,
        )
    finally:
        samples = sampler.stop()
        # torchrun makes its per-run log folder with mkdtemp (0700): give it the umask's mode.
        for folder in (pdir / LOGS_DIR).glob("*/"):
            ordinary_mode(folder)
    finished_at = _now()
    store.atomic_write_text(
        pdir / layout.TELEMETRY_JSONL,
        "".join(json.dumps(s, sort_keys=True) + "\n" for s in samples),
    )
    if job_id and result.returncode != 0:
        state = slurm_job_state(job_id)
        if state not in (None, "RUNNING"):
            # scancel or the time limit is ending the whole allocation: the point did not
            # fail, it was stopped. No row, so the next submission runs it again. (slurmctld
            # sets the state before it signals the steps, so this check cannot lose the race
            # against our own SIGTERM.)
            raise AllocationEnding(f"the allocation is ending (job {job_id}: {state})")
    record = store.read_json(pdir / RECORD_JSON)
    outcome = outcome_of(
        result,
        has_record=record is not None,
        errors=read_errors(pdir),
        log_text=read_logs(pdir),
        timeout_s=timeout_s,
    )
    outcome = _check_record(outcome, record)
    window = _window(record) if outcome.status == "ok" else None
    summary = telemetry.window_columns(samples, window, available=sampler.available)
    summary.update(
        energy.summarise_energy(
            samples,
            window,
            n_samples=energy.window_samples(record),
            available=sampler.available,
            unavailable_reason=sampler.unavailable_reason,
        )
    )
    row = store.make_row(
        sweep=sweep,
        spec=spec,
        status=outcome.status,
        reason=outcome.reason,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=result.duration_s,
        scaling_mode=scaling_mode,
        point_dir=_rel(spec.run_id),
        record=record if outcome.status == "ok" else None,
        telemetry=summary,
        env_fingerprint=env_info["fingerprint"],
    )
    store.atomic_write_json(
        pdir / layout.STATUS_JSON,
        {
            "status": outcome.status,
            "reason": outcome.reason,
            "returncode": result.returncode,
            "timed_out": result.timed_out,
            "duration_s": result.duration_s,
            "argv": argv,
            "telemetry_unavailable_reason": sampler.unavailable_reason,
            "env": envinfo.point_env(env_info, nccl_env=nccl),
        },
    )
    # The commit point: once this line is in the ledger the point is finished.
    store.append_row(sweep_dir, row)
    return row


class AllocationEnding(KeyboardInterrupt):
    """The SLURM job running the sweep is being cancelled or ran out of time: stop as on Ctrl-C
    (the point in flight gets no row and runs again on resume)."""


class SrunSampler:
    """The Sampler for a SLURM point: ``python -m harness.telemetry`` on every node via srun.

    Each node's sampler appends to ``folder/<host>.jsonl`` and says how it went in
    ``folder/<host>.node.json``. :meth:`stop` asks every node's sampler to finish (``scancel
    --signal=TERM`` on the step ``step`` of job ``job_id``), waits for the step to end, cancels
    it if it does not, and merges the files in time order. Without a job id (a stand-in for
    srun in tests) the process tree is terminated instead.
    """

    available = True
    unavailable_reason: str | None = None

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        folder: Path,
        log_path: Path,
        job_id: str | None = None,
        step: str | None = None,
        grace_s: float = 10.0,
    ) -> None:
        self._argv, self._env, self._folder, self._log_path = argv, env, folder, log_path
        self._job_id, self._step, self._grace_s = job_id, step, grace_s
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._argv, env=self._env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def stop(self) -> list[telemetry.Sample]:
        if self._proc is not None:
            if self._job_id and self._step:
                # The step may not be registered yet when a point ends at once: signal it as
                # soon as it is there, then give the samplers time to write their last words.
                deadline = time.monotonic() + self._grace_s
                signalled = False
                while self._proc.poll() is None and time.monotonic() < deadline:
                    if not signalled:
                        found = slurm_cancel_steps(self._job_id, self._step, signal_name="TERM")
                        signalled = bool(found)
                    time.sleep(0.1)
                if self._proc.poll() is None:
                    slurm_cancel_steps(self._job_id, self._step)
            kill_tree(self._proc, grace_s=5.0)  # at once when srun has already ended
        samples = telemetry.read_node_samples(self._folder)
        if not samples:
            self.available = False
            nodes = telemetry.read_node_status(self._folder)
            reasons = sorted({str(s.get("unavailable_reason")) for s in nodes.values()})
            if nodes and len(reasons) == 1 and reasons[0] != "None":
                self.unavailable_reason = f"{reasons[0]} ({', '.join(sorted(nodes))})"
            else:
                self.unavailable_reason = f"no samples from any node (see {self._log_path.name})"
        return samples


def _check_record(outcome: Outcome, record: dict[str, Any] | None) -> Outcome:
    """An "ok" needs a record this harness can read (schema 1 with metrics)."""
    if outcome.status != "ok":
        return outcome
    if record is None or record.get("schema_version") != 1 or not record.get("metrics"):
        version = record.get("schema_version") if record else None
        return Outcome(
            status="crashed",
            reason=f"record.json unreadable or schema_version {version!r} (expected 1)",
        )
    return outcome


def _window(record: dict[str, Any] | None) -> tuple[float, float] | None:
    win = (record or {}).get("measured_window") or {}
    start, end = win.get("start_unix"), win.get("end_unix")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end >= start:
        return (float(start), float(end))
    return None


def _rel(run_id: str) -> str:
    return f"{layout.POINTS_DIR}/{run_id}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class _NoBar:
    """Stands in for tqdm with --no-progress: the per-point lines still print."""

    def write(self, line: str) -> None:
        print(line, flush=True)

    def set_description_str(self, *_: Any) -> None: ...
    def set_postfix_str(self, *_: Any) -> None: ...
    def update(self, *_: Any) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, *, enabled: bool) -> Any:
    # A bar redraws itself with carriage returns: in a log file or a pipe those frames pile up
    # between the result lines, so redirected stderr gets plain lines only.
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="point",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=1.0,  # points take seconds to minutes: redraw at most once a second
        bar_format="{desc} | {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}",
    )
