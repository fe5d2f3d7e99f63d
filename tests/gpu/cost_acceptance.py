"""One-GPU cost acceptance: energy per sample (bf16 vs fp32) and the largest batch that fits.

Runs through the real sweep machinery (torchrun, the worker, the NVML sampler with its energy
counter) on the first GPU, DistilBERT-base shape, random init, synthetic data, 128 tokens:

1. a sweep of bf16 and fp32 at per-device batch 256: J/sample, samples/kWh, W per GPU, and
   how the energy was measured (``counter`` on any Volta or newer board);
2. the largest-batch search for bf16 with fixed 128-token padding, from batch 256: the largest
   batch that ran, the smallest that ran out of memory, the trials and how long it took.

Prints both and writes ``summary.json`` (plus the sweep folders and report.html) under
``--out``::

    python tests/gpu/cost_acceptance.py --out results/gpu-cost

About 5 minutes on an H100 (the search is ~10 short launches).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ENERGY_SWEEP = """
name = "energy"
timeout_s = {timeout_s}
[run]
device = "cuda"
model = "base"
init = "random"
data = "synthetic"
max_length = 128
seq_policy = "fixed"
per_device_batch = 256
warmup_steps = {warmup}
measured_steps = {steps}
[axes]
gpus_per_node = [1]
precision = ["bf16", "fp32"]
"""

SEARCH_SWEEP = """
name = "max-batch"
timeout_s = {timeout_s}
[run]
device = "cuda"
model = "base"
init = "random"
data = "synthetic"
max_length = 128
seq_policy = "fixed"
precision = "bf16"
per_device_batch = 256
warmup_steps = 1
measured_steps = 2
[axes]
gpus_per_node = [1]
[max_batch]
search = true
max_trials = {max_trials}
budget_s = {budget_s}
trial_steps = 2
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu-cost"))
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--max-trials", type=int, default=12)
    parser.add_argument("--budget-s", type=float, default=900)
    parser.add_argument("--timeout-s", type=int, default=600)
    args = parser.parse_args()

    import torch

    from harness import max_batch, spec, store
    from harness import sweep as sw
    from harness.report import render_report

    if not torch.cuda.is_available():
        print("no CUDA device: this acceptance needs one GPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    options = sw.SweepOptions(results=args.out, progress=False)

    energy_spec = spec.parse_sweep(
        ENERGY_SWEEP.format(timeout_s=args.timeout_s, warmup=args.warmup, steps=args.steps),
        source="energy",
    )
    energy_dir = sw.run_sweep(energy_spec, options).sweep_dir
    energy_rows = []
    for row in store.latest_by_run_id(store.read_ledger(energy_dir)).values():
        energy_rows.append(
            {
                k: row.get(k)
                for k in (
                    "precision",
                    "status",
                    "reason",
                    "samples_per_s",
                    "energy_j_per_sample",
                    "samples_per_kwh",
                    "power_w_mean_per_gpu",
                    "energy_method",
                    "energy_unavailable_reason",
                    "mem_peak_gib",
                )
            }
        )
    render_report(energy_dir)

    search_spec = spec.parse_sweep(
        SEARCH_SWEEP.format(
            timeout_s=args.timeout_s, max_trials=args.max_trials, budget_s=args.budget_s
        ),
        source="max-batch",
    )
    search_dir = sw.run_sweep(search_spec, options).sweep_dir
    searches = max_batch.read_results(search_dir)
    render_report(search_dir)

    by_precision = {r["precision"]: r for r in energy_rows}
    bf16, fp32 = by_precision.get("bf16", {}), by_precision.get("fp32", {})
    ratio = None
    if bf16.get("energy_j_per_sample") and fp32.get("energy_j_per_sample"):
        ratio = fp32["energy_j_per_sample"] / bf16["energy_j_per_sample"]
    summary = {
        "gpu": torch.cuda.get_device_name(0),
        "energy": energy_rows,
        "fp32_over_bf16_energy_per_sample": ratio,
        "max_batch": [
            {
                k: s.get(k)
                for k in (
                    "largest_batch_ok",
                    "smallest_batch_oom",
                    "exact",
                    "stopped",
                    "reason",
                    "trials",
                    "trial_log",
                    "search_s",
                )
            }
            for s in searches
        ],
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"GPU: {summary['gpu']}")
    for r in energy_rows:
        print(
            f"{r['precision']:>5} batch 256: {r['status']}  samples/s {r['samples_per_s']}  "
            f"J/sample {r['energy_j_per_sample']}  samples/kWh {r['samples_per_kwh']}  "
            f"W/GPU {r['power_w_mean_per_gpu']}  ({r['energy_method']}"
            f"{'; ' + r['energy_unavailable_reason'] if r['energy_unavailable_reason'] else ''})"
        )
    if ratio is not None:
        print(f"fp32 costs {ratio:.2f}x the energy per sample of bf16")
    for s in searches:
        print(
            f"largest batch, base bf16 fixed@128: {s['largest_batch_ok']} (next out of memory: "
            f"{s['smallest_batch_oom']}, {s['stopped']}, {s['trials']} trials, "
            f"{s['search_s']:.0f} s): {s['trial_log']}"
        )
    print(f"summary: {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
