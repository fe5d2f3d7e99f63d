"""``distrinews-bench train`` on this machine: one fine-tuning run, and how it ended.

One rank trains in this process (its log lines reach the caller through ``on_log``); more ranks
train under torchrun, started like every sweep point: the command line from
:func:`harness.launch.build_fit_argv` and the process from :func:`harness.launch.run_process`
(its own process group, killed whole on Ctrl-C, SIGTERM'd should this process die). Either way
``--out`` ends up with checkpoints, ``history.jsonl`` and ``fit_result.json``; a multi-rank
failure is read back from the worker's ``error.json`` (distrinews/failures.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distrinews import layout
from distrinews.checkpoint import check_resumable
from distrinews.distributed import DEFAULT_TIMEOUT_S, process_group
from distrinews.errors import UserError
from distrinews.files import atomic_write_text
from distrinews.log import log
from distrinews.runspec import RunSpec
from distrinews.train import FitResult, FitSpec, check_fresh_out, check_train_out

from .launch import build_env, build_fit_argv, rank_threads, run_process
from .spec import Resources, too_many_ranks


def run_fit_local(
    spec: FitSpec,
    out: Path,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_log: Callable[[str], None] = log,
) -> FitResult:
    """Fine-tune on this machine: in this process for one rank, under torchrun for more.

    Raises UserError for bad input (also when a torchrun rank reports invalid_spec) and
    RuntimeError naming the failure class when a multi-rank run fails.
    """
    from distrinews.worker import fit_and_record  # the workload; loaded only when training

    run = spec.run
    if run.nodes != 1:
        raise UserError("a local fine-tuning run has nodes = 1; use torchrun per node for more")
    check_ranks_fit_here(run)  # before anything is written or launched
    check_train_out(out)  # before any rank starts: one line, not a failed torchrun
    if not spec.resume:
        check_fresh_out(out)
    if run.world_size == 1:
        # The thread count torchrun's rank would get (OMP_NUM_THREADS from build_env), so one
        # rank trains like a one-rank sweep point. Left at torch's default (every core), one
        # rank on the 2-core box collapsed whenever other work ran (91 and 157 samples/s for 40
        # steps where one thread kept 632 and 1,058); on the idle box two threads were about
        # 20% faster (1,625 against 1,312): OMP_NUM_THREADS=2 asks for them.
        threads = rank_threads(build_env(run))
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            on_log(f"threads: {threads} intra-op (OMP_NUM_THREADS, as a launched rank gets)")
            with process_group(
                device=run.device, backend=run.resolved_backend, timeout_s=timeout_s
            ) as ctx:
                return fit_and_record(spec, ctx, out, on_log=on_log)
        finally:
            torch.set_num_threads(previous)  # this process goes on (tests, a notebook)
    if spec.resume:  # every rank would refuse a bad checkpoint, each with torchrun's noise
        check_resumable(out, world_size=run.world_size)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / layout.FIT_JSON, spec.to_json())
    for stale in out.glob(layout.ERROR_FILES_GLOB):
        stale.unlink()  # errors of an earlier attempt must not be read as this one's
    proc = run_process(
        build_fit_argv(run, out, timeout_s=timeout_s),
        env=build_env(run),
        log_path=None,  # the ranks' progress goes to the user's terminal
        timeout_s=None,  # a fine-tune takes as long as it takes; collectives have timeout_s
    )
    if proc.returncode != 0:
        error = _read_json(out / layout.ERROR_JSON)
        if error is None:
            raise RuntimeError(f"torchrun exited with {proc.returncode} and no error.json")
        if error.get("failure") == "invalid_spec":
            raise UserError(error["message"].split(": ", 1)[-1])
        raise RuntimeError(f"{error['failure']} on rank {error['rank']}: {error['message']}")
    result = _read_json(out / layout.FIT_RESULT_JSON)
    if result is None:
        raise RuntimeError(f"{out / layout.FIT_RESULT_JSON}: missing after a successful run")
    return FitResult.from_dict(result)


def check_ranks_fit_here(run: RunSpec) -> None:
    """UserError unless this machine has the device and room for ``run``'s ranks: CUDA for
    cuda, and at most one rank per GPU or per core (harness.spec.too_many_ranks names the
    bound) -- checked before torchrun is handed a rank count it would try to start."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if run.device == "cuda" and gpus == 0:
        raise UserError("--device cuda: CUDA is not available here; use --device cpu")
    reason = too_many_ranks(run, Resources(gpus_per_node=gpus))
    if reason is not None:
        raise UserError(f"--nproc-per-node {run.nproc_per_node}: {reason}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
