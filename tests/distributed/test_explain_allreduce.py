"""The all-reduce ceiling (distrinews.explain.allreduce_time_s) against an independent
``dist.all_reduce`` timing of the same bytes, on 2 real gloo ranks (spawned, file:// rendezvous).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distrinews import explain
from distrinews.distributed import process_group

# A measurement: two timings of the same bytes on a shared box, so it runs with the scenarios,
# apart from the README's test command. A load burst can land on either timing: with five rounds
# the median of the rounds' ratios read 0.69 and 1.69 beside other tests (0.87-1.04 beside
# fewer), and the fastest rounds disagree by 15-35% even on a quiet box (the ceiling's median of
# its own repeats against the independent one's). So: nine rounds, the ratio of the two medians,
# held within a factor of 1.5 -- a ceiling that timed the wrong thing (a whole window, the
# buffer's allocation, ms as s) is off by more. And it takes the box to itself among the
# scenarios (box_alone): beside the two other scenario workers a clean CI run read 1.52 (6.98
# against 4.59 ms), the load of the others, not the ceiling.
pytestmark = [pytest.mark.slow, pytest.mark.scenario, pytest.mark.box_alone]

#: Big enough that one all-reduce takes milliseconds on gloo: timer noise is small next to it.
NBYTES = 8 * 2**20
#: Rounds of each timing: enough that a load burst moves neither median far.
ROUNDS = 9


def _independent(nbytes: int, reps: int) -> float:
    buf = torch.zeros(nbytes // 4, dtype=torch.float32)
    for _ in range(2):
        dist.all_reduce(buf)
    times = []
    for _ in range(reps):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rank(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    with process_group(
        device="cpu", backend="gloo", rank=rank, world_size=2, init_method=init
    ) as ctx:
        # Many short rounds, alternating which goes first, so that neither always runs in the
        # other's wake.
        ours, theirs = [], []
        for i in range(ROUNDS):
            if i % 2:
                theirs.append(_independent(NBYTES, reps=10))
                ours.append(explain.allreduce_time_s(NBYTES, torch.float32, ctx))
            else:
                ours.append(explain.allreduce_time_s(NBYTES, torch.float32, ctx))
                theirs.append(_independent(NBYTES, reps=10))
        if rank == 0:
            Path(out).write_text(json.dumps({"ours": ours, "theirs": theirs}))


def test_allreduce_ceiling_agrees_with_an_independent_timing(tmp_path):
    out = tmp_path / "times.json"
    mp.spawn(_rank, args=(f"file://{tmp_path / 'rdzv'}", str(out)), nprocs=2, join=True)
    times = json.loads(out.read_text())
    ours, theirs = statistics.median(times["ours"]), statistics.median(times["theirs"])
    ratio = ours / theirs
    print(
        f"\nall-reduce of {NBYTES} bytes on 2 gloo ranks, median of {ROUNDS} rounds: explain "
        f"{ours * 1e3:.2f} ms, independent dist.all_reduce {theirs * 1e3:.2f} ms, ratio {ratio:.3f}"
    )
    assert 1 / 1.5 <= ratio <= 1.5, ratio
