"""One-GPU throughput acceptance: the worker vs Hugging Face Trainer, same model/data/batch.

DistilBERT-base shape, random init, bf16, per-device batch 256, synthetic data with AG News'
length distribution. Runs, each in a fresh process:

1. worker, fixed length 128            (target >= 12,000 samples/s, ~40% MFU on an H100)
2. worker, dynamic padding + length grouping   (target >= 25,000 samples/s)
3. the same two with torch.compile
4. transformers.Trainer, fixed and dynamic padding (tests/gpu/hf_trainer_baseline.py)

and prints samples/s, MFU, peak memory and the worker / Trainer ratios (target >= 2x)::

    python tests/gpu/acceptance.py --out results/gpu-acceptance

Each worker run leaves its record.json under ``--out``; ``summary.json`` holds the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_worker(out: Path, name: str, timeout_s: int, **fields) -> dict:
    from distrinews.runspec import RunSpec

    spec = RunSpec(device="cuda", model="base", init="random", precision="bf16",
                   per_device_batch=256, max_length=128, data="synthetic", **fields)  # fmt: skip
    point = out / name
    point.mkdir(parents=True, exist_ok=True)
    (point / "run.json").write_text(spec.to_json())
    cmd = [sys.executable, "-m", "distrinews.worker", "--spec", str(point / "run.json"),
           "--out", str(point)]  # fmt: skip
    proc = subprocess.run(cmd, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        error = point / "error.json"
        return {"name": name, "error": json.loads(error.read_text()) if error.exists() else None}
    rec = json.loads((point / "record.json").read_text())
    m = rec["metrics"]
    return {
        "name": name,
        "samples_per_s": m["samples_per_s"],
        "real_tokens_per_s": m["real_tokens_per_s"],
        "padded_tokens_per_s": m["padded_tokens_per_s"],
        "mfu": m["mfu"],
        "hfu": m["hfu"],
        "mem_peak_gib": m["mem_peak_gib"],
        "step_time_s_p50": m["step_time_s_p50"],
        "data_wait_share": m["data_wait_share"],
        "gpu_name": rec["env"]["gpu_name"],
    }


def run_hf(out: Path, seq_policy: str, warmup: int, steps: int, timeout_s: int) -> dict:
    dest = out / f"hf-{seq_policy}.json"
    cmd = [
        sys.executable, str(HERE / "hf_trainer_baseline.py"), "--seq-policy", seq_policy,
        "--batch", "256", "--warmup", str(warmup), "--steps", str(steps), "--out", str(dest),
    ]  # fmt: skip
    proc = subprocess.run(cmd, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        return {"name": f"hf-{seq_policy}", "error": f"exit {proc.returncode}"}
    return {"name": f"hf-{seq_policy}", **json.loads(dest.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu-acceptance"))
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled runs")
    parser.add_argument("--no-hf", action="store_true", help="skip the Trainer baseline")
    parser.add_argument("--timeout-s", type=int, default=900)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    common = {"warmup_steps": args.warmup, "measured_steps": args.steps}
    rows = [
        run_worker(args.out, "worker-fixed", args.timeout_s, seq_policy="fixed", **common),
        run_worker(args.out, "worker-dynamic", args.timeout_s, seq_policy="dynamic", **common),
    ]
    if not args.no_compile:
        # compile: more warmup, the first steps (and each new dynamic width) compile kernels
        more = {"warmup_steps": max(args.warmup, 30), "measured_steps": args.steps}
        for policy in ("fixed", "dynamic"):
            name = f"worker-{policy}-compile"
            rows.append(
                run_worker(args.out, name, args.timeout_s, seq_policy=policy, compile=True, **more)
            )
    if not args.no_hf:
        for policy in ("fixed", "dynamic"):
            rows.append(run_hf(args.out, policy, args.warmup, args.steps, args.timeout_s))
    by_name = {r["name"]: r for r in rows}
    for policy in ("fixed", "dynamic"):
        hf = by_name.get(f"hf-{policy}", {}).get("samples_per_s")
        for name in (f"worker-{policy}", f"worker-{policy}-compile"):
            row = by_name.get(name)
            if row and hf and "samples_per_s" in row:
                row["ratio_vs_hf_trainer"] = row["samples_per_s"] / hf
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    print(f"{'run':26} {'samples/s':>10} {'MFU':>6} {'HFU':>6} {'mem GiB':>8} {'vs HF':>6}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:26} FAILED {r['error']}")
            continue
        mfu, hfu = r.get("mfu"), r.get("hfu")
        ratio = r.get("ratio_vs_hf_trainer")
        print(
            f"{r['name']:26} {r['samples_per_s']:10.0f} "
            f"{'' if mfu is None else f'{mfu:.1%}':>6} {'' if hfu is None else f'{hfu:.1%}':>6} "
            f"{r.get('mem_peak_gib') or 0:8.2f} {'' if ratio is None else f'{ratio:.2f}x':>6}"
        )


if __name__ == "__main__":
    main()
