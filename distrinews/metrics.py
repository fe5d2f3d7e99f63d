"""Pure math for the measured figures: percentiles, FLOPs per token, peak FLOP/s, MFU.

No torch, no I/O: every function here takes numbers and returns numbers, so it is unit-tested
exactly and the worker stays a thin wrapper (Lightning's Throughput / ThroughputMonitor split).

Definitions (the report prints these):

* **Measured window** — ``measured_steps`` optimizer steps after ``warmup_steps`` discarded
  ones, bounded by a device synchronize on every rank.
* **samples/s** — sequences trained in the window over all ranks / window seconds (the slowest
  rank's window); per device = that / world size.
* **tokens/s** — counted twice: *real* (non-pad tokens, what the model needed) and *padded*
  (batch × padded width, what the hardware computed). Dynamic padding closes the gap.
* **FLOPs per token (training)** = 6·N_matmul + 12·L·d·T. N_matmul counts the weights of the
  encoder's matrix multiplies (per layer 4·d² attention projections + 2·d·d_ff feed-forward;
  6 × 7,077,888 = 42,467,328 for DistilBERT-base), 6 = 2 (multiply-add) × 3 (forward + two
  backward matmuls). 12·L·d·T is attention's QKᵀ and AV, which grow with the sequence length T.
  Embeddings, layer norms, softmax and the 4-way head are left out, as in the PaLM/nanoGPT
  convention.
* **MFU** (model FLOPs utilisation) = model FLOPs on *real* tokens per second / (peak FLOP/s ×
  devices). **HFU** here = the same on *padded* tokens: what the hardware was made to compute.
  Both are null when the device's peak is unknown — never a guess.
* **data_wait_share** — share of the window spent waiting for the next batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Peak dense FLOP/s by GPU and precision (no structured sparsity), from NVIDIA's datasheets.
#: fp32 is the non-tensor-core rate (PyTorch runs fp32 matmuls without TF32 unless asked);
#: H100 SXM: 132 SMs × 128 FP32 lanes × 2 × 1.98 GHz = 66.9 TF. H200 SXM is the same GH100 die
#: and clocks as H100 SXM. Matched by :func:`peak_flops` on the CUDA device name; keep the more
#: specific names first.
PEAK_FLOPS: tuple[tuple[tuple[str, ...], tuple[str, ...], Mapping[str, float]], ...] = (
    # (all of these substrings, none of these substrings, precision -> FLOP/s)
    (("H100", "PCIE"), (), {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51.2e12}),
    (("H100",), ("NVL",), {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    (("H200",), ("NVL",), {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    (("A100",), (), {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
)


def peak_flops(device_name: str | None, precision: str) -> float | None:
    """Peak dense FLOP/s of one device at ``precision``, or None if unknown (CPU, other GPUs)."""
    if not device_name:
        return None
    name = device_name.upper()
    for need, avoid, table in PEAK_FLOPS:
        if all(s in name for s in need) and not any(s in name for s in avoid):
            return table.get(precision)
    return None


def matmul_params(*, dim: int, hidden_dim: int, n_layers: int) -> int:
    """Weights of the encoder's matmuls: per layer q, k, v, out (4·d²) and the FFN (2·d·d_ff)."""
    return n_layers * (4 * dim * dim + 2 * dim * hidden_dim)


def flops_per_token(*, n_matmul: int, n_layers: int, dim: int, seq_len: float) -> float:
    """Training FLOPs per token of a sequence of ``seq_len`` tokens: 6·N + 12·L·d·T."""
    return 6.0 * n_matmul + 12.0 * n_layers * dim * seq_len


def sequence_flops(
    *, n_matmul: int, n_layers: int, dim: int, tokens: float, tokens_sq: float
) -> float:
    """Training FLOPs of a set of sequences given Σt and Σt² over them.

    A sequence of t tokens costs t·(6N + 12·L·d·t) = 6N·t + 12·L·d·t², so sums of t and t² are
    enough for any mix of lengths (dynamic padding) — and for padded batches, t is the width.
    """
    return 6.0 * n_matmul * tokens + 12.0 * n_layers * dim * tokens_sq


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in 0..100, got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True, kw_only=True)
class WindowCounts:
    """What the measured window processed, summed over all ranks and steps."""

    samples: int
    """Sequences (all ranks, all micro-steps)."""
    real_tokens: float
    """Non-pad tokens."""
    real_tokens_sq: float
    """Σ over sequences of (real tokens)², for attention FLOPs."""
    padded_tokens: float
    """Batch × padded width, summed."""
    padded_tokens_sq: float
    """Σ over sequences of (padded width)²."""


def summarize(
    *,
    step_times_s: Sequence[Sequence[float]],
    measured_time_s: float,
    data_wait_s: float,
    counts: WindowCounts,
    world_size: int,
    n_matmul: int,
    n_layers: int,
    dim: int,
    peak_flops_per_device: float | None,
    mem_peak_gib: float | None,
    loss_first: float,
    loss_last: float,
) -> dict[str, Any]:
    """The ``metrics`` block of record.json from the raw window measurements.

    ``step_times_s`` is per rank; the percentiles pool all ranks' steps (a straggler shows up
    in p90/p99). ``measured_time_s`` is the slowest rank's window; ``data_wait_s`` the mean
    over ranks of the time spent waiting for batches.
    """
    steps = [t for rank in step_times_s for t in rank]
    if not steps or measured_time_s <= 0:
        raise ValueError("an empty measured window has no figures")
    model_flops = sequence_flops(
        n_matmul=n_matmul,
        n_layers=n_layers,
        dim=dim,
        tokens=counts.real_tokens,
        tokens_sq=counts.real_tokens_sq,
    )
    hw_flops = sequence_flops(
        n_matmul=n_matmul,
        n_layers=n_layers,
        dim=dim,
        tokens=counts.padded_tokens,
        tokens_sq=counts.padded_tokens_sq,
    )
    measured_steps = len(step_times_s[0])
    mfu = hfu = None
    if peak_flops_per_device:
        capacity = peak_flops_per_device * world_size * measured_time_s
        mfu, hfu = model_flops / capacity, hw_flops / capacity
    samples_per_s = counts.samples / measured_time_s
    return {
        "samples_per_s": samples_per_s,
        "samples_per_s_per_device": samples_per_s / world_size,
        "real_tokens_per_s": counts.real_tokens / measured_time_s,
        "padded_tokens_per_s": counts.padded_tokens / measured_time_s,
        "step_time_s_p50": percentile(steps, 50),
        "step_time_s_p90": percentile(steps, 90),
        "step_time_s_p99": percentile(steps, 99),
        "step_time_s_mean": sum(steps) / len(steps),
        "data_wait_share": min(1.0, max(0.0, data_wait_s / measured_time_s)),
        "mem_peak_gib": mem_peak_gib,
        "mfu": mfu,
        "hfu": hfu,
        "flops_per_step": model_flops / measured_steps,
        "measured_steps": measured_steps,
        "measured_time_s": measured_time_s,
        "loss_first": loss_first,
        "loss_last": loss_last,
    }


def rank_spread(step_times_s: Iterable[Sequence[float]]) -> float:
    """max over ranks of p50 / min over ranks of p50 (1.0 = no straggler)."""
    medians = [percentile(list(r), 50) for r in step_times_s]
    return max(medians) / min(medians)
