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
* **data_wait_share** — share of the window spent waiting for the next batch; **data_wait_s**
  the same per optimizer step, in seconds (mean over ranks).

Why the efficiency is what it is (:func:`explain_figures`; measured after the window by
distrinews/explain.py; null at one rank, where there is no all-reduce and nobody to wait for):

* **compute_step_time_s** — an optimizer step under DDP's ``no_sync()`` (no gradient
  all-reduce) on the same data stream, without its data wait: median over steps per rank, then
  the *lower* median over ranks (the typical rank; with two ranks the faster one, so a slow rank
  counts as a straggler, not as compute).
* **allreduce_time_s** — the all-reduce ceiling: median time of one all-reduce of exactly the
  gradient's bytes and dtype in the run's process group; **algbw** = bytes / time,
  **busbw** = algbw · 2(N−1)/N (the nccl-tests convention), in GB/s (1e9 bytes/s).
  **allreduce_bucketed_time_s** — the same for each of DDP's buckets, summed: DDP's all-reduce
  as DDP issues it (bucket by bucket), at the ceiling.
* **straggler_wait_s** — per step, the slowest rank's no_sync step (data wait included) minus
  the typical rank's (lower median); median over steps. A synchronous step waits for the slowest.
* **exposed_comm_s** — the communication backward did not hide: median synchronised step (the
  slowest rank's, measured window) minus median compute-only step of the slowest rank (data wait
  included, so data and stragglers are not counted twice); clamped at 0 (noise).
* **overlap_share** — 1 − exposed_comm_s / allreduce_time_s, clamped to 0..1.
* **explain_time_s** — the wall-clock seconds these measurements added to the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
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


def _metric(term: str, *, explain: bool = False, ledger: bool = True) -> Any:
    """A :class:`RunMetrics` field. ``term``: the definition (``harness/definitions.py`` or
    ``harness/attribution.py`` DEFINITIONS) a reader looks the figure up under; ``explain``: a
    figure of the explain phase (null when it is off or meaningless, so it defaults to None);
    ``ledger``: whether the ledger carries it as a column of its own."""
    meta = {"term": term, "explain": explain, "ledger": ledger}
    return field(default=None, metadata=meta) if explain else field(metadata=meta)


@dataclass(frozen=True, kw_only=True)
class RunMetrics:
    """The ``metrics`` block of record.json: one run's figures, units in the names.

    This class is the single list of the run's metrics (notes/contracts.md §1): record.json
    writes :meth:`to_record` (the fields, in this order), the ledger's metric columns are
    :data:`LEDGER_METRIC_KEYS` (every field but ``measured_steps``, which the ledger has as a
    configuration column), and the explain phase's figures are the fields marked ``explain``.
    Throughputs are per second over the measured window; times in seconds; shares 0..1.
    """

    samples_per_s: float = _metric("samples/s")
    """Sequences trained per second, all ranks."""
    samples_per_s_per_device: float = _metric("samples/s")
    """samples_per_s / world size."""
    real_tokens_per_s: float = _metric("tokens/s")
    """Non-pad tokens per second, all ranks (the useful work)."""
    padded_tokens_per_s: float = _metric("tokens/s")
    """Batch × padded width per second, all ranks (what the hardware computed)."""
    step_time_s_p50: float = _metric("Step-time percentiles")
    """Median optimizer-step time, every rank's measured steps pooled (s)."""
    step_time_s_p90: float = _metric("Step-time percentiles")
    """90th percentile of the pooled step times (s)."""
    step_time_s_p99: float = _metric("Step-time percentiles")
    """99th percentile of the pooled step times (s)."""
    step_time_s_mean: float = _metric("Step-time percentiles")
    """Mean of the pooled step times (s)."""
    data_wait_share: float = _metric("data_wait_share")
    """Share of the measured window spent waiting for batches (0..1, mean over ranks)."""
    data_wait_s: float = _metric("data_wait")
    """Seconds per optimizer step spent waiting for batches (mean over ranks)."""
    mem_peak_gib: float | None = _metric("mem_peak_gib")
    """Peak allocated device memory of rank 0 (GiB); None on CPU."""
    mfu: float | None = _metric("MFU / HFU")
    """Model FLOPs utilisation, a fraction (0..1) of the devices' peak; None when unknown."""
    hfu: float | None = _metric("MFU / HFU")
    """Hardware FLOPs utilisation (padded tokens), a fraction of peak; None when unknown."""
    flops_per_step: float = _metric("FLOPs per token")
    """Model training FLOPs (real tokens) per optimizer step, all ranks."""
    measured_steps: int = _metric("Measured window", ledger=False)
    """Optimizer steps in the window (the spec's; the ledger has it as a config column)."""
    measured_time_s: float = _metric("Measured window")
    """The measured window's length on the slowest rank (s)."""
    loss_first: float = _metric("Loss")
    """Training loss of the window's first step (mean over ranks)."""
    loss_last: float = _metric("Loss")
    """Training loss of the window's last step (mean over ranks)."""
    compute_step_time_s: float | None = _metric("compute", explain=True)
    """Compute-only (``no_sync``) step without data wait, typical rank (s)."""
    allreduce_time_s: float | None = _metric("exposed_comm", explain=True)
    """The all-reduce ceiling: one all-reduce of the gradient's bytes and dtype (s)."""
    allreduce_algbw_gbps: float | None = _metric("All-reduce bus bandwidth", explain=True)
    """Gradient bytes / allreduce_time_s, in GB/s (1e9 bytes/s)."""
    allreduce_busbw_gbps: float | None = _metric("All-reduce bus bandwidth", explain=True)
    """algbw · 2(N−1)/N, in GB/s (the nccl-tests convention)."""
    grad_bytes: int | None = _metric("Explain phase", explain=True)
    """Bytes of the gradient DDP all-reduces every step."""
    exposed_comm_s: float | None = _metric("exposed_comm", explain=True)
    """Per step, the communication backward did not hide (s)."""
    overlap_share: float | None = _metric("exposed_comm", explain=True)
    """1 − exposed_comm_s / allreduce_time_s, clamped to 0..1."""
    straggler_wait_s: float | None = _metric("straggler", explain=True)
    """Per step, the slowest rank's compute-only step minus the typical rank's (s)."""
    bucket_count: int | None = _metric("Explain phase", explain=True)
    """DDP's gradient buckets (as rebuilt after the first steps)."""
    allreduce_bucketed_time_s: float | None = _metric("Explain phase", explain=True)
    """DDP's buckets each all-reduced at the ceiling, summed (s)."""
    explain_time_s: float | None = _metric("Explain phase", explain=True)
    """Wall-clock seconds the explain phase added to the run."""

    def to_record(self) -> dict[str, Any]:
        """The record.json ``metrics`` object: every field, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def with_explain(self, figures: Mapping[str, Any]) -> RunMetrics:
        """These metrics with the explain phase's figures filled in (``distrinews.explain``).

        Only explain fields may be given: a figure this class does not list is a bug (it would
        reach record.json but no ledger column), so it raises instead of vanishing.
        """
        unknown = sorted(set(figures) - set(EXPLAIN_METRIC_KEYS))
        if unknown:
            raise ValueError(f"not explain metrics of RunMetrics: {', '.join(unknown)}")
        return replace(self, **figures)


#: record.json's ``metrics`` keys, in order.
RECORD_METRIC_KEYS: tuple[str, ...] = tuple(f.name for f in fields(RunMetrics))
#: The keys the explain phase fills (null when it is off or meaningless at one rank).
EXPLAIN_METRIC_KEYS: tuple[str, ...] = tuple(
    f.name for f in fields(RunMetrics) if f.metadata["explain"]
)
#: The metrics the ledger carries as columns of their own (harness.store.METRIC_KEYS).
LEDGER_METRIC_KEYS: tuple[str, ...] = tuple(
    f.name for f in fields(RunMetrics) if f.metadata["ledger"]
)
#: Each metric's definition term (where the report and docs/metrics.md define it).
METRIC_TERMS: Mapping[str, str] = {f.name: f.metadata["term"] for f in fields(RunMetrics)}


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
) -> RunMetrics:
    """The run's figures from the raw window measurements (explain fields still None).

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
    return RunMetrics(
        samples_per_s=samples_per_s,
        samples_per_s_per_device=samples_per_s / world_size,
        real_tokens_per_s=counts.real_tokens / measured_time_s,
        padded_tokens_per_s=counts.padded_tokens / measured_time_s,
        step_time_s_p50=percentile(steps, 50),
        step_time_s_p90=percentile(steps, 90),
        step_time_s_p99=percentile(steps, 99),
        step_time_s_mean=sum(steps) / len(steps),
        data_wait_share=min(1.0, max(0.0, data_wait_s / measured_time_s)),
        data_wait_s=data_wait_s / measured_steps,
        mem_peak_gib=mem_peak_gib,
        mfu=mfu,
        hfu=hfu,
        flops_per_step=model_flops / measured_steps,
        measured_steps=measured_steps,
        measured_time_s=measured_time_s,
        loss_first=loss_first,
        loss_last=loss_last,
    )


def rank_spread(step_times_s: Any) -> float | None:
    """Slowest rank's median step time over the fastest's (1.0 = no straggler).

    Takes record.json's ``step_times_s`` as read (a list per rank); None when it holds no
    usable numbers for some rank or a median is not positive. Non-numbers and non-finite
    values in a rank's list are left out.
    """
    if not isinstance(step_times_s, (list, tuple)) or not step_times_s:
        return None
    medians = []
    for per_rank in step_times_s:
        if not isinstance(per_rank, (list, tuple)):
            return None
        vals = sorted(
            v
            for v in per_rank
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        )
        if not vals:
            return None
        mid = len(vals) // 2
        medians.append(vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2)
    low = min(medians)
    return max(medians) / low if low > 0 else None


def lower_median(values: Sequence[float]) -> float:
    """The lower of the two middle values for an even count (the middle one for odd)."""
    if not values:
        raise ValueError("lower_median of no values")
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def bus_bandwidth(algbw: float, world_size: int) -> float:
    """nccl-tests' bus bandwidth of an all-reduce: algbw · 2(N−1)/N (what each link carries)."""
    return algbw * 2.0 * (world_size - 1) / world_size


def explain_figures(
    *,
    window_step_times_s: Sequence[Sequence[float]],
    work_step_times_s: Sequence[Sequence[float]],
    work_data_wait_s: Sequence[Sequence[float]],
    allreduce_time_s: float | None,
    grad_bytes: int,
) -> dict[str, Any]:
    """The metrics that explain a point's efficiency (definitions in this module's docstring).

    ``window_step_times_s``: per rank, the measured window's synchronised steps.
    ``work_step_times_s`` / ``work_data_wait_s``: per rank, per step, the compute-only
    (``no_sync``) steps and the data wait inside each. ``allreduce_time_s``: the ceiling (None
    at one rank). Figures with no meaning at one rank are None, never 0.
    """
    world_size = len(window_step_times_s)
    if world_size == 0 or len(work_step_times_s) != world_size:
        raise ValueError("one list of step times per rank is needed, in both phases")
    steps = min(len(r) for r in work_step_times_s)
    if steps == 0:
        raise ValueError("no compute-only steps")
    compute_per_rank = [
        percentile([w - d for w, d in zip(ws[:steps], ds[:steps], strict=True)], 50)
        for ws, ds in zip(work_step_times_s, work_data_wait_s, strict=True)
    ]
    out: dict[str, Any] = {
        "compute_step_time_s": lower_median(compute_per_rank),
        "allreduce_time_s": None,
        "allreduce_algbw_gbps": None,
        "allreduce_busbw_gbps": None,
        "grad_bytes": grad_bytes,
        "exposed_comm_s": None,
        "overlap_share": None,
        "straggler_wait_s": None,
    }
    if world_size == 1:
        return out
    per_step = list(zip(*(r[:steps] for r in work_step_times_s), strict=True))
    out["straggler_wait_s"] = percentile([max(s) - lower_median(s) for s in per_step], 50)
    synced = [max(s) for s in zip(*window_step_times_s, strict=False)]
    slowest_work = [max(s) for s in per_step]
    exposed = max(0.0, percentile(synced, 50) - percentile(slowest_work, 50))
    out["exposed_comm_s"] = exposed
    if allreduce_time_s is not None and allreduce_time_s > 0:
        algbw = grad_bytes / allreduce_time_s / 1e9
        out["allreduce_time_s"] = allreduce_time_s
        out["allreduce_algbw_gbps"] = algbw
        out["allreduce_busbw_gbps"] = bus_bandwidth(algbw, world_size)
        out["overlap_share"] = min(1.0, max(0.0, 1.0 - exposed / allreduce_time_s))
    return out
