"""Sweep folders whose measurements come from a *planted* scaling model, for projection tests.

The rows carry the shared "why" fields (compute_step_time_s, allreduce_busbw_gbps,
exposed_comm_s, overlap_share, grad_bytes, bucket_count) and record.json the per-step times and
DDP's buckets, exactly as the worker writes them (with the why engineer's readiness fields —
``buckets[i].ready_s``, ``buckets[i].step_allreduce_s``, ``metrics.backward_time_s`` — when
``Plant.readiness`` asks for them). Every measured figure at N > 1 is what the projection model
gives for known inputs (compute step, link, hide window), so a projection from the folder must
recover them: that is the planted cause. These tests check the fitting; tests whose
measurements do not come from the model are the real-process runs and the published tables.

A ``cpu`` plant is a gloo sweep (the projection uses the measured link: a ring of the planted
bus bandwidth); a ``cuda`` plant an NCCL sweep on ``Plant.fabric`` (the measured bus bandwidth
is NCCL's model times ``Plant.efficiency``), with SM contention as a GPU has it: backward slows
beside each all-reduce by ``Plant.sm_contention`` x NCCL's CTAs / SMs plus
``Plant.hbm_contention`` x its bus bandwidth / HBM bandwidth, which is inside the
measured step, exposure and backward time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from distrinews.runspec import DDPKnobs, RunSpec
from harness import store
from harness.projection import fabrics, nccl
from harness.projection.model import (
    MeasuredLink,
    NcclLink,
    StepModel,
    predict_steps,
    ready_embedding_last,
)

MIB = 1024 * 1024


@dataclass(frozen=True)
class Plant:
    """The truth a fabricated sweep is measured from."""

    compute_s: float = 0.100
    busbw_gbps: float = 1.0
    """cpu plants: the ring's bus bandwidth (latency 0)."""
    efficiency: float = 0.5
    """cuda plants: achieved / NCCL-modelled bus bandwidth."""
    fabric: str = "dgx-a100"
    hide_share: float = 0.25
    buckets: tuple[float, ...] = (1 * MIB, 25 * MIB, 25 * MIB, 40 * MIB)
    ready: tuple[float, ...] | None = None
    """Each bucket's readiness (share of backward); None: the sweep rule (embedding last)."""
    readiness: bool = False
    """Write the worker's readiness fields (ready_s, step_allreduce_s, backward_time_s)."""
    alpha_s: float = 0.0
    """cpu plants: the ring's latency per hop. Above 0 the worker's two ceilings are written
    as it writes them: each bucket alone (``buckets[i].allreduce_time_s``), the whole gradient
    in one message (``allreduce_time_s``, its bus bandwidth from it) and the buckets' sum
    (``allreduce_bucketed_time_s``)."""
    cpu_cores: int | None = None
    """The host's cores written to the ledger (``cpu_cores``); None writes none."""
    world_sizes: tuple[int, ...] = (1, 2, 4, 8)
    repeats: int = 3
    per_device_batch: int = 32
    noise_cv: float = 0.0
    """Relative noise on the measured step and bandwidth per repeat (0: exact)."""
    model: str = "base"
    seed: int = 0
    overhead_s: float = 0.0
    """Per-step synchronisation cost at N > 1 beyond the all-reduce (planted, recoverable)."""
    device: str = "cpu"
    sm_contention: float = fabrics.SM_CONTENTION.nominal
    """cuda plants: the share of NCCL's SM share backward loses (cpu plants: none)."""
    hbm_contention: float = fabrics.HBM_CONTENTION.nominal
    """cuda plants: the HBM share backward loses per bus bandwidth / HBM bandwidth."""
    scaling: str = "weak"
    """strong: the global batch stays per_device_batch; each of N GPUs takes 1/N of it, and
    the compute step shrinks with it (no part of it fixed)."""


def planted_ready(plant: Plant) -> np.ndarray:
    if plant.ready is not None:
        return np.asarray(plant.ready, dtype=float)
    return ready_embedding_last(plant.buckets)


def planted_link(plant: Plant) -> NcclLink | MeasuredLink:
    if plant.device == "cpu":
        return MeasuredLink(plant.alpha_s, plant.busbw_gbps, 8)
    fab = fabrics.resolve_fabric(plant.fabric)
    eff = {k: np.array([plant.efficiency]) for k in ("intra", "inter", "nvls")}
    return NcclLink(fab, fab.gpus_per_node, eff)


def planted_busbw(plant: Plant, n: int) -> float:
    """The bus bandwidth the worker would measure for the whole gradient at N."""
    if plant.device == "cpu" or n <= 1:
        if n <= 1 or plant.alpha_s <= 0:
            return plant.busbw_gbps
        whole = float(sum(plant.buckets))
        return 2 * (n - 1) / n * whole / _ring_s(plant, n, whole) / 1e9
    fab = fabrics.resolve_fabric(plant.fabric)
    grad = np.array([float(sum(plant.buckets))])
    plan = nccl.allreduce_plan(fab.system(ranks=n), n, grad)
    return float(plan.busbw_gbps(grad, n)[0]) * plant.efficiency


def _ring_s(plant: Plant, n: int, size: float) -> float:
    """A cpu plant's ring all-reduce of ``size`` bytes at N (its latency and bandwidth)."""
    return 2 * (n - 1) * plant.alpha_s + 2 * (n - 1) / n * size / (plant.busbw_gbps * 1e9)


def planted_steps(plant: Plant, gpus) -> dict[str, np.ndarray]:
    gpu = None if plant.device == "cpu" else fabrics.resolve_fabric(plant.fabric)
    model = StepModel(
        compute_s=np.array([plant.compute_s]),
        bucket_bytes=plant.buckets,
        ready=planted_ready(plant),
        hide_share=np.array([plant.hide_share]),
        jitter=np.array([0.0]),
        link=planted_link(plant),
        host_s=np.array([plant.overhead_s]),
        scaling=plant.scaling,
        sm_count=0 if gpu is None else gpu.sm_count()[0],
        sm_contention=np.array([plant.sm_contention]),
        hbm_gbps=0.0 if gpu is None else gpu.hbm_gbps()[0],
        hbm_contention=np.array([plant.hbm_contention]),
    )
    pred = predict_steps(model, list(gpus))
    return {
        "step_s": pred.step_s[0],
        "exposed_s": pred.exposed_comm_s[0],
        "allreduce_s": pred.allreduce_s[0],
        "contention_s": pred.contention_s[0],
    }


def write_planted_sweep(root: Path, plant: Plant) -> Path:
    """A results folder (ledger + record.json per point) measured from ``plant``."""
    rng = np.random.default_rng(plant.seed)
    truth = planted_steps(plant, plant.world_sizes)
    t0 = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    grad_bytes = int(sum(plant.buckets))
    ready = planted_ready(plant)
    for i, n in enumerate(plant.world_sizes):
        for repeat in range(plant.repeats):
            strong = plant.scaling == "strong"
            batch = plant.per_device_batch // n if strong else plant.per_device_batch
            spec = RunSpec(
                nproc_per_node=n,
                device=plant.device,
                model=plant.model,
                per_device_batch=batch,
                ddp=DDPKnobs(bucket_cap_mb=25.0),
                repeat=repeat,
            )
            noise = 1.0 + plant.noise_cv * rng.standard_normal()
            step = float(truth["step_s"][i]) * noise
            compute = plant.compute_s * noise / (n if strong else 1)
            steps = (compute * (1 + 0.002 * rng.standard_normal(20))).tolist()
            busbw = planted_busbw(plant, n) * (1.0 + plant.noise_cv * rng.standard_normal())
            allreduce = float(truth["allreduce_s"][i])
            # The worker's exposed_comm_s is the synchronised step minus the compute-only step:
            # it holds any per-step synchronisation cost beyond the all-reduce too.
            exposed = float(truth["exposed_s"][i]) + (plant.overhead_s if n > 1 else 0.0)
            metrics = {
                "samples_per_s": n * batch / step,
                "step_time_s_p50": step,
                "compute_step_time_s": compute,
                "grad_bytes": grad_bytes,
                "bucket_count": len(plant.buckets),
            }
            if plant.cpu_cores is not None:
                metrics["cpu_cores"] = plant.cpu_cores
            # The worker times backward beside the all-reduces: SM contention is inside it.
            backward = plant.hide_share * compute + float(truth["contention_s"][i])
            if plant.readiness:
                metrics["backward_time_s"] = backward
            if n > 1:
                # With a latency the whole gradient in one message is faster than its buckets
                # one by one (the worker's two ceilings); without, the two are the same.
                latency = plant.alpha_s > 0
                metrics.update(
                    {
                        "allreduce_time_s": (
                            _ring_s(plant, n, float(grad_bytes)) if latency else allreduce
                        ),
                        "allreduce_busbw_gbps": busbw,
                        "allreduce_algbw_gbps": busbw * n / (2 * (n - 1)),
                        "exposed_comm_s": exposed,
                        "overlap_share": 1 - exposed / allreduce,
                    }
                )
                if latency:
                    metrics["allreduce_bucketed_time_s"] = allreduce
            buckets = []
            for k, b in enumerate(plant.buckets):
                alone = _ring_s(plant, n, float(b)) if plant.alpha_s > 0 and n > 1 else None
                entry = {"bytes": int(b), "allreduce_time_s": alone}
                if plant.readiness:
                    entry["ready_s"] = float(ready[k]) * backward
                    entry["step_allreduce_s"] = None
                buckets.append(entry)
            record = {
                "metrics": metrics,
                "spec": spec.to_dict(),
                "step_times_s": [[step] * 20 for _ in range(n)],
                "compute_step_times_s": [steps for _ in range(n)],
                "buckets": buckets,
                "grad_dtype": "float32",
            }
            rel = f"points/{spec.run_id}"
            store.atomic_write_json(root / rel / "record.json", record)
            row = store.make_row(
                sweep=root.name,
                spec=spec,
                status="ok",
                reason=None,
                started_at=t0,
                finished_at=t0,
                duration_s=10.0,
                scaling_mode=plant.scaling,
                point_dir=rel,
                record=record,
                telemetry={},
                env_fingerprint=None,
            )
            store.append_row(root, row)
    return root
