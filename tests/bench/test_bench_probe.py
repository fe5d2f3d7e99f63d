"""What the step probe (distrinews/timing.py) costs a step of the measured window.

With ``explain`` on, the window's steps run through the probe: DDP's all-reduce through a
Python comm hook (PyTorch's allreduce_hook inside the probe's), a mark per bucket, a
post-accumulate-grad hook per parameter, a forward pre-hook and a few run-queue reads. Figure:
the median step with the probe over the median step without, the cpu-smoke shape (tiny
DistilBERT, batch 8, 64 tokens) on one gloo rank in this process, blocks of steps alternating
so both see the same machine. ``pytest tests/bench/test_bench_probe.py --benchmark-enable -s``.
Target: under 3% (the measured window's own noise on the 2-core box is larger).
"""

from __future__ import annotations

import statistics

import torch

from distrinews.dataset import AGNewsDataset, LengthGroupedBatchSampler, synthetic_agnews
from distrinews.distributed import process_group
from distrinews.model import NewsClassifier
from distrinews.runspec import DDPKnobs
from distrinews.timing import StepTimer
from distrinews.train import BatchStream, Trainer, wrap_ddp

CPU = torch.device("cpu")


def _trainer() -> Trainer:
    model = NewsClassifier.from_config("tiny", seed=0)
    return Trainer(model=wrap_ddp(model, DDPKnobs(), CPU),
                   optimizer=torch.optim.AdamW(model.parameters()), scaler=None,
                   precision="fp32", device=CPU)  # fmt: skip


def _median_step(trainer: Trainer, stream: BatchStream, timer: StepTimer, steps: int) -> float:
    for _ in range(steps):
        trainer.step(stream, timer)
    return statistics.median(timer.step_times_s()[-steps:])


def test_bench_probe_cost_per_step(benchmark, bench_report):
    torch.set_num_threads(1)
    blocks, steps = (8, 20) if benchmark.enabled else (1, 3)
    with process_group(device="cpu", backend="gloo"):
        # Two identical trainers, so the plain one never has a comm hook (DDP's built-in
        # all-reduce, as with explain = false) and the other always runs through the probe.
        plain, probed = _trainer(), _trainer()
        ds = AGNewsDataset.from_data(synthetic_agnews(512, seed=0), max_length=64)
        stream = BatchStream(ds, LengthGroupedBatchSampler(ds.lengths, 8), pad_to=64, device=CPU)
        probe = probed.probe
        probe.start()
        for _ in range(3):
            plain.step(stream)
            probed.step(stream)
        probe.stop()
        plain_steps, probed_steps = [], []

        def run() -> None:
            for _ in range(blocks):
                plain_steps.append(_median_step(plain, stream, StepTimer(CPU), steps))
                probe.start()
                probed_steps.append(_median_step(probed, stream, probe, steps))
                probe.stop()

        benchmark.pedantic(run, rounds=1, iterations=1)
        assert not plain.probe._registered and len(probe.step_marks()) == steps
    ratio = statistics.median(p / q for p, q in zip(probed_steps, plain_steps, strict=True))
    bench_report(benchmark, "probe_step_cost_pct", (ratio - 1) * 100, "%")
    print(f"[bench] median step plain {statistics.median(plain_steps) * 1e3:.2f} ms, "
          f"probed {statistics.median(probed_steps) * 1e3:.2f} ms")  # fmt: skip
    if benchmark.enabled:
        assert ratio < 1.03
