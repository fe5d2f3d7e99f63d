"""What the numbers mean: the one home of the metric definitions (DESIGN.md §3).

The report prints :data:`DEFINITIONS` at its end, and the body of docs/metrics.md is
:func:`markdown` verbatim (``python -m harness.definitions`` prints it;
tests/unit/test_definitions.py fails when the two drift apart). Change a definition here, then
paste the printed section into docs/metrics.md.
"""

from __future__ import annotations

#: (term, definition) in reading order. Plain text: the report escapes it, the docs page wraps it.
DEFINITIONS: tuple[tuple[str, str], ...] = (
    (
        "Measured window",
        "After warmup_steps optimizer steps (discarded), over measured_steps steps; bounded by a "
        "device synchronize on every rank, with no host syncs inside. Per-step times come from "
        "CUDA events on GPU and perf_counter on CPU; every rank's step times are gathered. "
        "measured_time_s is the window's length on the slowest rank.",
    ),
    (
        "samples/s",
        "Training sequences per second over the measured window: global (all ranks) and per "
        "device (global / number of ranks; one rank per GPU, or per process on CPU).",
    ),
    (
        "tokens/s",
        "Counted twice: real tokens/s (non-pad tokens, the useful work) and padded tokens/s "
        "(what the hardware computed, pads included).",
    ),
    (
        "Padding waste",
        "The share of padded tokens that are padding: 1 − real / padded tokens. On the real "
        "test split at batch 256, length-grouped dynamic padding wastes about 9% against 60% "
        "for fixed 128-token padding.",
    ),
    (
        "Weak scaling",
        "Per-device batch fixed, so the global batch grows with the GPU count N. "
        "speedup(N) = X(N)/X(1); efficiency(N) = X(N)/(N·X(1)), X = global samples/s.",
    ),
    (
        "Strong scaling",
        "Global batch fixed (per-device batch or accumulation shrinks as N grows). "
        "efficiency(N) = X(N)/(N·X(1)) with X measured at the same global batch.",
    ),
    (
        "Reference GPU count",
        "When a curve has no 1-GPU point, its smallest GPU count N0 is the reference: "
        "efficiency(N) = X(N)·N0/(N·X(N0)). Each curve's N0 is shown in the scaling table.",
    ),
    (
        "FLOPs per token",
        "Training FLOPs per token = 6·N_matmul + 12·L·d·T, with N_matmul = 42,467,328 for "
        "DistilBERT-base (6 layers × 7,077,888), L = 6, d = 768, T = tokens per sequence. "
        "Achieved FLOPs sum 6·N_matmul·t + 12·L·d·t² over the sequences of the window, so mixed "
        "lengths count exactly. flops_per_step is the window's model FLOPs (real tokens) per "
        "optimizer step, all ranks.",
    ),
    (
        "MFU / HFU",
        "Model FLOPs utilisation: training FLOPs on real tokens per second divided by the "
        "device's peak dense tensor FLOP/s for the precision used (H100/H200 SXM bf16/fp16 "
        "989.4 TF, tf32 494.7 TF, fp32 66.9 TF; H100 PCIe 756/378/51.2 TF; A100 312/156/19.5 "
        "TF). Hardware FLOPs utilisation counts padded tokens. An unknown device (a CPU "
        "included) has no peak: blank, with a warning, never a guess.",
    ),
    (
        "All-reduce bus bandwidth",
        "busbw = algbw · 2(N−1)/N (the nccl-tests convention).",
    ),
    (
        "Repeats and intervals",
        "Every number is the median over a point's ok repeats, never a lone mean. Every "
        "interval states how often it holds the true value, and that share is what it "
        "really covers at the repeats the sweep ran, never a nominal 95% it cannot reach. A "
        "point's [low, high] is the order-statistic interval of its median: the k-th smallest "
        "and k-th largest of its n repeats, k the largest with exact coverage 1 − "
        "2·P(Binomial(n, ½) < k) of at least 95% (distribution-free); below 6 repeats no k "
        "reaches 95%, so it is [min, max], which covers 75% with 3 repeats and 93.75% with 5 "
        "(10 repeats: 97.8%). A speedup's or efficiency's interval divides the two points' "
        "intervals end to end, each aiming at √95%, and covers at least the product of their "
        "levels whatever the shape of the noise: 95.7% with 10 repeats, 87.8% with 5, 56.2% "
        "with 3 (its true coverage on noise like the CPU rows is higher, about 99% with 5, "
        "87% with 3); 7 repeats reach 95%. The gate's change of a point is the Hodges–Lehmann "
        "shift of the log throughput (the median of every current/baseline ratio of runs), "
        "with its Moses interval, exact when a change scales every run alike: 90% with 3 vs "
        "3 runs, 96.8% with 5 vs 5. Each label carries its level (rounded down). A single run "
        "has no interval: shown as a bare number.",
    ),
    (
        "Step-time percentiles",
        "step_time_s_p50, _p90 and _p99 pool every rank's measured steps: the median step and "
        "the slow tail (p99 of 100 steps is about the slowest one).",
    ),
    (
        "Rank spread",
        "step_time_s_rank_spread = slowest rank's median step time / fastest rank's: 1.00 means "
        "no straggler.",
    ),
    (
        "data_wait_share",
        "The share of the measured window spent waiting for the next batch (0 to 1): above a "
        "few percent the input pipeline, not the model, sets the pace.",
    ),
    (
        "mem_peak_gib",
        "The peak allocated device memory of a rank over the run, in GiB (torch's allocator; "
        "blank on CPU).",
    ),
    (
        "Loss",
        "loss_first and loss_last: the training loss of the measured window's first and last "
        "optimizer step (mean over ranks), a check that the run trained; held-out accuracy is "
        "what train reports.",
    ),
    (
        "Explain phase",
        "After the measured window (on unless a run sets explain = false) a few seconds measure "
        "what the window's own steps cannot show (the window's steps are timed from the "
        "inside for the decomposition, docs/why.md): compute-only steps under no_sync(), one "
        "all-reduce of the gradient's grad_bytes (the ceiling), and each of DDP's bucket_count "
        "buckets all-reduced at the ceiling, summed as allreduce_bucketed_time_s. "
        "explain_time_s is what the phase added to the run. At one rank the ceiling and what "
        "is compared with it are blank; the in-step figures are measured (DDP runs its reducer "
        "over a group of one).",
    ),
    (
        "Energy",
        "GPU boards only (CPUs, network and cooling are not in it): NVML's total-energy counter "
        "(nvmlDeviceGetTotalEnergyConsumption, mJ) of every GPU of the point, sampled beside it "
        "and interpolated at the measured window's edges; a board without the counter has its "
        "sampled power integrated over the window (trapezoid rule), and energy_method says which "
        "(counter, power_integral, or both when GPUs differ). energy_j sums the GPUs; "
        "energy_j_per_sample = energy_j / samples trained in the window (all ranks); "
        "samples_per_kwh = 3.6e6 / energy_j_per_sample; power_w_mean_per_gpu = energy_j / "
        "window seconds / GPUs. No NVML, a CPU point or a failed point: blank, with "
        "energy_unavailable_reason.",
    ),
    (
        "Memory model",
        "Per model, precision, sequence policy, max_length, compile and GPU count: peak memory "
        "= fixed + per-sample × per-device batch, a least-squares line over the ok runs' "
        "mem_peak_gib (CUDA only; two batch sizes at least), shown against the device's memory "
        "with the largest batch it predicts to fit.",
    ),
)


#: A bench-serve level is flagged when the other runs at its concurrency reached this many
#: times its requests/s (or it reached this many times theirs): one level at 4.7 requests/s
#: beside a rerun's 216 is a broken run or a busy machine, not the service's speed.
SERVING_OUTLIER_RATIO = 3.0

#: What a serving report's numbers mean (bench-serve rows, harness/bench_serve.py): a report of
#: a folder holding serving benchmarks prints these, not (only) the training terms above.
SERVING_DEFINITIONS: tuple[tuple[str, str], ...] = (
    (
        "Concurrency",
        "Requests in flight at once: N client tasks each send POST /predict back to back (a "
        "closed loop: a new request leaves as soon as that task's previous answer arrives), "
        "until the level has sent --requests requests or --max-seconds have passed.",
    ),
    (
        "requests/s",
        "Successful requests divided by the level's wall time (first send to last answer); "
        "texts/s = requests/s × texts per request.",
    ),
    (
        "Latency p50 / p95 / p99",
        "Percentiles of the end-to-end time of successful requests as the client sees it "
        "(request sent to the answer's last byte, queueing in the server included), in ms. "
        "Percentiles, not a mean: a service is judged by its slow tail.",
    ),
    (
        "Errors",
        "Requests that failed: an HTTP status other than 200, or a transport error. They count "
        "in requests, not in requests/s or the latencies.",
    ),
    (
        "Batch window",
        "The server's micro-batching window (serve --batch-window-ms): requests arriving "
        "within it share one forward pass; 0 is off.",
    ),
    (
        "Outlier level",
        f"A level whose requests/s is {SERVING_OUTLIER_RATIO:g}× or more off the median of the "
        "other runs at the same "
        "concurrency: flagged, since a broken run or a busy machine is likelier than the "
        "service changing speed.",
    ),
)


def markdown(width: int = 98, definitions: tuple[tuple[str, str], ...] | None = None) -> str:
    """The bullets of docs/metrics.md: ``- **term**: definition``, wrapped (``definitions``:
    another list of terms, e.g. the decomposition's for docs/why.md)."""
    import textwrap

    lines: list[str] = []
    for term, text in DEFINITIONS if definitions is None else definitions:
        lines += textwrap.wrap(
            f"**{term}**: {text}",
            width=width,
            initial_indent="- ",
            subsequent_indent="  ",
            break_on_hyphens=False,
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
