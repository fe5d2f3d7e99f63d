"""The step probe (distrinews/timing.py) on a real DDP in this process (gloo, a group of one):
bucket readiness in DDP's order, the in-step all-reduce from the hook's future, a planted delay
seen where it was planted, the window left without a hook, and the run-queue clock."""

from __future__ import annotations

import time

import pytest
import torch

from distrinews.contention import RunQueueClock, steal_share
from distrinews.dataset import AGNewsDataset, LengthGroupedBatchSampler, synthetic_agnews
from distrinews.distributed import process_group
from distrinews.explain import ddp_bucket_bytes
from distrinews.runspec import DDPKnobs
from distrinews.sleepnet import SleepNet
from distrinews.synthetic import SleepShape
from distrinews.train import BatchStream, Trainer, wrap_ddp

CPU = torch.device("cpu")
#: Four 1 MiB layers and a 1 MiB embedding in 1 MiB buckets: five buckets or more, in turn.
SHAPE = SleepShape(layers=4, layer_mb=1.0, embed_mb=1.0, fwd_ms=2.0, bwd_ms=6.0)


def _trainer(hook=None) -> Trainer:
    model = SleepNet(SHAPE)
    ddp = wrap_ddp(model, DDPKnobs(bucket_cap_mb=1.0), CPU)
    if hook is not None:
        ddp.step_probe.set_comm_hook(hook)
    return Trainer(model=ddp, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                   scaler=None, precision="fp32", device=CPU)  # fmt: skip


def _stream() -> BatchStream:
    ds = AGNewsDataset.from_data(synthetic_agnews(64, seed=0), max_length=16)
    return BatchStream(ds, LengthGroupedBatchSampler(ds.lengths, 4), pad_to=16, device=CPU)


def _probed(trainer: Trainer, stream: BatchStream, steps: int = 3) -> list[dict]:
    probe = trainer.probe
    probe.start()
    for _ in range(steps):
        trainer.step(stream, probe)
    probe.stop()
    return probe.step_marks()


def test_buckets_become_ready_in_ddps_order_inside_backward():
    with process_group(device="cpu", backend="gloo"):
        trainer, stream = _trainer(), _stream()
        for _ in range(2):  # DDP rebuilds its buckets in gradient-ready order after step 1
            trainer.step(stream)
        assert not trainer.probe._registered  # the window runs DDP's own all-reduce
        marks = _probed(trainer, stream)
        buckets = ddp_bucket_bytes(trainer)  # DDP's own account of its rebuilt buckets
    assert len(marks) == 3 and len(buckets) >= 5
    for m in marks:
        ready = [b[0] for b in m["buckets"]]
        assert len(ready) == len(buckets) and ready == sorted(ready), ready
        # Backward sleeps 6 ms per layer (0.6 ms for the embedding): 24.6 ms at least, and
        # the first bucket (the last layer's) is ready after its layer's 6 ms.
        assert m["backward_s"] >= 0.0246 and ready[0] >= 0.006
        assert ready[-1] >= m["backward_s"]  # the last bucket: after the last gradient
        assert all(b[1] > 0 for b in m["buckets"])
        assert m["step_s"] >= m["backward_s"] + 0.010  # and forward's 5 × 2 ms (+ 0.2)
        assert 0 <= m["comm_wait_s"] < m["step_s"]
        assert m["run_queue_s"] is not None and 0 <= m["run_queue_s"] < m["step_s"]


def test_a_delay_planted_in_the_hook_is_in_that_buckets_all_reduce_and_the_wait():
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    def late_last(state, bucket):
        if bucket.is_last():
            time.sleep(0.030)
        return default_hooks.allreduce_hook(state, bucket)

    with process_group(device="cpu", backend="gloo"):
        trainer, stream = _trainer(late_last), _stream()
        for _ in range(2):
            trainer.step(stream)
        marks = _probed(trainer, stream)
        grads = [p.grad for p in trainer.model.module.parameters()]
    for m in marks:
        *early, last = m["buckets"]
        assert last[1] >= 0.030 and all(b[1] < 0.030 for b in early), m["buckets"]
        assert last[2] >= 0.030  # spent in the hook, before the collective was issued
        assert m["comm_wait_s"] >= 0.030
    # Through the probe, DDP still averages the gradients (a group of one: unchanged).
    assert all(g is None or torch.allclose(g, torch.full_like(g, 1e-6)) for g in grads[1:-1])


def test_steps_outside_start_and_stop_leave_no_marks():
    with process_group(device="cpu", backend="gloo"):
        trainer, stream = _trainer(), _stream()
        trainer.step(stream)
        probe = trainer.probe
        _probed(trainer, stream, steps=2)
        trainer.step(stream, probe)  # after stop(): timed like the window's timer, no marks
    assert len(probe.step_marks()) == 2


def test_run_queue_clock_reads_this_threads_wait():
    clock = RunQueueClock()
    if not clock.available:
        pytest.skip("no /proc/thread-self/schedstat here")
    a = clock.read()
    time.sleep(0.01)
    b = clock.read()
    assert 0 <= a <= b  # a running total: never decreases
    clock.close()
    assert clock.read() is None


def test_steal_share_of_two_readings():
    before = {"user": 100, "system": 50, "idle": 800, "steal": 50}
    after = {"user": 200, "system": 100, "idle": 1500, "steal": 200}
    assert steal_share(before, after) == pytest.approx(150 / 1000)
    assert steal_share(after, after) is None and steal_share(None, after) is None


@pytest.mark.slow
def test_busy_cores_make_this_thread_wait_for_a_core_and_end_when_asked():
    from distrinews.faults import start_busy_cores, stop_busy_cores, usable_core_ids

    clock = RunQueueClock()
    if not clock.available:
        pytest.skip("no /proc/thread-self/schedstat here")
    core = min(usable_core_ids())
    import os

    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})  # this thread and the busy process share one core
    try:
        procs = start_busy_cores([core], busy_s=0.010)
        time.sleep(0.2)  # let it start spinning
        before, t0 = clock.read(), time.perf_counter()
        while time.perf_counter() - t0 < 0.3:  # 300 ms of work for this thread
            pass
        waited = clock.read() - before
    finally:
        stop_busy_cores()
        os.sched_setaffinity(0, mask)
    # Sharing a core with a spinning process, the thread waits for it a good part of the time.
    assert waited > 0.05, waited
    assert all(p.poll() is not None for p in procs)


def test_a_busy_synthetic_layer_burns_its_time_as_cpu_a_sleeping_one_does_not():
    from distrinews.errors import UserError
    from distrinews.synthetic import parse_shape

    x = torch.zeros(2, 4, dtype=torch.long)
    used = {}
    for busy in (0, 1):
        net = SleepNet.from_spec(
            f"synthetic-sleep:layers=2,layer_mb=0.01,embed_mb=0.01,fwd_ms=5,bwd_ms=10,busy={busy}"
        )
        cpu0 = time.thread_time()
        net(x, x).sum().backward()
        used[busy] = time.thread_time() - cpu0
    # 2 x (5 + 10) ms + a tenth of a layer's for the embedding: 31.5 ms of CPU when busy
    assert used[1] >= 0.0315 and used[0] < 0.015, used
    with pytest.raises(UserError, match="busy = 2"):
        parse_shape("synthetic-sleep:busy=2")
