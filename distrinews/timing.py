"""Inside a synchronised DDP step: what each rank did, and what it waited for.

One optimizer step of DDP on one rank, in time order::

    data ─ forward (DDP first broadcasts rank 0's buffers: a collective) ─ backward ─┐
          as backward produces gradients, bucket 0 becomes ready: DDP calls its comm hook,
          which starts that bucket's all-reduce (asynchronous); then bucket 1, ...
    last gradient ─ DDP waits for every bucket's all-reduce (the *tail*) ─ optimizer ─ end

:class:`StepProbe` timestamps these moments on every rank, step by step, through the measured
window (distrinews/benchmark.py starts it before warmup whenever ``explain`` is on): the step,
its data wait, the forward's collective, backward's start, each bucket's comm-hook call (the
bucket is ready), the moment the hook issued its collective and the all-reduce's completion
(the hook's future), the last gradient (``register_post_accumulate_grad_hook`` on every
parameter) and backward's return. On CPU it also reads the training thread's run-queue wait
(distrinews/contention.py).

Timing follows the device: on CPU, ``perf_counter`` (work is synchronous, gloo runs the
collectives on its own threads and completes the future there). On CUDA, events on the
current stream: the hook's event completes when the bucket's gradients are computed; the
future's callback runs on a stream that DDP's all-reduce future synchronises with NCCL's
communication stream (torch.futures.Future.then), so an event recorded there completes when
the all-reduce does. Every duration is device time read after the synchronize.

DDP takes one comm hook. The probe is that hook and calls the one the run asked for
(``ddp.comm_hook``, or the planted ``slow_comm``) inside it; with no hook asked for, it calls
PyTorch's ``allreduce_hook`` (what DDP's built-in all-reduce does, in Python: DDP then copies
gradients into buckets without dividing and the hook divides, one pass over the gradient
either way). With ``explain = false`` there is no probe and DDP runs its built-in all-reduce.
Under ``torch.compile`` the forward pre-hook is left out (a Python call inside the compiled
forward would break its graph): DDP's forward collective then counts as work.

The arithmetic on these timestamps is pure and lives in :func:`distrinews.metrics.step_figures`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from .contention import RunQueueClock


class StepTimer:
    """Per-step times and data-wait time, with no host sync while recording.

    On CUDA, events are recorded on the stream and read only after the window's synchronize:
    an event pair measures what the *GPU* spent between two points, including time it sat idle
    waiting for the host to hand it the next batch (that idle time is the data wait). On CPU,
    work is synchronous, so perf_counter is exact.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.steps: list[tuple[Any, Any]] = []
        self.waits: list[tuple[Any, Any]] = []
        self._step_start: Any = None
        self._wait_start: Any = None

    def _mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def step_start(self) -> None:
        self._step_start = self._mark()

    def step_end(self) -> None:
        self.steps.append((self._step_start, self._mark()))

    def data_start(self) -> None:
        self._wait_start = self._mark()

    def data_end(self) -> None:
        self.waits.append((self._wait_start, self._mark()))

    # Marks only the probe (below) records; the window's timer ignores them.
    def forward_call(self) -> None:
        pass

    def backward_start(self) -> None:
        pass

    def backward_end(self) -> None:
        pass

    def _elapsed(self, pair: tuple[Any, Any]) -> float:
        start, end = pair
        return start.elapsed_time(end) / 1e3 if self.cuda else end - start

    def step_times_s(self) -> list[float]:
        """Call after synchronizing the device."""
        return [self._elapsed(p) for p in self.steps]

    def data_wait_s(self) -> float:
        return sum(self._elapsed(p) for p in self.waits)

    def data_wait_per_step_s(self, micro_steps: int) -> list[float]:
        """Data wait of each step (``micro_steps`` batch fetches per optimizer step)."""
        waits = [self._elapsed(p) for p in self.waits]
        return [sum(waits[i : i + micro_steps]) for i in range(0, len(waits), micro_steps)]


#: A DDP communication hook: (state, GradBucket) -> Future of the reduced bucket tensor.
CommHook = Callable[[Any, Any], Any]


@dataclass
class _Marks:
    """The raw marks of one optimizer step (floats on CPU, CUDA events on GPU)."""

    start: Any = None
    end: Any = None
    data: list[tuple[Any, Any]] = field(default_factory=list)
    forward: list[tuple[Any, Any]] = field(default_factory=list)
    backward_start: Any = None
    grads_done: Any = None
    backward_end: Any = None
    # (index, ready, launched, done, run-queue wait at ready, run-queue wait at done)
    buckets: list[tuple[int, Any, Any, Any, float | None, float | None]] = field(
        default_factory=list
    )
    # Run-queue wait readings (CPU): at start and end, and summed over the data fetches and
    # over DDP's forward collectives.
    rq_start: float | None = None
    rq_end: float | None = None
    rq_data: float = 0.0
    rq_forward: float = 0.0


class StepProbe(StepTimer):
    """A :class:`StepTimer` that also times what happens inside the step.

    Pass it to ``Trainer.step`` like a StepTimer, between :meth:`start` and :meth:`stop`;
    read :meth:`step_marks` (and StepTimer's figures) after synchronizing the device.
    """

    def __init__(self, ddp: DDP | None, device: torch.device) -> None:
        super().__init__(device)
        self.ddp = ddp
        self.recording = False
        #: Set when the DDP model runs under torch.compile (no forward pre-hook then).
        self.compiled = False
        self._inner: tuple[CommHook, Any] | None = None
        self._registered = False
        self._handles: list[Any] = []
        self._marks: list[_Marks] = []
        self._cur: _Marks | None = None
        self._rq: RunQueueClock | None = None
        self._pending_rq: float | None = None
        self._forward_call: Any = None
        self._forward_rq: float | None = None

    # -- the comm hook -------------------------------------------------------------------------

    def set_comm_hook(self, hook: CommHook, state: Any = None) -> None:
        """Register ``hook`` with DDP, through the probe (call once, before training)."""
        if self.ddp is None:
            raise AssertionError("a comm hook needs the DDP-wrapped model")
        if self._registered:
            raise AssertionError("DDP takes one comm hook; the probe already registered one")
        self._inner = (hook, state)
        self.ddp.register_comm_hook(state, self._hook)
        self._registered = True

    # No annotations: DDP compares them to dist.GradBucket itself, and this module's
    # ``from __future__ import annotations`` would turn them into strings it rejects.
    def _hook(self, state, bucket):
        hook = self._inner[0]  # type: ignore[index]
        cur = self._cur
        if not self.recording or cur is None:
            return hook(state, bucket)
        index = bucket.index()
        ready, rq_ready = self._mark(), self._read_rq()
        fut = hook(state, bucket)
        # The hook's own work before its collective is issued: the division by the world
        # size, a compression, a planted delay (on CUDA: the kernels it enqueued).
        launched = self._mark()

        def done(f: Any) -> Any:
            # Runs where the all-reduce completes: gloo's thread, or (CUDA) on a stream that
            # waits for NCCL's, so the event below completes with the all-reduce. The
            # run-queue clock reads the training thread's counter from here too.
            cur.buckets.append((index, ready, launched, self._mark(), rq_ready, self._read_rq()))
            return f.value()

        return fut.then(done)

    # -- recording ---------------------------------------------------------------------------

    def start(self) -> None:
        """Begin recording: hooks on, marks cleared."""
        if self.ddp is not None and not self._registered:
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            self.set_comm_hook(default_hooks.allreduce_hook)
        self.steps, self.waits, self._marks = [], [], []
        module = self.ddp.module if self.ddp is not None else None
        if module is not None:
            if not self.compiled:
                # First among the pre-hooks: a planted slow_rank sleep (a pre-hook too) is work.
                self._handles.append(
                    module.register_forward_pre_hook(self._forward_started, prepend=True)
                )
            for p in module.parameters():
                if p.requires_grad:
                    self._handles.append(p.register_post_accumulate_grad_hook(self._grad_done))
        self._rq = RunQueueClock() if not self.cuda else None
        if self._rq is not None and not self._rq.available:
            self._rq = None
        self.recording = True

    def stop(self) -> None:
        """Stop recording and remove the per-step hooks (the comm hook stays, passing through)."""
        self.recording = False
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._rq is not None:
            self._rq.close()
            self._rq = None

    def _read_rq(self) -> float | None:
        return None if self._rq is None else self._rq.read()

    # StepTimer's interface, with the extra marks.
    def step_start(self) -> None:
        super().step_start()
        if self.recording:
            self._cur = _Marks(start=self._step_start, rq_start=self._read_rq())

    def step_end(self) -> None:
        super().step_end()
        cur = self._cur
        if cur is not None:
            cur.end = self.steps[-1][1]
            cur.rq_end = self._read_rq()
            self._marks.append(cur)
        self._cur = None

    def data_start(self) -> None:
        super().data_start()
        self._pending_rq = self._read_rq()

    def data_end(self) -> None:
        super().data_end()
        if self._cur is not None:
            self._cur.data.append(self.waits[-1])
            after = self._read_rq()
            if after is not None and self._pending_rq is not None:
                self._cur.rq_data += after - self._pending_rq

    def forward_call(self) -> None:
        self._forward_call = self._mark()
        self._forward_rq = self._read_rq()

    def _forward_started(self, module: Any, args: Any) -> None:
        # The inner module's forward begins after DDP's own pre-forward work (buffer broadcast).
        if self._cur is not None and self._forward_call is not None:
            self._cur.forward.append((self._forward_call, self._mark()))
            after = self._read_rq()
            if after is not None and self._forward_rq is not None:
                self._cur.rq_forward += after - self._forward_rq
            self._forward_call = None

    def backward_start(self) -> None:
        if self._cur is not None:
            self._cur.backward_start = self._mark()

    def _grad_done(self, param: torch.Tensor) -> None:
        if self._cur is not None and self._cur.backward_start is not None:
            self._cur.grads_done = self._mark()

    def backward_end(self) -> None:
        if self._cur is not None and self._cur.backward_start is not None:
            self._cur.backward_end = self._mark()

    # -- results -------------------------------------------------------------------------------

    def _since(self, a: Any, b: Any) -> float:
        return a.elapsed_time(b) / 1e3 if self.cuda else b - a

    def step_marks(self) -> list[dict[str, Any]]:
        """Per recorded step, this rank's durations in seconds (after a device synchronize).

        ``step_s``, ``data_s``; ``forward_sync_s`` (DDP's pre-forward collective);
        ``backward_s`` (backward's start to its last gradient); ``comm_wait_s`` (from the last
        bucket's hook call to the moment every bucket's all-reduce is done: what the rank
        waits for after its backward, zero where nothing was left in flight); the two waits
        leave out the training thread's run-queue wait inside them (it is in
        ``run_queue_s``, so nothing is counted twice); ``buckets``:
        ``[ready_s, allreduce_s, launch_s]`` per bucket in DDP's order (ready from backward's
        start; all-reduce from the hook call to its future's completion); ``run_queue_s``: the
        step's run-queue wait outside data fetches (None on CUDA or without schedstat).

        Between the last gradient and the last hook call DDP copies that bucket's gradients
        into it, and after the all-reduce it copies them back: the rank's own work, not
        waiting, so they are in neither ``backward_s`` nor ``comm_wait_s``. Each bucket's
        third figure, ``launch_s``, is the part of its all-reduce the hook spent before issuing
        the collective (dividing, compressing, a planted delay).
        """
        out = []
        for m in self._marks:
            if m.backward_start is None or m.backward_end is None:
                continue  # a step without a synchronised backward (no_sync) has nothing to say
            grads_done = m.grads_done if m.grads_done is not None else m.backward_end
            buckets = sorted(m.buckets, key=lambda b: b[0])
            comm_wait, comm_rq = 0.0, 0.0
            if buckets:
                # DDP calls the hooks in bucket order: the last bucket is the last ready.
                last = buckets[-1]
                final = max(buckets, key=lambda b: self._since(last[1], b[3]))
                comm_wait = max(0.0, self._since(last[1], final[3]))
                if last[4] is not None and final[5] is not None:
                    comm_rq = min(comm_wait, max(0.0, final[5] - last[4]))
            forward = sum(self._since(a, b) for a, b in m.forward)
            rq = None
            if m.rq_start is not None and m.rq_end is not None:
                rq = max(0.0, m.rq_end - m.rq_start - m.rq_data)
            out.append(
                {
                    "step_s": self._since(m.start, m.end),
                    "data_s": sum(self._since(a, b) for a, b in m.data),
                    # Waits without the wait for a core inside them: that is in run_queue_s.
                    "forward_sync_s": max(0.0, forward - min(forward, m.rq_forward)),
                    "backward_s": self._since(m.backward_start, grads_done),
                    "comm_wait_s": comm_wait - comm_rq,
                    "buckets": [
                        [self._since(m.backward_start, r), self._since(r, d), self._since(r, x)]
                        for _, r, x, d, *_ in buckets
                    ],
                    "run_queue_s": rq,
                }
            )
        return out
