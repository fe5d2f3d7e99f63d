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

Why the efficiency is what it is (distrinews/explain.py, from the window's probed steps and
measurements after the window; the
full definitions, one home, are harness/attribution.py DEFINITIONS, printed in docs/why.md):

* :func:`explain_figures` — **compute_step_time_s**, an optimizer step under DDP's
  ``no_sync()`` (no gradient all-reduce) on the same data stream, without its data wait:
  median over steps per rank, then the *lower* median over ranks (the typical rank; with two
  ranks the faster one); **allreduce_time_s**, the all-reduce ceiling: median time of one
  all-reduce of exactly the gradient's bytes and dtype in the run's process group (null at one
  rank); **algbw** = bytes / time, **busbw** = algbw · 2(N−1)/N (the nccl-tests convention),
  in GB/s (1e9 bytes/s). **allreduce_bucketed_time_s** — the same for each of DDP's buckets,
  summed: DDP's all-reduce as DDP issues it (bucket by bucket), at the ceiling.
* :func:`step_figures` — inside the window's steps (distrinews/timing.py's step probe):
  **step_work_s** (the typical rank's own work), **run_queue_wait_s** (its waiting for a
  core), **straggler_wait_s** (its waiting for the last rank, less **straggler_run_queue_s**:
  what the last rank spent waiting for a core beyond its own), **exposed_comm_s** (the last
  rank's waiting for the all-reduce, up to what the buckets expose at their ceiling) and
  **comm_contention_s** (the rest of that wait), **backward_time_s**, and per bucket
  ``ready_s`` and ``step_allreduce_s``. Measured at one rank too: DDP runs its reducer over a
  group of one, and what that costs is part of the reference point.
* **overlap_share** — 1 − exposed_comm_s / allreduce_bucketed_time_s, clamped to 0..1.
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


def _metric(
    term: str, *, explain: bool = False, ledger: bool = True, optional: bool = False
) -> Any:
    """A :class:`RunMetrics` field. ``term``: the definition (``harness/definitions.py`` or
    ``harness/attribution.py`` DEFINITIONS) a reader looks the figure up under; ``explain``: a
    figure of the explain phase (null when it is off or meaningless, so it defaults to None);
    ``ledger``: whether the ledger carries it as a column of its own; ``optional``: a window
    figure a machine may not provide (a kernel counter), None by default."""
    meta = {"term": term, "explain": explain, "ledger": ledger}
    return field(default=None, metadata=meta) if explain or optional else field(metadata=meta)


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
    cpu_cores: int | None = _metric("Contention evidence", optional=True)
    """Cores the first rank may run on (its affinity mask)."""
    cpu_oversubscription: float | None = _metric("Contention evidence", optional=True)
    """Ranks on the machine × torch threads per rank / cpu_cores (CPU runs; None on CUDA)."""
    load_avg_1m: float | None = _metric("Contention evidence", optional=True)
    """The machine's 1-minute load average at the window's end (runnable threads)."""
    cpu_steal_share: float | None = _metric("Contention evidence", optional=True)
    """Share of the machine's CPU time the hypervisor stole during the window (0..1)."""
    involuntary_switches_per_step: float | None = _metric("Contention evidence", optional=True)
    """Involuntary context switches per optimizer step of a rank's process (mean over ranks)."""
    window_run_queue_wait_s: float | None = _metric("Contention evidence", optional=True)
    """Per step, seconds the training thread waited for a core in the window (mean over
    ranks; CPU runs, None without schedstat)."""
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
    """Per step, the all-reduce backward did not hide, up to what the buckets expose at their
    ceiling (s; the window's steps)."""
    overlap_share: float | None = _metric("exposed_comm", explain=True)
    """1 − exposed_comm_s / allreduce_bucketed_time_s (allreduce_time_s without bucket
    times), clamped to 0..1."""
    straggler_wait_s: float | None = _metric("straggler", explain=True)
    """Per step, how long the typical rank waits for the last rank, less what the last rank
    spent waiting for a core beyond the typical rank's own wait (``straggler_run_queue_s``)
    (s; the window's steps)."""
    straggler_run_queue_s: float | None = _metric("contention", explain=True)
    """Per step, the part of the typical rank's wait for the last rank that the last rank spent
    waiting for a core, beyond the typical rank's own run-queue wait (s; CPU with schedstat,
    else None)."""
    comm_contention_s: float | None = _metric("contention", explain=True)
    """Per step, the exposed all-reduce beyond what it exposes at the ceiling: the all-reduce
    running slower inside the step than alone (s)."""
    run_queue_wait_s: float | None = _metric("contention", explain=True)
    """Per step, seconds the typical rank's training thread waited for a core (the window's
    steps; CPU with schedstat, else None)."""
    step_work_s: float | None = _metric("compute", explain=True)
    """Per step, the typical rank's own work in the synchronised step (s): the step minus data
    wait, waiting for other ranks and the all-reduce, and waiting for a core."""
    step_work_s_rank_spread: float | None = _metric("straggler", explain=True)
    """The slowest rank's mean work per step over the typical rank's (1.0: no straggler)."""
    step_time_instrumented_s: float | None = _metric("unexplained", explain=True)
    """Mean step time of the window's steps as the step probe saw them, typical rank (s)."""
    backward_time_s: float | None = _metric("In-step all-reduce", explain=True)
    """Median backward, from its start to its last gradient, typical rank (s)."""
    allreduce_step_time_s: float | None = _metric("In-step all-reduce", explain=True)
    """Per step, how long some bucket's all-reduce was in flight inside DDP's step (s)."""
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
    contention: Mapping[str, Any] | None = None,
) -> RunMetrics:
    """The run's figures from the raw window measurements (explain fields still None).

    ``step_times_s`` is per rank; the percentiles pool all ranks' steps (a straggler shows up
    in p90/p99). ``measured_time_s`` is the slowest rank's window; ``data_wait_s`` the mean
    over ranks of the time spent waiting for batches. ``contention``: the window's contention
    evidence (:func:`contention_figures`).
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
        **(contention or {}),
    )


def contention_figures(
    per_rank: Sequence[Mapping[str, Any]],
    *,
    cpu_cores: int,
    ranks_per_machine: int,
    threads_per_rank: int,
    on_cpu: bool,
) -> dict[str, Any]:
    """The window's contention evidence from every rank's counters
    (:meth:`distrinews.contention.WindowCounters.finish`, rank 0 first): the machine's load
    and steal as rank 0 saw them, run-queue wait and involuntary switches averaged over ranks.
    A counter some rank could not read is None, not a smaller mean."""

    def mean_of(key: str) -> float | None:
        vals = [r.get(key) for r in per_rank]
        return None if not vals or any(v is None for v in vals) else _mean(vals)  # type: ignore[arg-type]

    first = per_rank[0] if per_rank else {}
    return {
        "cpu_cores": cpu_cores,
        "cpu_oversubscription": ranks_per_machine * threads_per_rank / cpu_cores
        if on_cpu and cpu_cores > 0 else None,
        "load_avg_1m": first.get("load_avg_1m"),
        "cpu_steal_share": first.get("steal_share"),
        "involuntary_switches_per_step": mean_of("switches"),
        "window_run_queue_wait_s": mean_of("run_queue_s") if on_cpu else None,
    }  # fmt: skip


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
    work_step_times_s: Sequence[Sequence[float]],
    work_data_wait_s: Sequence[Sequence[float]],
    allreduce_time_s: float | None,
    grad_bytes: int,
) -> dict[str, Any]:
    """The compute-only step and the all-reduce ceiling (definitions in this module's docstring).

    ``work_step_times_s`` / ``work_data_wait_s``: per rank, per step, the compute-only
    (``no_sync``) steps and the data wait inside each. ``allreduce_time_s``: the ceiling (None
    at one rank). Figures with no meaning at one rank are None, never 0. What happens inside
    the synchronised step is :func:`step_figures`.
    """
    world_size = len(work_step_times_s)
    if world_size == 0 or len(work_data_wait_s) != world_size:
        raise ValueError("one list of step times and data waits per rank is needed")
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
    }
    if world_size > 1 and allreduce_time_s is not None and allreduce_time_s > 0:
        algbw = grad_bytes / allreduce_time_s / 1e9
        out["allreduce_time_s"] = allreduce_time_s
        out["allreduce_algbw_gbps"] = algbw
        out["allreduce_busbw_gbps"] = bus_bandwidth(algbw, world_size)
    return out


def overlap_share(exposed_s: float | None, allreduce_s: float | None) -> float | None:
    """1 − exposed / all-reduce time, clamped to 0..1 (None when either is unknown)."""
    if exposed_s is None or allreduce_s is None or allreduce_s <= 0:
        return None
    return min(1.0, max(0.0, 1.0 - exposed_s / allreduce_s))


# -- inside the synchronised step (distrinews/timing.py StepProbe) -----------------------------


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def union_length(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length covered by ``(start, end)`` intervals (overlaps counted once)."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def exposure_at_ceiling(ready_s: Sequence[float], ceiling_s: Sequence[float]) -> float:
    """Seconds after the last bucket is ready until DDP's buckets would all be all-reduced if
    each ran at its ceiling: bucket i starts when it is ready and bucket i−1 is done (DDP
    launches them in order, the process group runs them one after another)."""
    end = 0.0
    for ready, cost in zip(ready_s, ceiling_s, strict=True):
        end = max(ready, end) + cost
    return max(0.0, end - max(ready_s, default=0.0))


def step_figures(
    per_rank: Sequence[Sequence[Mapping[str, Any]]],
    *,
    ceiling_buckets_s: Sequence[float | None] | None,
) -> dict[str, Any]:
    """What the probed steps of the window say (definitions in docs/why.md).

    ``per_rank``: per rank, per step, :meth:`distrinews.timing.StepProbe.step_marks` dicts
    (steps aligned by index: step i is the same all-reduce on every rank).
    ``ceiling_buckets_s``: each DDP bucket's all-reduce at the ceiling (None at one rank).

    Per step: a rank's *waits* are DDP's forward collective plus its wait for the all-reduce
    after the last bucket was ready; its *work* is the step minus data wait, waits and
    run-queue wait. The
    rank with the shortest waits arrived last: its waits are the exposed all-reduce; the
    typical rank (lower median of work) waits that plus its lead on the slowest (straggler
    wait). The exposed all-reduce is split at what the buckets would expose at their ceiling
    (:func:`exposure_at_ceiling` on the last rank's ready times, each bucket costing its
    ceiling plus what its hook spent before issuing it): what is beyond it is the all-reduce
    running slower inside the step than alone (``comm_contention_s``).
    Means over steps (means add up: the parts of a step sum to its time); the bucket timings
    the projection reads are medians, per the contract (notes/contracts.md).
    """
    world = len(per_rank)
    steps = min((len(r) for r in per_rank), default=0)
    if world == 0 or steps == 0:
        raise ValueError("no instrumented steps")
    n_buckets = min(len(s["buckets"]) for r in per_rank for s in r[:steps])
    known = list(ceiling_buckets_s or [])[:n_buckets]
    ceiling = (
        [float(c) for c in known if c is not None]
        if n_buckets and len(known) == n_buckets and all(c is not None for c in known)
        else None
    )
    rq_known = all(s["run_queue_s"] is not None for r in per_rank for s in r[:steps])
    names = ("step", "data", "work", "rq", "straggler", "straggler_rq", "exposed",
             "comm_contention", "inflight")  # fmt: skip
    cols: dict[str, list[float]] = {k: [] for k in names}
    work_by_rank: list[list[float]] = [[] for _ in range(world)]
    per_step = []
    for i in range(steps):
        marks = [per_rank[r][i] for r in range(world)]
        waits = [m["forward_sync_s"] + m["comm_wait_s"] for m in marks]
        rq = [m["run_queue_s"] or 0.0 for m in marks]
        work = [
            max(0.0, m["step_s"] - m["data_s"] - w - q)
            for m, w, q in zip(marks, waits, rq, strict=True)
        ]
        for r in range(world):
            work_by_rank[r].append(work[r])
        per_step.append((marks, waits, rq, work))
    rank_work = [_mean(w) for w in work_by_rank]
    # The typical rank is one rank for the whole window: the lower median of the ranks' mean
    # work. Chosen step by step (the lower median of each step's work: with two ranks, the
    # faster one of every step) its work would be a minimum of N noisy draws, below what one
    # rank works alone by ~0.56 sd at N = 2, and the compute part would read negative on any
    # jittery machine while the straggler wait took the difference.
    typ = sorted(range(world), key=lambda r: rank_work[r])[(world - 1) // 2]
    for marks, waits, rq, work in per_step:
        last = min(range(world), key=lambda r: waits[r])
        exposed = waits[last]
        within = exposed
        if ceiling is not None:
            own = marks[last]["buckets"][:n_buckets]
            # Each bucket costs what its hook spends launching it plus its ceiling; DDP's
            # forward collective is not compared with anything and counts as it was measured.
            costs = [c + (b[2] if len(b) > 2 else 0.0) for b, c in zip(own, ceiling, strict=True)]
            wait = marks[last]["comm_wait_s"]
            model = exposure_at_ceiling([b[0] for b in own], costs)
            within = marks[last]["forward_sync_s"] + min(wait, model)
        m = marks[typ]
        cols["step"].append(m["step_s"])
        cols["data"].append(m["data_s"])
        cols["work"].append(work[typ])
        cols["rq"].append(rq[typ])
        # The typical rank waits for the last one; the part of that lead the last rank spent
        # waiting for a core (beyond the typical rank's own wait for one) is contention that
        # reached everyone through the synchronous step, not a slow rank (a busy neighbour on
        # one rank's core shows here, not as that rank's work).
        lead = waits[typ] - exposed
        behind = min(max(rq[last] - rq[typ], 0.0), max(lead, 0.0))
        cols["straggler"].append(lead - behind)
        cols["straggler_rq"].append(behind)
        cols["exposed"].append(within)
        cols["comm_contention"].append(exposed - within)
        cols["inflight"].append(union_length([(b[0], b[0] + b[1]) for b in m["buckets"]]))
    typical_work = lower_median(rank_work)

    def typical(values_of_rank: Any) -> float:
        # Median over steps per rank, then the lower median over ranks: the typical rank.
        return lower_median([percentile(values_of_rank(r[:steps]), 50) for r in per_rank])

    buckets = [
        {
            "ready_s": typical(lambda st, b=b: [s["buckets"][b][0] for s in st]),
            "step_allreduce_s": typical(lambda st, b=b: [s["buckets"][b][1] for s in st]),
        }
        for b in range(n_buckets)
    ]
    return {
        "metrics": {
            "backward_time_s": typical(lambda st: [s["backward_s"] for s in st]),
            "step_time_instrumented_s": _mean(cols["step"]),
            "step_work_s": _mean(cols["work"]),
            "step_work_s_rank_spread": max(rank_work) / typical_work if typical_work > 0 else None,
            "run_queue_wait_s": _mean(cols["rq"]) if rq_known else None,
            "exposed_comm_s": _mean(cols["exposed"]),
            "comm_contention_s": _mean(cols["comm_contention"]) if ceiling is not None else None,
            "straggler_wait_s": _mean(cols["straggler"]),
            "straggler_run_queue_s": _mean(cols["straggler_rq"]) if rq_known else None,
            "allreduce_step_time_s": _mean(cols["inflight"]) if n_buckets else None,
            "instrumented_steps": steps,
        },
        "buckets": buckets,
        "step_work_s_per_rank": rank_work,
    }
