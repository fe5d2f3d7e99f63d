"""Fabricate realistic ``results/<sweep>/`` folders in the contracts.md format, for tests.

The throughput model is simple but shaped like a real DDP sweep on a GPU node: per-device
throughput saturates with batch size, depends on precision and compile, and scaling efficiency
falls with the log of the world size (more under strong scaling, where the per-device batch
shrinks). Repeats carry log-normal noise with a chosen coefficient of variation. Everything is
seeded, so a given call always writes the same bytes (apart from nothing: no wall-clock reads).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from distrinews.layout import (
    ENV_JSON,
    LEDGER_NAME,
    LOGS_DIR,
    RECORD_JSON,
    SWEEP_JSON,
    TELEMETRY_JSONL,
)
from distrinews.metrics import RunMetrics
from distrinews.runspec import DDPKnobs, RunSpec
from harness import energy, store, telemetry

#: Per-device samples/s of DistilBERT-base at a large batch, by precision (H100-like shape).
PRECISION_RATE = {"fp32": 990.0, "tf32": 1710.0, "fp16": 2970.0, "bf16": 3060.0}
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ENV_FIELDS = {
    "torch": "2.13.0+cu128",
    "cuda": "12.8",
    "nccl": "2.27.3",
    "driver": "570.124.06",
    "gpu_names": ["NVIDIA H100 80GB HBM3"] * 8,
    "gpu_count": 8,
}


@dataclass(frozen=True, kw_only=True)
class FakeSweep:
    """What to fabricate. The grid is the product of the tuples."""

    name: str = "fake-h100x8"
    world_sizes: tuple[int, ...] = (1, 2, 4, 8)
    batches: tuple[int, ...] = (16, 32, 64)
    """Per-device batch under weak scaling, global batch under strong scaling."""
    precisions: tuple[str, ...] = ("fp32", "bf16")
    compiles: tuple[bool, ...] = (False,)
    bucket_caps: tuple[float, ...] = (25.0,)
    nccl_envs: tuple[str, ...] = ("",)
    scaling_mode: str = "weak"
    repeats: int = 3
    cv: float = 0.02
    """Coefficient of variation of the repeat noise."""
    seed: int = 0
    throughput_scale: float = 1.0
    """Multiplies every throughput: plant a slowdown with 0.8."""
    failures: bool = True
    """Plant an OOM (fp32, largest batch, largest world size), a timeout and a crash."""
    telemetry: bool = True
    """Write telemetry.jsonl for the points at the largest world size."""
    records: bool = True
    """Write record.json (with per-rank step times) for every ok point."""
    env: dict[str, Any] = field(default_factory=dict)
    """Overrides of the fingerprint fields (e.g. {"driver": "580.1"})."""
    side_files_limit: int | None = None
    """Write record.json/telemetry.jsonl for at most this many points (big benchmark sweeps)."""


def efficiency(n: int, mode: str, per_device_batch: int) -> float:
    """Model efficiency: log falloff, worse for small per-device batches (less overlap)."""
    loss = 0.035 if mode == "weak" else 0.05 + 0.4 / per_device_batch
    return 1.0 / (1.0 + loss * math.log2(n))


def fingerprint(fields: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def fake_rows(spec: FakeSweep) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ledger rows and a side table: the sweep's env.json and, per point that gets side
    files, its record.json body and telemetry.jsonl samples.

    Rows are built the way the harness builds them, by ``harness.store.make_row`` from a real
    RunSpec, the point's record (metrics through ``distrinews.metrics.RunMetrics``, per-rank
    step times) and its telemetry summary, so a schema change reaches these tests too.
    """
    rng = np.random.default_rng(spec.seed)
    side_rng = np.random.default_rng(spec.seed + 1000)
    fields = {**ENV_FIELDS, **spec.env}
    fp = fingerprint(fields)
    sigma = math.sqrt(math.log1p(spec.cv**2))
    rows: list[dict[str, Any]] = []
    extras: dict[str, Any] = {}
    clock = T0
    largest = max(spec.world_sizes)
    budget = math.inf if spec.side_files_limit is None else spec.side_files_limit
    grid = itertools.product(
        spec.world_sizes,
        spec.batches,
        spec.precisions,
        spec.compiles,
        spec.bucket_caps,
        spec.nccl_envs,
    )
    for n, batch, precision, compiled, bucket, nccl in grid:
        if spec.scaling_mode == "strong":
            if batch % n:
                continue
            per_device = batch // n
        else:
            per_device = batch
        nccl_pairs = tuple(tuple(kv.split("=", 1)) for kv in nccl.split(",") if kv)
        for repeat in range(spec.repeats):
            run = RunSpec(
                nproc_per_node=n,
                device="cuda",
                per_device_batch=per_device,
                precision=precision,
                compile=compiled,
                ddp=DDPKnobs(bucket_cap_mb=bucket),
                nccl_env=nccl_pairs,
                repeat=repeat,
            )
            duration = 40.0 + 3 * n
            started = clock
            clock += timedelta(seconds=duration + 2)
            window = (started.timestamp() + 5, started.timestamp() + duration)
            status, reason = _planted_failure(spec, n, batch, precision, repeat)
            record = None
            summary = {
                **telemetry.window_columns([], None, available=False),
                **energy.unavailable("no NVML in a fabricated sweep"),
            }
            if status == "ok":
                rate = (
                    PRECISION_RATE[precision]
                    * per_device
                    / (per_device + 8)
                    * (1.15 if compiled else 1.0)
                    * (1.0 + 0.02 * math.log2(bucket / 25.0))
                )
                x = (
                    rate
                    * n
                    * efficiency(n, spec.scaling_mode, per_device)
                    * spec.throughput_scale
                    * float(rng.lognormal(-(sigma**2) / 2, sigma))
                )
                metrics, spread = _metrics(run, x, precision, rng)
                record = {
                    "schema_version": 1,
                    "run_id": run.run_id,
                    "config_key": run.config_key,
                    "metrics": metrics.to_record(),
                    "step_times_s": _step_times(run, metrics, spread, side_rng),
                    "measured_window": {"start_unix": window[0], "end_unix": window[1]},
                    "warnings": [],
                }
                point: dict[str, Any] = {}
                if budget > 0:
                    budget -= 1
                    if spec.records:
                        point["record"] = record
                    if spec.telemetry and n == largest:
                        samples = _telemetry_samples(run, metrics, window, side_rng)
                        point["telemetry"] = samples
                        summary = {**summary, **_telemetry_summary(samples)}
                extras[run.run_id] = point
            rows.append(
                store.make_row(
                    sweep=spec.name,
                    spec=run,
                    status=status,
                    reason=reason,
                    started_at=_iso(started),
                    finished_at=_iso(started + timedelta(seconds=duration)),
                    duration_s=duration,
                    scaling_mode=spec.scaling_mode,
                    point_dir=f"points/{run.run_id}",
                    record=record,
                    telemetry=summary,
                    env_fingerprint=fp,
                )
            )
    env = {
        "fingerprint": fp,
        "fingerprint_fields": fields,
        "hostname": "gpu-node-017",
        "python": "3.12.3",
        "git_sha": "3f2c1e0",
        "git_dirty": False,
        "topology": "GPU0\tGPU1\nGPU0\t X \tNV18\nGPU1\tNV18\t X",
        "gpus": [
            {"index": i, "uuid": f"GPU-{i:08x}", "name": name}
            for i, name in enumerate(fields["gpu_names"])
        ],
    }
    return rows, {"env": env, "points": extras}


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _planted_failure(spec, n, batch, precision, repeat) -> tuple[str, str | None]:
    if not spec.failures:
        return "ok", None
    if n == max(spec.world_sizes) and batch == max(spec.batches) and precision == "fp32":
        return "oom", "CUDA out of memory on rank 3 (tried to allocate 1.50 GiB)"
    if n == max(spec.world_sizes) and batch == min(spec.batches) and repeat == 1:
        return "timeout", "no progress for 600 s (killed the process group)"
    if n == 2 and batch == min(spec.batches) and repeat == 2:
        return "crashed", "rank 1 exited with code -11 (SIGSEGV)"
    return "ok", None


def _metrics(run: RunSpec, x: float, precision: str, rng) -> tuple[RunMetrics, float]:
    """The point's metrics at throughput ``x``, and the rank spread to plant in its step times."""
    n, per_device = run.world_size, run.per_device_batch
    tokens = 128
    step = run.global_batch / x
    flops_per_step = (6 * 42_467_328 + 12 * 6 * 768 * tokens) * tokens * run.global_batch
    peak = {"fp32": 67e12, "tf32": 494.7e12, "fp16": 989.4e12, "bf16": 989.4e12}[precision]
    real_share = 0.42
    metrics = RunMetrics(
        samples_per_s=x,
        samples_per_s_per_device=x / n,
        real_tokens_per_s=x * tokens * real_share,
        padded_tokens_per_s=x * tokens,
        step_time_s_p50=step,
        step_time_s_p90=step * 1.04,
        step_time_s_p99=step * 1.09,
        step_time_s_mean=step * 1.01,
        data_wait_share=0.01,
        data_wait_s=0.01 * step,
        mem_peak_gib=2.1 + 0.19 * per_device * (2.0 if precision == "fp32" else 1.0),
        mfu=flops_per_step / step / (peak * n) * real_share,
        hfu=flops_per_step / step / (peak * n),
        flops_per_step=flops_per_step,
        measured_steps=run.measured_steps,
        measured_time_s=step * run.measured_steps,
        loss_first=1.39,
        loss_last=1.38,
    )
    spread = 1.0 + float(rng.uniform(0.0, 0.02)) * math.log2(2 * n)
    # What explains the efficiency: the step minus a slice per cause that grows with N
    # (null at one rank, as the worker writes them).
    return metrics.with_explain(_explain(step, n)), spread


def _step_times(run: RunSpec, metrics: RunMetrics, spread: float, rng) -> list[list[float]]:
    """Per rank, per measured step: the median step, the last rank slower by ``spread``."""
    n = run.world_size
    jitter = rng.lognormal(0.0, 0.01, size=(n, run.measured_steps))
    slow = [spread if r == n - 1 and n > 1 else 1.0 for r in range(n)]
    return [[float(metrics.step_time_s_p50 * slow[r] * j) for j in jitter[r]] for r in range(n)]


def _explain(step: float, n: int) -> dict[str, Any]:
    """What the worker's explain phase writes, for a step of ``step`` seconds at ``n`` ranks:
    the parts of the instrumented steps add up to 98.8% of the window's step (a small
    remainder), and every part stays within the bounds the report checks."""
    grad_bytes = 66_955_010 * 4
    data = 0.01 * step  # the window's data wait (metrics above)
    rounds = math.log2(n) if n > 1 else 0.0
    exposed = (0.02 * rounds if n > 1 else 0.002) * step
    straggler, contention = 0.005 * rounds * step, 0.002 * rounds * step
    run_queue = 0.001 * step
    work = 0.988 * step - data - exposed - straggler - contention - run_queue
    out = {
        "compute_step_time_s": 0.98 * work,
        "step_work_s": work,
        "run_queue_wait_s": run_queue,
        "exposed_comm_s": exposed,
        "straggler_wait_s": straggler,
        "step_work_s_rank_spread": 1 + straggler / work,
        "step_time_instrumented_s": 0.988 * step,
        "backward_time_s": 0.6 * step,
        "allreduce_step_time_s": 1.5 * (exposed + contention),
        "grad_bytes": grad_bytes,
        "bucket_count": 11,
    }
    if n == 1:
        return out
    allreduce = 3 * exposed
    algbw = grad_bytes / allreduce / 1e9
    return {
        **out,
        "comm_contention_s": contention,
        "allreduce_time_s": allreduce,
        "allreduce_bucketed_time_s": 1.1 * allreduce,
        "allreduce_algbw_gbps": algbw,
        "allreduce_busbw_gbps": algbw * 2 * (n - 1) / n,
        "overlap_share": 1 - exposed / (1.1 * allreduce),
    }


def write_sweep(root: Path, spec: FakeSweep | None = None) -> Path:
    """Write ``root/<name>/`` (ledger.jsonl, env.json, sweep.json, points/...); return it."""
    spec = spec or FakeSweep()
    rows, side = fake_rows(spec)
    sweep_dir = root / spec.name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    for row in rows:
        point = sweep_dir / row["point_dir"]
        (point / LOGS_DIR).mkdir(parents=True, exist_ok=True)
        extra = side["points"].get(row["run_id"], {})
        if "record" in extra:
            (point / RECORD_JSON).write_text(json.dumps(extra["record"]))
        if "telemetry" in extra:
            lines = "".join(json.dumps(s) + "\n" for s in extra["telemetry"])
            (point / TELEMETRY_JSONL).write_text(lines)
    write_ledger(sweep_dir, rows)
    (sweep_dir / ENV_JSON).write_text(json.dumps(side["env"], indent=2))
    (sweep_dir / SWEEP_JSON).write_text(
        json.dumps({"name": spec.name, "points": sorted({r["run_id"] for r in rows})})
    )
    return sweep_dir


def write_ledger(sweep_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """One JSON object per line, exactly as the harness appends them."""
    path = sweep_dir / LEDGER_NAME
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    return path


def _telemetry_samples(run: RunSpec, metrics: RunMetrics, window, rng) -> list[dict[str, Any]]:
    """NVML-like samples every 0.5 s from 5 s before the window to 1 s after, per GPU."""
    start, end = window
    samples = []
    for t in np.arange(start - 5, end + 1, 0.5):
        for g in range(run.world_size):
            in_window = start <= t <= end
            samples.append(
                {
                    "t_unix": float(t),
                    "gpu_uuid": f"GPU-{g:08x}",
                    "gpu_index": g,
                    "util_pct": float(np.clip(rng.normal(93 if in_window else 8, 2), 0, 100)),
                    "mem_used_gib": float(metrics.mem_peak_gib + 0.6 if in_window else 0.5),
                    "power_w": float(rng.normal(610 if in_window else 90, 15)),
                    "sm_clock_mhz": 1980.0,
                    "temp_c": 61.0,
                    "throttle_reasons": "",
                }
            )
    return samples


def _telemetry_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The ledger's telemetry columns over every sample (as the fabricator always did)."""
    return {
        "telemetry_available": True,
        "gpu_util_pct_mean": float(np.mean([s["util_pct"] for s in samples])),
        "gpu_mem_used_gib_max": float(np.max([s["mem_used_gib"] for s in samples])),
        "gpu_power_w_mean": float(np.mean([s["power_w"] for s in samples])),
        "gpu_sm_clock_mhz_mean": 1980.0,
        "gpu_temp_c_max": 61.0,
        "gpu_throttle_reasons": "",
    }


def thousand_point_sweep(**overrides: Any) -> FakeSweep:
    """1,000 ledger rows: 5 GPU counts x 5 batches x 4 precisions x compile x 5 bucket sizes."""
    base = {
        "name": "fake-1000",
        "world_sizes": (1, 2, 4, 8, 16),
        "batches": (8, 16, 32, 64, 128),
        "precisions": ("fp32", "tf32", "fp16", "bf16"),
        "compiles": (False, True),
        "bucket_caps": (12.5, 25.0, 50.0, 100.0, 200.0),
        "repeats": 1,
        "side_files_limit": 40,
    }
    return FakeSweep(**{**base, **overrides})
