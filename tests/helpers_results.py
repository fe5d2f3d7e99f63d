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

from distrinews.runspec import DDPKnobs, RunSpec

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
    """The ledger rows (contract format) and a side table of per-point extras."""
    rng = np.random.default_rng(spec.seed)
    fields = {**ENV_FIELDS, **spec.env}
    fp = fingerprint(fields)
    sigma = math.sqrt(math.log1p(spec.cv**2))
    rows: list[dict[str, Any]] = []
    extras: dict[str, Any] = {}
    clock = T0
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
            row = _base_row(spec, run, repeat, started, duration, nccl, fp)
            status, reason = _planted_failure(spec, n, batch, precision, repeat)
            row["status"], row["reason"] = status, reason
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
                row.update(_metrics(row, x, n, per_device, precision, rng))
                extras[run.run_id] = {
                    "step_time_s_p50": row["step_time_s_p50"],
                    "world_size": n,
                    "window": (started.timestamp() + 5, started.timestamp() + duration),
                }
            rows.append(row)
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


def _base_row(spec, run, repeat, started, duration, nccl, fp) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "sweep": spec.name,
        "run_id": run.run_id,
        "config_key": run.config_key,
        "repeat": repeat,
        "status": "ok",
        "reason": None,
        "started_at": started.isoformat().replace("+00:00", "Z"),
        "finished_at": (started + timedelta(seconds=duration)).isoformat().replace("+00:00", "Z"),
        "duration_s": duration,
        "scaling_mode": spec.scaling_mode,
        "point_dir": f"points/{run.run_id}",
        "nodes": run.nodes,
        "nproc_per_node": run.nproc_per_node,
        "world_size": run.world_size,
        "device": run.device,
        "backend": run.backend,
        "model": run.model,
        "init": run.init,
        "data": run.data,
        "max_length": run.max_length,
        "seq_policy": run.seq_policy,
        "per_device_batch": run.per_device_batch,
        "grad_accum": run.grad_accum,
        "global_batch": run.global_batch,
        "precision": run.precision,
        "compile": run.compile,
        "ddp_bucket_cap_mb": run.ddp.bucket_cap_mb,
        "ddp_gradient_as_bucket_view": run.ddp.gradient_as_bucket_view,
        "ddp_static_graph": run.ddp.static_graph,
        "ddp_broadcast_buffers": run.ddp.broadcast_buffers,
        "ddp_comm_hook": run.ddp.comm_hook,
        "nccl_env": nccl,
        "warmup_steps": run.warmup_steps,
        "measured_steps": run.measured_steps,
        **dict.fromkeys(METRIC_KEYS),
        "step_time_s_rank_spread": None,
        **dict.fromkeys(TELEMETRY_KEYS),
        "env_fingerprint": fp,
    }


METRIC_KEYS = (
    "samples_per_s",
    "samples_per_s_per_device",
    "real_tokens_per_s",
    "padded_tokens_per_s",
    "step_time_s_p50",
    "step_time_s_p90",
    "step_time_s_p99",
    "step_time_s_mean",
    "data_wait_share",
    "mem_peak_gib",
    "mfu",
    "hfu",
    "flops_per_step",
    "measured_time_s",
    "loss_first",
    "loss_last",
)
TELEMETRY_KEYS = (
    "telemetry_available",
    "gpu_util_pct_mean",
    "gpu_mem_used_gib_max",
    "gpu_power_w_mean",
    "gpu_sm_clock_mhz_mean",
    "gpu_temp_c_max",
    "gpu_throttle_reasons",
)


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


def _metrics(row, x, n, per_device, precision, rng) -> dict[str, Any]:
    tokens = 128
    global_batch = row["global_batch"]
    step = global_batch / x
    flops_per_step = (6 * 42_467_328 + 12 * 6 * 768 * tokens) * tokens * global_batch
    peak = {"fp32": 67e12, "tf32": 494.7e12, "fp16": 989.4e12, "bf16": 989.4e12}[precision]
    real_share = 0.42
    out = {
        "samples_per_s": x,
        "samples_per_s_per_device": x / n,
        "real_tokens_per_s": x * tokens * real_share,
        "padded_tokens_per_s": x * tokens,
        "step_time_s_p50": step,
        "step_time_s_p90": step * 1.04,
        "step_time_s_p99": step * 1.09,
        "step_time_s_mean": step * 1.01,
        "data_wait_share": 0.01,
        "mem_peak_gib": 2.1 + 0.19 * per_device * (2.0 if precision == "fp32" else 1.0),
        "mfu": flops_per_step / step / (peak * n) * real_share,
        "hfu": flops_per_step / step / (peak * n),
        "flops_per_step": flops_per_step,
        "measured_time_s": step * row["measured_steps"],
        "loss_first": 1.39,
        "loss_last": 1.38,
        "step_time_s_rank_spread": 1.0 + float(rng.uniform(0.0, 0.02)) * math.log2(2 * n),
        # What explains the efficiency: the step minus a slice per cause that grows with N
        # (null at one rank, as the worker writes them).
        **_explain(step, n),
    }
    return out


def _explain(step: float, n: int) -> dict[str, Any]:
    grad_bytes = 66_955_010 * 4
    if n == 1:
        return {"compute_step_time_s": 0.98 * step, "data_wait_s": 0.01 * step,
                "grad_bytes": grad_bytes, "bucket_count": 11}  # fmt: skip
    exposed, straggler = 0.02 * math.log2(n) * step, 0.005 * math.log2(n) * step
    allreduce = 3 * exposed
    algbw = grad_bytes / allreduce / 1e9
    return {
        "compute_step_time_s": step - exposed - straggler - 0.012 * step,
        "data_wait_s": 0.01 * step,
        "straggler_wait_s": straggler,
        "exposed_comm_s": exposed,
        "allreduce_time_s": allreduce,
        "allreduce_bucketed_time_s": 1.1 * allreduce,
        "allreduce_algbw_gbps": algbw,
        "allreduce_busbw_gbps": algbw * 2 * (n - 1) / n,
        "overlap_share": 1 - exposed / allreduce,
        "grad_bytes": grad_bytes,
        "bucket_count": 11,
    }


def write_sweep(root: Path, spec: FakeSweep | None = None) -> Path:
    """Write ``root/<name>/`` (ledger.jsonl, env.json, sweep.json, points/...); return it."""
    spec = spec or FakeSweep()
    rows, side = fake_rows(spec)
    sweep_dir = root / spec.name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed + 1000)
    largest = max(spec.world_sizes)
    budget = spec.side_files_limit if spec.side_files_limit is not None else len(rows)
    for row in rows:
        point = sweep_dir / row["point_dir"]
        (point / "logs").mkdir(parents=True, exist_ok=True)
        extra = side["points"].get(row["run_id"])
        if extra is None or budget <= 0:
            continue
        budget -= 1
        if spec.records:
            _write_record(point, row, extra, rng)
        if spec.telemetry and row["world_size"] == largest:
            samples = _write_telemetry(point, row, extra, rng)
            row.update(samples)
    write_ledger(sweep_dir, rows)
    (sweep_dir / "env.json").write_text(json.dumps(side["env"], indent=2))
    (sweep_dir / "sweep.json").write_text(
        json.dumps({"name": spec.name, "points": sorted({r["run_id"] for r in rows})})
    )
    return sweep_dir


def write_ledger(sweep_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """One JSON object per line, exactly as the harness appends them."""
    path = sweep_dir / "ledger.jsonl"
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    return path


def _write_record(point: Path, row, extra, rng) -> None:
    n = extra["world_size"]
    p50 = extra["step_time_s_p50"]
    slow = {n - 1: 1.015} if n > 1 else {}  # the last rank is a mild straggler
    times = [
        [
            float(p50 * slow.get(r, 1.0) * rng.lognormal(0, 0.01))
            for _ in range(row["measured_steps"])
        ]
        for r in range(n)
    ]
    start, end = extra["window"]
    record = {
        "schema_version": 1,
        "run_id": row["run_id"],
        "config_key": row["config_key"],
        "metrics": {k: row[k] for k in METRIC_KEYS} | {"measured_steps": row["measured_steps"]},
        "step_times_s": times,
        "measured_window": {"start_unix": start, "end_unix": end},
        "warnings": [],
    }
    (point / "record.json").write_text(json.dumps(record))


def _write_telemetry(point: Path, row, extra, rng) -> dict[str, Any]:
    start, end = extra["window"]
    lines, util, power, mem = [], [], [], []
    for t in np.arange(start - 5, end + 1, 0.5):
        for g in range(row["world_size"]):
            in_window = start <= t <= end
            u = float(np.clip(rng.normal(93 if in_window else 8, 2), 0, 100))
            p = float(rng.normal(610 if in_window else 90, 15))
            m = float(row["mem_peak_gib"] + 0.6 if in_window else 0.5)
            util.append(u)
            power.append(p)
            mem.append(m)
            lines.append(
                json.dumps(
                    {
                        "t_unix": float(t),
                        "gpu_uuid": f"GPU-{g:08x}",
                        "gpu_index": g,
                        "util_pct": u,
                        "mem_used_gib": m,
                        "power_w": p,
                        "sm_clock_mhz": 1980.0,
                        "temp_c": 61.0,
                        "throttle_reasons": "",
                    }
                )
            )
    (point / "telemetry.jsonl").write_text("\n".join(lines) + "\n")
    return {
        "telemetry_available": True,
        "gpu_util_pct_mean": float(np.mean(util)),
        "gpu_mem_used_gib_max": float(np.max(mem)),
        "gpu_power_w_mean": float(np.mean(power)),
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
