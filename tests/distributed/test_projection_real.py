"""The scaling projection held against real processes: fit from N <= 2, predict N = 8.

On 2 shared cores, real compute on 8 ranks would fight for the cores and swamp the
communication the model is about, so the model is the ``synthetic-sleep`` shape (labelled so in
every row): each layer's forward and backward is a fixed sleep, while its parameters produce
real gradients (0.75 MiB in six DDP buckets) that DDP all-reduces through gloo over loopback,
overlapping with the sleeping backward. A real sweep (torchrun per point, the worker's "why"
measurements) runs N = 1, 2, 8; the projection sees only the N = 1 and N = 2 points, and its
prediction at 8 -- four times the largest count it saw -- is compared with what was measured
there. (N = 4 was measured too until the suite outgrew its five minutes: the 4-rank point cost
about 25 s of the test's wall time, and the 8-rank one is the harder extrapolation.)

The checks are stated against the measurement's own interval, so load from the suite's other
tests (which slows a point's steps and widens their spread) widens what is accepted instead of
failing the test: each point's median step has the order-statistic interval [min, max] of its
six measured steps (coverage 1 - 2 / 2^6 = 97%), and the measured efficiency the interval those
give. The prediction must come within 5 points of that interval, and where the measurement
shows more loss for certain than the prediction without its all-reduce, modelling the
all-reduce must move the prediction toward the measurement.
(The earlier check, "nearer the measurement than a naive 100%", failed once when the measured
loss was 3.2 pp, within the noise: it asked the model to resolve what the measurement could not.)
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from harness import projection, store
from harness.projection.inputs import rank_lists

pytestmark = [pytest.mark.slow, pytest.mark.scenario]

# Sleeps of about a second per step dwarf the few ms of real CPU work per rank (Python,
# optimizer, gloo), which 8 ranks on 2 shared cores would otherwise turn into contention: with
# half a second, the suite's other tests running beside it once cost the measured N = 8 point
# 5 pp the projection cannot know about.
MODEL = "synthetic-sleep:layers=4,layer_mb=0.125,embed_mb=0.25,fwd_ms=80,bwd_ms=160"
TOLERANCE_PP = 5.0

SWEEP = f"""
name = "sleep-projection"
description = "synthetic-sleep shape (not DistilBERT): sleeping compute, real gloo all-reduce"
scaling = "weak"
repeats = 1
timeout_s = 300
[run]
device = "cpu"
backend = "gloo"
model = "{MODEL}"
data = "synthetic:512"
max_length = 16
seq_policy = "fixed"
precision = "fp32"
warmup_steps = 2
measured_steps = 6
[run.ddp]
bucket_cap_mb = 0.1
[axes]
gpus_per_node = [1, 2, 8]
per_device_batch = [4]
"""


def _only(sweep_dir: Path, sizes: set[int], dest: Path) -> Path:
    """A copy of the sweep folder whose ledger holds only the points with these GPU counts."""
    dest.mkdir(parents=True)
    rows = [r for r in store.read_ledger(sweep_dir) if r["world_size"] in sizes]
    store.ledger_path(dest).write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copytree(sweep_dir / "points", dest / "points")
    return dest


@pytest.mark.slow(seconds=100)
def test_projection_from_two_gpus_predicts_eight(tmp_path, monkeypatch):
    from harness import sweep as sweeps
    from harness.spec import resolve_sweep

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "sleep.toml"
    path.write_text(textwrap.dedent(SWEEP))
    spec = resolve_sweep(str(path), gpu_count=0)
    result = sweeps.run_sweep(
        spec, sweeps.SweepOptions(results=tmp_path / "results", progress=False), echo=print
    )
    assert result.statuses == {"ok": 3}, result.statuses
    full = result.sweep_dir

    # The prediction sees only N <= 2; the measured N = 8 comes from the full sweep.
    fit = _only(full, {1, 2}, tmp_path / "fit")
    predicted = projection.run_project(
        fit, gpus="8", gpus_per_node=8, fabric=None, busbw_gbps=None, pure=None
    )
    pred = {r["gpus"]: r for r in predicted.rows}
    print(projection.render(predicted, "text"))
    info = predicted.curves[0]
    assert all(r["model"] == MODEL for r in predicted.rows)
    assert len(info["bucket_bytes"]) >= 3  # DDP's real buckets, recorded by the worker
    base = _median_interval(_synced_steps(full, 1))
    for n in (8,):
        p = pred[n]["efficiency"]
        assert pred[n]["fed_by_gpus"] == 2  # fitted from N <= 2 only
        step = _median_interval(_synced_steps(full, n))
        m, lo, hi = base[0] / step[0], base[1] / step[2], base[2] / step[1]
        gap = max(lo - p, p - hi, 0.0)
        print(
            f"N = {n}: predicted {100 * p:.1f}% (from N <= 2), measured {100 * m:.1f}% "
            f"[{100 * lo:.1f}, {100 * hi:.1f}], {100 * gap:.1f} pp outside that interval"
        )
        assert gap * 100 <= TOLERANCE_PP, (n, p, m, lo, hi)
        # The model must see the all-reduce: where the measurement shows, for certain, more
        # loss than the prediction without its exposed all-reduce (p0), adding it must move
        # the prediction toward the measurement. (A projection that ignored the all-reduce
        # would fail this; the model's own shortfall on the rest is what the 5 pp bound is for.)
        step, exposed = pred[n]["step_time_ms"], pred[n]["exposed_comm_ms"]
        p0 = p * step / (step - exposed)
        if hi < p0:
            assert exposed > 0 and abs(p - m) < abs(p0 - m), (n, p, p0, m, hi)


def _synced_steps(sweep_dir: Path, n: int) -> list[float]:
    """The measured window's synchronised steps at N: per step, the slowest rank's."""
    rows = [r for r in store.read_ledger(sweep_dir) if r["world_size"] == n]
    record = json.loads((sweep_dir / rows[0]["point_dir"] / "record.json").read_text())
    ranks = rank_lists(record, "step_times_s")
    return [max(step) for step in zip(*ranks, strict=False)]


def _median_interval(steps: list[float]) -> tuple[float, float, float]:
    """The median step and the order-statistic interval [min, max] of the measured steps: it
    holds the true median with probability 1 - 2 / 2^n (97% for six steps)."""
    ordered = sorted(steps)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return median, ordered[0], ordered[-1]
