"""Sweep folders whose measurements come from a *planted* scaling model, for projection tests.

The rows carry the shared "why" fields (compute_step_time_s, allreduce_busbw_gbps,
exposed_comm_s, overlap_share, grad_bytes, bucket_count) and record.json the per-step times and
DDP's buckets, exactly as the worker writes them. Every measured figure at N > 1 is what the
projection model gives for known inputs (compute step, bus bandwidth, hide window), so a
projection from the folder must recover them: that is the planted cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from distrinews.runspec import DDPKnobs, RunSpec
from harness import store
from harness.projection import Network, StepModel, predict_steps

MIB = 1024 * 1024


@dataclass(frozen=True)
class Plant:
    """The truth a fabricated sweep is measured from."""

    compute_s: float = 0.100
    busbw_gbps: float = 1.0
    hide_share: float = 0.25
    buckets: tuple[float, ...] = (1 * MIB, 25 * MIB, 25 * MIB, 40 * MIB)
    world_sizes: tuple[int, ...] = (1, 2, 4, 8)
    repeats: int = 3
    per_device_batch: int = 32
    noise_cv: float = 0.0
    """Relative noise on the measured step and bandwidth per repeat (0: exact)."""
    model: str = "base"
    seed: int = 0
    overhead_s: float = 0.0
    """Per-step synchronisation cost at N > 1 beyond the all-reduce (planted, recoverable)."""
    # (At 1 GB/s the exposure at N = 2 is above the floor, so it pins the window down.)


def planted_network(plant: Plant) -> Network:
    # A measured bandwidth carries its own latency: the projection uses it the same way.
    return Network(
        gpus_per_node=8,
        intra_busbw_gbps=plant.busbw_gbps,
        inter_busbw_gbps=plant.busbw_gbps,
        intra_ring_step_s=0.0,
        intra_tree_step_s=0.0,
        inter_ring_step_s=0.0,
        inter_tree_step_s=0.0,
        intra_latency=False,
    )


def planted_steps(plant: Plant, gpus) -> dict[str, np.ndarray]:
    model = StepModel(
        compute_s=np.array([plant.compute_s]),
        bucket_bytes=plant.buckets,
        wire_share=1.0,
        collectives_per_bucket=1,
        grad_accum=1,
        hide_share=np.array([plant.hide_share]),
        jitter_share=0.0,
        net=planted_network(plant),
        sync_overhead_s=plant.overhead_s,
    )
    pred = predict_steps(model, list(gpus))
    return {
        "step_s": pred.step_s[0],
        "exposed_s": pred.exposed_comm_s[0],
        "allreduce_s": pred.allreduce_s[0],
    }


def write_planted_sweep(root: Path, plant: Plant) -> Path:
    """A results folder (ledger + record.json per point) measured from ``plant``."""
    rng = np.random.default_rng(plant.seed)
    truth = planted_steps(plant, plant.world_sizes)
    t0 = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    grad_bytes = int(sum(plant.buckets))
    for i, n in enumerate(plant.world_sizes):
        for repeat in range(plant.repeats):
            spec = RunSpec(
                nproc_per_node=n,
                device="cuda",
                model=plant.model,
                per_device_batch=plant.per_device_batch,
                ddp=DDPKnobs(bucket_cap_mb=25.0),
                repeat=repeat,
            )
            noise = 1.0 + plant.noise_cv * rng.standard_normal()
            step = float(truth["step_s"][i]) * noise
            compute = plant.compute_s * noise
            steps = (compute * (1 + 0.002 * rng.standard_normal(20))).tolist()
            busbw = plant.busbw_gbps * (1.0 + plant.noise_cv * rng.standard_normal())
            allreduce = float(truth["allreduce_s"][i])
            exposed = float(truth["exposed_s"][i])
            metrics = {
                "samples_per_s": n * plant.per_device_batch / step,
                "step_time_s_p50": step,
                "compute_step_time_s": compute,
                "grad_bytes": grad_bytes,
                "bucket_count": len(plant.buckets),
            }
            if n > 1:
                metrics.update(
                    {
                        "allreduce_time_s": allreduce,
                        "allreduce_busbw_gbps": busbw,
                        "allreduce_algbw_gbps": busbw * n / (2 * (n - 1)),
                        "exposed_comm_s": exposed,
                        "overlap_share": 1 - exposed / allreduce,
                    }
                )
            record = {
                "metrics": metrics,
                "spec": spec.to_dict(),
                "step_times_s": [[step] * 20 for _ in range(n)],
                "compute_step_times_s": [steps for _ in range(n)],
                "buckets": [{"bytes": int(b), "allreduce_time_s": None} for b in plant.buckets],
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
                scaling_mode="weak",
                point_dir=rel,
                record=record,
                telemetry={},
                env_fingerprint=None,
            )
            store.append_row(root, row)
    return root
