"""The benchmark loop: warm up, measure a window of optimizer steps, gather, explain.

A benchmark run does ``warmup_steps`` discarded optimizer steps, then ``measured_steps`` timed
ones between two device synchronizes (every rank enters the window together, after a barrier),
gathers every rank's step times, and returns the record (schema: notes/contracts.md section 1;
figures: distrinews/metrics.py). Unless ``explain`` is off, the step probe times the window's
steps from the inside (distrinews/timing.py), and after the window, in the same process group,
the worker measures what the window cannot show (compute-only steps, the all-reduce ceiling;
distrinews/explain.py). A planted fault
(distrinews/faults.py) fires inside the window.
"""

from __future__ import annotations

import platform
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from . import explain
from .contention import WindowCounters, usable_cores
from .distributed import DistContext, all_gather_objects, barrier, collective_versions, synchronize
from .failures import Terminated
from .faults import FAULT_AT, inject_fault, plant_slowdown
from .log import log
from .metrics import WindowCounts, contention_figures, matmul_params, peak_flops, summarize
from .runspec import FAILURE_FAULTS, RunSpec
from .timing import StepTimer
from .train import (
    BatchStream,
    WindowTotals,
    build_model,
    build_optimizer,
    configure_precision,
    make_scaler,
    make_trainer,
)

RECORD_SCHEMA_VERSION = 1


def benchmark(run: RunSpec, ctx: DistContext, *, on_log: Callable[[str], None] = log) -> dict:
    """Warm up, measure, gather: the record.json dict (meaningful on every rank)."""
    from .dataset import AGNewsDataset, LengthGroupedBatchSampler, get_tokenizer, load_agnews

    device = ctx.device
    news = load_agnews(run.data, seed=run.seed)
    tokenizer = None if news.synthetic else get_tokenizer(run.tokenizer)
    dataset = AGNewsDataset.from_data(news, tokenizer, max_length=run.max_length)
    configure_precision(run.precision, device)
    model = build_model(run).to(device).train()
    torch.manual_seed(run.seed * 1000 + ctx.rank + 1)  # per-rank dropout stream
    optimizer = build_optimizer(model, run.lr, device)
    trainer = make_trainer(
        model, run, optimizer=optimizer, scaler=make_scaler(run.precision, device), device=device
    )
    sampler = LengthGroupedBatchSampler(
        dataset.lengths,
        run.per_device_batch,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        seed=run.seed,
        drop_last=False,  # tiny data sets still fill steps; the stream cycles epochs anyway
    )
    pad_to = run.max_length if run.seq_policy == "fixed" else None
    stream = plant_slowdown(
        run, ctx, trainer, BatchStream(dataset, sampler, pad_to=pad_to, device=device)
    )

    # The step probe (distrinews/timing.py) times the window's steps from the inside, so the
    # parts of the decomposition are measured in the very steps they explain. It is on from
    # the first warmup step (DDP's comm hook then never changes mid-run); explain = false runs
    # the window with DDP's built-in all-reduce and no probe at all.
    probe = trainer.probe if run.explain else None
    if probe is not None:
        probe.start()
    if ctx.is_main:
        on_log(f"warmup: {run.warmup_steps} steps")
    for _ in range(run.warmup_steps):
        trainer.step(stream)
    # Outside the window: drain the device, then check the losses so far (one host sync).
    synchronize(device)
    trainer.check_finite()
    # Every rank enters the window together: a barrier, then drain the barrier's own work.
    barrier(ctx)
    synchronize(device)
    trainer.totals = WindowTotals()
    timer = probe if probe is not None else StepTimer(device)
    fault_step = int(run.measured_steps * FAULT_AT)
    if ctx.is_main:
        on_log(f"measured window: start ({run.measured_steps} steps)")
    losses: list[torch.Tensor] = []
    # Contention evidence: this rank's run-queue wait and context switches, the machine's steal
    # and load (distrinews/contention.py); a few reads at each edge, none inside the window.
    counters = WindowCounters.start()
    start_unix, t0 = time.time(), time.perf_counter()
    for i in range(run.measured_steps):
        if run.fault in FAILURE_FAULTS and i == fault_step:
            inject_fault(run.fault, ctx, model)
        losses.append(trainer.step(stream, timer))
    synchronize(device)  # the window ends when the device has finished its last step
    elapsed_s, end_unix = time.perf_counter() - t0, time.time()
    rank_counters = counters.finish(run.measured_steps)
    if probe is not None:
        probe.stop()
    if ctx.is_main:
        on_log(f"measured window: end ({elapsed_s:.3f} s)")
    trainer.check_finite()

    mine = {
        "step_times_s": timer.step_times_s(),
        "data_wait_s": timer.data_wait_s(),
        "elapsed_s": elapsed_s,
        "totals": asdict(trainer.totals),
        "loss_first": float(losses[0]),
        "loss_last": float(losses[-1]),
        "counters": rank_counters,
    }
    ranks = all_gather_objects(mine, ctx)
    warnings = []
    explained = explain.skipped()
    if run.explain:
        # After the window, so nothing measured above is disturbed: distrinews/explain.py.
        try:
            explained = explain.measure(
                run, ctx, trainer, stream, model,
                window_step_times_s=[r["step_times_s"] for r in ranks],
                window_elapsed_s=max(r["elapsed_s"] for r in ranks),
                window_marks=probe.step_marks() if probe is not None else [],
            )  # fmt: skip
        except Terminated:
            raise
        except Exception as exc:  # the window is measured: a failed explanation must not lose it
            lines = str(exc).strip().splitlines()
            warnings.append(
                f"explain measurements failed ({type(exc).__name__}: "
                f"{lines[0] if lines else ''}); their metrics are null"
            )
        if ctx.is_main:
            on_log(f"explain: {explained['metrics']}")
    totals = {k: sum(r["totals"][k] for r in ranks) for k in mine["totals"]}
    cfg = model.config
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = peak_flops(gpu_name, run.precision)
    if peak is None:
        warnings.append(
            f"mfu and hfu are null: no peak FLOP/s known for {gpu_name or 'cpu'} at "
            f"{run.precision} (distrinews.metrics.PEAK_FLOPS)"
        )
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    metrics = summarize(
        step_times_s=[r["step_times_s"] for r in ranks],
        measured_time_s=max(r["elapsed_s"] for r in ranks),
        data_wait_s=sum(r["data_wait_s"] for r in ranks) / len(ranks),
        counts=WindowCounts(**totals),
        world_size=ctx.world_size,
        n_matmul=matmul_params(dim=cfg.dim, hidden_dim=cfg.hidden_dim, n_layers=cfg.n_layers),
        n_layers=cfg.n_layers,
        dim=cfg.dim,
        peak_flops_per_device=peak,
        mem_peak_gib=mem,
        loss_first=sum(r["loss_first"] for r in ranks) / len(ranks),
        loss_last=sum(r["loss_last"] for r in ranks) / len(ranks),
        contention=contention_figures(
            [r["counters"] for r in ranks],
            cpu_cores=usable_cores(),
            ranks_per_machine=ctx.local_world_size,
            threads_per_rank=torch.get_num_threads(),
            on_cpu=device.type == "cpu",
        ),
    )
    return {
        "schema_version": RECORD_SCHEMA_VERSION,
        "run_id": run.run_id,
        "config_key": run.config_key,
        "spec": run.to_dict(),
        "metrics": metrics.with_explain(explained["metrics"]).to_record(),
        "step_times_s": [r["step_times_s"] for r in ranks],
        "compute_step_times_s": explained["compute_step_times_s"],
        "buckets": explained["buckets"],
        "grad_dtype": explained["grad_dtype"],
        "instrumented": explained["instrumented"],
        "measured_window": {"start_unix": start_unix, "end_unix": end_unix},
        "env": environment(ctx, gpu_name),
        "warnings": warnings,
    }


def environment(ctx: DistContext, gpu_name: str | None) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        **collective_versions(),
        "gpu_name": gpu_name,
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "backend": ctx.backend,
        "world_size": ctx.world_size,
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
