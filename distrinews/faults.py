"""Planted faults: every failure and slowdown a test needs, made to happen for real.

``RunSpec.fault`` names one (distrinews/runspec.py: FAILURE_FAULTS, SLOW_FAULTS), so tests and
sweeps drive every path through a real launch instead of a mock:

- **Failures** (:func:`inject_fault`, at :data:`FAULT_AT` of the measured window): ``crash``
  (an exception on every rank), ``crash_last`` (on the last rank only: the others must notice),
  ``oom`` (a real allocation beyond the device's memory), ``nan`` (a NaN weight, so the loss is
  NaN), ``rank_exit`` (a rank calls ``os._exit``: no cleanup, no error file), ``hang`` (an
  endless sleep the harness's timeout must end). What each is classified as:
  distrinews/failures.py.
- **Slowdowns** (:func:`plant_slowdown`, ``fault_ms`` each, only at N > 1): a known cause
  whose attribution can be checked -- ``slow_rank``, ``slow_data``, ``slow_comm``,
  ``busy_cores`` (contention: :func:`start_busy_cores`).
- **A memory limit** (:func:`apply_memory_limit`, the environment knob
  ``DISTRINEWS_RANK_MEMORY_LIMIT_GIB``): how a CPU machine runs out of memory for real.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
from typing import Any

import torch

from .distributed import DistContext
from .errors import UserError
from .log import log
from .runspec import SLOW_FAULTS, RunSpec
from .train import BatchStream, Trainer

#: Where in the measured window a deliberate fault fires (as a share of measured_steps).
FAULT_AT = 0.5


# -- failures --------------------------------------------------------------------------------


def inject_fault(fault: str, ctx: DistContext, model: torch.nn.Module) -> None:
    """Make the failure happen for real, so its detection and reporting are tested for real."""
    if fault == "crash":
        raise RuntimeError("injected fault: crash")
    if fault == "crash_last" and ctx.rank == ctx.world_size - 1:
        # One rank (on one node, across nodes) fails; the others must notice and stop.
        raise RuntimeError(f"injected fault: crash on rank {ctx.rank}")
    if fault == "oom":
        # A real allocation far beyond the device's memory, through the real allocator.
        if ctx.device.type == "cuda":
            total = torch.cuda.get_device_properties(ctx.device).total_memory
            torch.empty(4 * total, dtype=torch.uint8, device=ctx.device)
        else:
            torch.empty(1 << 50, dtype=torch.uint8)  # 1 PiB: beyond any address space
    elif fault == "nan":
        # A NaN weight in the classifier head (DistilBERT's classifier bias, the synthetic
        # model's head): the forward pass itself makes the loss NaN.
        head = model.hf.classifier.bias if hasattr(model, "hf") else model.head
        with torch.no_grad():
            head.fill_(float("nan"))
    elif fault == "rank_exit":
        if ctx.rank == min(1, ctx.world_size - 1):
            log(f"injected fault: rank {ctx.rank} exits")
            sys.stderr.flush()
            os._exit(1)  # no cleanup, no error file: exactly what a dying rank leaves behind
    elif fault == "hang":
        log("injected fault: hang")
        while True:  # the harness's timeout must kill us
            time.sleep(3600)


# -- planted slowdowns -----------------------------------------------------------------------


class DelayedStream:
    """A batch stream whose every fetch first sleeps: a data loader that cannot keep up."""

    def __init__(self, stream: BatchStream, delay_s: float) -> None:
        self.stream, self.delay_s = stream, delay_s

    def next(self) -> Any:
        time.sleep(self.delay_s)
        return self.stream.next()


def plant_slowdown(
    run: RunSpec, ctx: DistContext, trainer: Trainer, stream: BatchStream
) -> BatchStream | DelayedStream:
    """Install the spec's planted slowdown (if any, and only at N > 1); returns the stream to use.

    - slow_rank: the last rank sleeps ``fault_ms`` per optimizer step inside forward (a forward
      pre-hook, ``fault_ms / grad_accum`` per micro-step): a straggler the others wait for.
    - slow_data: every batch fetch sleeps ``fault_ms`` on every rank: data wait.
    - slow_comm: a DDP communication hook sleeps ``fault_ms`` before all-reducing the last
      bucket of every step (ready at the end of backward, so nothing can hide it).
    - busy_cores: the first rank of each machine starts one busy process per core the ranks
      may run on, pinned to it, busy ``fault_ms`` of every 10 ms for the whole run
      (:func:`start_busy_cores`): the ranks compete for their cores.
    """
    if run.fault not in SLOW_FAULTS or ctx.world_size == 1 or run.fault_ms <= 0:
        return stream
    delay_s = run.fault_ms / 1e3
    ddp = trainer._ddp()
    if run.fault == "busy_cores":
        if ctx.local_rank == 0:
            start_busy_cores(sorted(usable_core_ids()), busy_s=min(delay_s, BUSY_PERIOD_S))
        return stream
    if run.fault == "slow_data":
        return DelayedStream(stream, delay_s)
    if run.fault == "slow_rank":
        if ctx.rank == ctx.world_size - 1:
            inner = ddp.module if ddp is not None else trainer.model
            per_micro = delay_s / run.grad_accum
            inner.register_forward_pre_hook(lambda module, args: time.sleep(per_micro))
        return stream
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    # No annotations: DDP compares them to dist.GradBucket itself, and this module's
    # ``from __future__ import annotations`` would turn them into strings it rejects.
    def delayed_allreduce(state, bucket):
        if bucket.is_last():
            time.sleep(delay_s)
        return default_hooks.allreduce_hook(None, bucket)

    if ddp is None:
        raise AssertionError("slow_comm needs the DDP-wrapped model")
    # Through the step probe: DDP takes one comm hook, and the probe times what it calls.
    trainer.probe.set_comm_hook(delayed_allreduce)
    return stream


#: busy_cores: each busy process spins ``fault_ms`` of every period, then sleeps the rest.
BUSY_PERIOD_S = 0.010
#: The busy process: pinned to one core, spinning, and dying with the rank that started it
#: (PR_SET_PDEATHSIG, and a check that its parent is still the rank). Plain ``python -S -c``:
#: no torch import, so it starts in milliseconds.
_BUSY_LOOP = """
import ctypes, os, signal, sys, time
core, parent = int(sys.argv[1]), int(sys.argv[4])
busy, period = float(sys.argv[2]), float(sys.argv[3])
try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)
except Exception:
    pass
if os.getppid() != parent:
    sys.exit(0)
os.sched_setaffinity(0, {core})
while True:
    end = time.perf_counter() + busy
    while time.perf_counter() < end:
        pass
    if busy < period:
        time.sleep(period - busy)
"""
_busy: list[subprocess.Popen] = []


def usable_core_ids() -> set[int]:
    """The cores this process may run on (all CPUs where there is no affinity mask)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:
        return set(range(os.cpu_count() or 1))


def start_busy_cores(cores: list[int], *, busy_s: float) -> list[subprocess.Popen]:
    """One busy process per core in ``cores``, pinned to it: busy ``busy_s`` of every
    :data:`BUSY_PERIOD_S`. They end with this process (or :func:`stop_busy_cores`)."""
    for core in cores:
        argv = [sys.executable, "-S", "-c", _BUSY_LOOP, str(core), str(busy_s),
                str(BUSY_PERIOD_S), str(os.getpid())]  # fmt: skip
        _busy.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
    if len(_busy) == len(cores):
        atexit.register(stop_busy_cores)
    return list(_busy)


def stop_busy_cores() -> None:
    """End the busy processes this process started."""
    while _busy:
        proc = _busy.pop()
        proc.kill()
        proc.wait()


# -- a real out-of-memory on CPU ---------------------------------------------------------------


#: Environment knob: extra address space (GiB) a rank may map beyond what it holds at start-up.
MEMORY_LIMIT_ENV = "DISTRINEWS_RANK_MEMORY_LIMIT_GIB"


def apply_memory_limit(env: dict[str, str] | None = None) -> int | None:
    """Cap this rank's address space if ``DISTRINEWS_RANK_MEMORY_LIMIT_GIB`` is set.

    This is how a CPU machine runs out of memory for real, at a size a test can afford: the
    limit (``RLIMIT_AS``, via ``resource.setrlimit``) is the address space the rank has mapped
    when it starts (Python, torch and their libraries: about 0.7 GiB) plus the given GiB, so
    the same setting means the same headroom on any machine. Past it, allocations fail in the
    real allocator ("can't allocate memory") and the run is classified oom, exit 3, exactly
    like a GPU running out. Returns the limit in bytes, or None when the knob is unset.
    """
    raw = (os.environ if env is None else env).get(MEMORY_LIMIT_ENV, "").strip()
    if not raw:
        return None
    try:
        gib = float(raw)
    except ValueError:
        gib = float("nan")
    if not gib > 0 or gib == float("inf"):
        raise UserError(
            f"{MEMORY_LIMIT_ENV} = {raw!r} is not allowed; expected a number of GiB > 0"
        )
    import resource

    mapped = _mapped_bytes()
    limit = mapped + int(gib * 2**30)
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def _mapped_bytes() -> int:
    """The process's current address space size (VmSize in /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise UserError(f"{MEMORY_LIMIT_ENV} needs Linux (/proc/self/status has no VmSize)")
