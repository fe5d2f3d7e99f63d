"""Why a point's efficiency is what it is: the measurements after the window.

A DDP step on N ranks costs what one rank's work costs (forward, backward, optimizer, data
wait), plus waiting for a core (contention), plus the wait for the slowest rank (straggler),
plus the part of the gradient all-reduce that backward did not hide (exposed communication).
After the measured window, in the same worker and process group, the worker measures each of
these (a few seconds at most; ``RunSpec.explain = false`` switches it off):

1. **the window's own steps**, timed from the inside by the step probe (distrinews/timing.py;
   benchmark.py turns it on for the window): per rank and step, data wait, waiting for a core,
   DDP's forward collective, backward and its last gradient, each bucket's readiness and
   in-step all-reduce, and the wait for the all-reduce. This module turns those marks into
   figures; the parts of a step then add up to the window's own step.
2. **compute-only steps** — the same kind of optimizer steps on the same data stream under
   DDP's ``no_sync()``: no all-reduce, so every rank runs at its own pace.
3. **the all-reduce ceiling** — ``dist.all_reduce`` of exactly the gradient's bytes and dtype,
   then of each of DDP's actual buckets (sizes from DDP's own logging data, in DDP's order:
   bucket 0 is the first ready in backward), median after warmup, every rank issuing the same
   number of collectives.

The arithmetic is pure and lives in :func:`distrinews.metrics.explain_figures` and
:func:`distrinews.metrics.step_figures`.

Planted slowdowns (``RunSpec.fault`` in SLOW_FAULTS, ``fault_ms`` each, only at N > 1) make a
known cause so the attribution can be checked: :func:`distrinews.faults.plant_slowdown`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.distributed as dist

from .contention import process_run_queue_s
from .distributed import DistContext, all_gather_objects, barrier, synchronize
from .metrics import (
    EXPLAIN_METRIC_KEYS,
    explain_figures,
    lower_median,
    overlap_share,
    percentile,
    step_figures,
)
from .runspec import RunSpec
from .timing import StepTimer
from .train import Trainer

#: Wall-clock budget of the compute-only steps (the step count adapts, MIN_STEPS..MAX_STEPS).
COMPUTE_BUDGET_S = 2.0
MIN_STEPS = 3
#: A median over ten steps is already steady; more only adds cost (with 40 measured steps the
#: compute-only phase alone was 10% of a cpu-smoke point).
MAX_STEPS = 10
#: All-reduce microbenchmark: warmup collectives, then repetitions within a time budget.
ALLREDUCE_WARMUP = 2
ALLREDUCE_MIN_REPS, ALLREDUCE_MAX_REPS = 3, 20
ALLREDUCE_BUDGET_S = 0.5
BUCKETS_BUDGET_S = 1.0
#: record.json keeps every rank's raw in-step marks up to this many ranks.
MARKS_MAX_RANKS = 16


# -- measurements ----------------------------------------------------------------------------


def compute_only_steps(
    trainer: Trainer, stream: Any, steps: int, device: torch.device
) -> tuple[list[float], list[float]]:
    """``steps`` optimizer steps under ``no_sync()``: (step times, data wait per step)."""
    trainer.step(stream, sync=False)  # untimed: a possible recompile, first no_sync forward
    synchronize(device)
    timer = StepTimer(device)
    for _ in range(steps):
        trainer.step(stream, timer, sync=False)
    synchronize(device)
    return timer.step_times_s(), timer.data_wait_per_step_s(trainer.grad_accum)


def ddp_bucket_bytes(trainer: Trainer) -> list[int]:
    """DDP's bucket sizes in bytes, in its order (bucket 0 = first ready in backward)."""
    ddp = trainer._ddp()
    if ddp is None:
        return []
    data = ddp._get_ddp_logging_data()
    # DDP builds one provisional bucket at construction (find_unused_parameters=False) and
    # rebuilds the real ones, in gradient-ready order, after the first backward; only the
    # rebuilt sizes are what it all-reduces. "bucket_sizes" keeps the construction-time ones.
    sizes = str(data.get("rebuilt_bucket_sizes") or data.get("bucket_sizes", ""))
    return [int(s) for s in sizes.split(",") if s.strip()]


def allreduce_time_s(
    nbytes: int, dtype: torch.dtype, ctx: DistContext, *, budget_s: float = ALLREDUCE_BUDGET_S
) -> float | None:
    """Median seconds of one ``dist.all_reduce`` of ``nbytes`` of ``dtype`` (None at N = 1)."""
    timed = allreduce_timings(nbytes, dtype, ctx, budget_s=budget_s)
    return None if timed is None else timed[0]


def allreduce_timings(
    nbytes: int, dtype: torch.dtype, ctx: DistContext, *, budget_s: float = ALLREDUCE_BUDGET_S
) -> tuple[float, float | None] | None:
    """(median seconds of one ``dist.all_reduce`` of ``nbytes`` of ``dtype``, the median of
    the same minus the seconds this process's threads waited for a core during it), None at
    N = 1.

    The second figure (CPU only; None on CUDA or without schedstat) leaves out what
    contention added to the ceiling: gloo's threads do the reduction, and on a machine with
    more ranks than cores, or a busy neighbour, they wait for a core while the clock runs.

    Every rank must call this with the same arguments: the repetition count is agreed on (the
    slowest rank's warmup decides), so all ranks issue the same collectives.
    """
    if ctx.world_size == 1 or nbytes <= 0:
        return None
    itemsize = torch.empty((), dtype=dtype).element_size()
    buf = torch.zeros(max(1, nbytes // itemsize), dtype=dtype, device=ctx.device)
    cuda = ctx.device.type == "cuda"

    def once() -> tuple[float, float | None]:
        # Start together: otherwise one rank's late arrival counts as all-reduce time.
        barrier(ctx)
        synchronize(ctx.device)
        if cuda:  # device time of the collective, as nccl-tests measures it
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dist.all_reduce(buf)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3, None
        waited = process_run_queue_s()
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        took = time.perf_counter() - t0
        after = process_run_queue_s()
        return took, None if waited is None or after is None else max(0.0, after - waited)

    warm = max(once()[0] for _ in range(ALLREDUCE_WARMUP))
    agreed = torch.tensor([warm], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    per_op = max(float(agreed.item()), 1e-6)
    reps = int(min(ALLREDUCE_MAX_REPS, max(ALLREDUCE_MIN_REPS, budget_s / per_op)))
    runs = [once() for _ in range(reps)]
    took = percentile([t for t, _ in runs], 50)
    if any(w is None for _, w in runs):
        return took, None
    return took, percentile([t - w for t, w in runs], 50)  # type: ignore[operator]


def grad_bytes_and_dtype(model: torch.nn.Module) -> tuple[int, torch.dtype]:
    """Bytes of the dense gradients DDP all-reduces per step, and their dtype."""
    params = [p for p in model.parameters() if p.requires_grad]
    dtypes = {p.dtype for p in params}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    return sum(p.numel() * p.element_size() for p in params), dtype


def measure(
    run: RunSpec,
    ctx: DistContext,
    trainer: Trainer,
    stream: Any,
    model: torch.nn.Module,
    *,
    window_step_times_s: list[list[float]],
    window_elapsed_s: float,
    window_marks: list[dict[str, Any]],
) -> dict[str, Any]:
    """All explain measurements (every rank calls this, after the window and the gather).

    Returns ``{"metrics": {...}, "compute_step_times_s": per rank, "buckets": [...],
    "grad_dtype": str}``, identical on every rank.
    """
    started = time.perf_counter()
    seconds_per_step = window_elapsed_s / max(1, len(window_step_times_s[0]))
    budget_steps = math.ceil(COMPUTE_BUDGET_S / seconds_per_step)
    steps = max(MIN_STEPS, min(MAX_STEPS, run.measured_steps, budget_steps))
    marks_all = all_gather_objects(window_marks, ctx)
    barrier(ctx)
    work, waits = compute_only_steps(trainer, stream, steps, ctx.device)
    trainer.optimizer.zero_grad(set_to_none=True)
    gathered = all_gather_objects((work, waits), ctx)
    grad_bytes, dtype = grad_bytes_and_dtype(model)
    bucket_bytes = ddp_bucket_bytes(trainer)
    barrier(ctx)
    whole = allreduce_time_s(grad_bytes, dtype, ctx)
    per_bucket_budget = BUCKETS_BUDGET_S / max(1, len(bucket_bytes))
    bucket_times = [
        allreduce_timings(b, dtype, ctx, budget_s=per_bucket_budget) for b in bucket_bytes
    ]
    # Each rank timed the same collectives; the figure is the median over ranks.
    whole_all = all_gather_objects(whole, ctx)
    buckets_all = all_gather_objects(bucket_times, ctx)
    whole = None if whole is None else lower_median(whole_all)
    ceilings = [
        None if t is None else lower_median([r[i][0] for r in buckets_all])
        for i, t in enumerate(bucket_times)
    ]
    # The ceiling without the wait for a core: each rank's all-reduce minus what its own
    # threads waited during it (a late thread on either rank delays both), the lower median
    # over ranks. What contention adds inside the step is then contention, not exposure.
    alone = [
        None
        if t is None
        else lower_median([r[i][0] if r[i][1] is None else r[i][1] for r in buckets_all])
        for i, t in enumerate(bucket_times)
    ]
    metrics = explain_figures(
        work_step_times_s=[g[0] for g in gathered],
        work_data_wait_s=[g[1] for g in gathered],
        allreduce_time_s=whole,
        grad_bytes=grad_bytes,
    )
    inside = step_figures(marks_all, ceiling_buckets_s=alone if ctx.world_size > 1 else None)
    steps_done = inside["metrics"].pop("instrumented_steps")
    metrics.update(inside["metrics"])
    metrics["bucket_count"] = len(bucket_bytes) if bucket_bytes else None
    # DDP's all-reduce as DDP issues it (bucket by bucket), each at the ceiling, summed.
    metrics["allreduce_bucketed_time_s"] = (
        sum(ceilings) if ceilings and all(t is not None for t in ceilings) else None
    )
    metrics["overlap_share"] = overlap_share(
        metrics["exposed_comm_s"] if ctx.world_size > 1 else None,
        metrics["allreduce_bucketed_time_s"] or whole,
    )
    in_step = inside["buckets"]
    buckets = [
        {
            "bytes": b,
            "allreduce_time_s": t,
            "allreduce_uncontended_s": alone[i],
            # In-step timings (the contract the projection reads: notes/contracts.md).
            "ready_s": in_step[i]["ready_s"] if i < len(in_step) else None,
            "step_allreduce_s": in_step[i]["step_allreduce_s"] if i < len(in_step) else None,
        }
        for i, (b, t) in enumerate(zip(bucket_bytes, ceilings, strict=True))
    ]
    compute_times = [[w - d for w, d in zip(*g, strict=True)] for g in gathered]
    # What these measurements cost the run (rank 0's wall clock; ranks end together).
    metrics["explain_time_s"] = time.perf_counter() - started
    return {
        "metrics": metrics,
        "compute_step_times_s": compute_times,
        "buckets": buckets,
        "grad_dtype": str(dtype).removeprefix("torch."),
        "instrumented": {
            "steps": steps_done,
            "step_work_s_per_rank": inside["step_work_s_per_rank"],
            # The raw marks (distrinews/timing.py StepProbe.step_marks) for anyone checking a
            # figure by hand; a few kB per rank, so only up to MARKS_MAX_RANKS ranks.
            "marks": marks_all if ctx.world_size <= MARKS_MAX_RANKS else None,
        },
    }


def skipped() -> dict[str, Any]:
    """What the record carries when ``explain`` is off: every key, every value null."""
    return {
        "metrics": dict.fromkeys(EXPLAIN_METRIC_KEYS),
        "compute_step_times_s": None,
        "buckets": None,
        "grad_dtype": None,
        "instrumented": None,
    }
