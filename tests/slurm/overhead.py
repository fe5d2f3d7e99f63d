"""Figures of the SLURM path on this machine: per-point overhead and sbatch latency.

    python -m tests.slurm.overhead --repeats 3 --sbatch-runs 3 --out /tmp/slurm-overhead

Needs a running cluster (``bash .ci/local-cluster.sh up``). Prints medians:

* per point, the launcher's wall time (``duration_s`` in the ledger: from starting the
  launcher to its exit) of the same tiny CPU point through local torchrun and through
  srun + torchrun inside ``salloc -N2``; the difference is what srun (step creation, task
  launch on the node, a c10d rendezvous on n1 instead of --standalone) adds;
* per point, the sweep's whole wall time divided by its points (adds the per-node telemetry
  step and the ledger/record handling around each point);
* the bare cost of one job step: ``srun`` of ``true`` on both nodes, as each point pays it twice
  (its training step and its telemetry step);
* for ``distrinews-bench sbatch cpu-2node``: seconds from ``sbatch`` to the first ledger row and
  to the rendered report.

On a busy machine the per-point figures carry its noise (compare the local repeats' spread);
the bare step cost is the part srun adds for certain.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from harness import store

SWEEP = """
name = "{name}"
repeats = {repeats}
timeout_s = 300
[run]
device = "cpu"
model = "tiny"
data = "synthetic:256"
max_length = 32
per_device_batch = 4
precision = "fp32"
warmup_steps = 1
measured_steps = 2
[axes]
nodes = [1, 2]
gpus_per_node = [1, 2]
"""


def _sweep(prefix: list[str], sweep_file: Path, results: Path, launcher: str) -> float:
    start = time.monotonic()
    subprocess.run(
        [*prefix, sys.executable, "-m", "harness.cli", "sweep", str(sweep_file), "--results",
         str(results), "--launcher", launcher, "--no-progress"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.monotonic() - start


def _durations(sweep_dir: Path) -> dict[tuple[int, int], list[float]]:
    out: dict[tuple[int, int], list[float]] = defaultdict(list)
    for row in store.read_ledger(sweep_dir):
        if row["status"] == "ok":
            out[(row["nodes"], row["nproc_per_node"])].append(row["duration_s"])
    return out


def per_point(out: Path, repeats: int) -> None:
    sweep_file = out / "overhead.toml"
    sweep_file.write_text(SWEEP.format(name="overhead", repeats=repeats))
    local_wall = _sweep([], sweep_file, out / "local", "local")
    slurm_wall = _sweep(["salloc", "-N2", "--time=30"], sweep_file, out / "slurm", "slurm")
    local = _durations(out / "local" / "overhead")
    slurm = _durations(out / "slurm" / "overhead")
    print(f"per point (median of {repeats}; launcher wall time, duration_s):")
    for key in sorted(slurm):
        s = statistics.median(slurm[key])
        line = f"  {key[0]} node(s) x {key[1]} rank(s): srun+torchrun {s:6.2f} s"
        if key in local:
            loc = statistics.median(local[key])
            line += f"   local torchrun {loc:6.2f} s   overhead {s - loc:+.2f} s"
        print(line)
    n_local = sum(len(v) for v in local.values())
    n_slurm = sum(len(v) for v in slurm.values())
    print(
        f"sweep wall per point: local {local_wall / n_local:.2f} s ({n_local} points), "
        f"slurm {slurm_wall / n_slurm:.2f} s ({n_slurm} points, incl. the telemetry step)"
    )


STEP_TIMER = """
import statistics, subprocess, time
argv = ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "true"]
times = []
for _ in range({n}):
    start = time.monotonic()
    subprocess.run(argv, check=True)
    times.append(time.monotonic() - start)
print(f"one job step (srun true on 2 nodes, median of {n}): {{statistics.median(times):.3f}} s")
"""


def step_launch(n: int) -> None:
    subprocess.run(
        ["salloc", "-N2", "--time=5", sys.executable, "-c", STEP_TIMER.format(n=n)], check=True
    )


def sbatch_latency(out: Path, runs: int) -> None:
    firsts, reports = [], []
    for i in range(runs):
        work = out / f"sbatch{i}"
        work.mkdir(parents=True)
        subprocess.run(
            [sys.executable, "-m", "harness.cli", "sbatch", "cpu-2node", "--nodes", "2",
             "--time", "15", "-o", "job.sbatch"],
            cwd=work, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        start = time.monotonic()
        job = subprocess.run(
            ["sbatch", "--parsable", "job.sbatch"], cwd=work, check=True, capture_output=True,
            text=True,
        ).stdout.strip()  # fmt: skip
        sweep_dir = work / "results" / "cpu-2node"
        first = None
        deadline = start + 600
        while time.monotonic() < deadline:
            if first is None and store.read_ledger(sweep_dir):
                first = time.monotonic() - start
            if (sweep_dir / "report.html").is_file():
                break
            time.sleep(0.1)
        else:
            subprocess.run(["scancel", job], check=False)
            raise SystemExit(f"job {job}: no report within 600 s")
        reports.append(time.monotonic() - start)
        firsts.append(first if first is not None else reports[-1])
        while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout:
            time.sleep(0.2)
    print(
        f"sbatch cpu-2node (median of {runs}): first ledger row {statistics.median(firsts):.1f} s"
        f" after sbatch, rendered report {statistics.median(reports):.1f} s "
        f"(runs: {', '.join(f'{f:.1f}/{r:.1f}' for f, r in zip(firsts, reports, strict=True))})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="An empty or new folder.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sbatch-runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="Bare srun steps to time.")
    parser.add_argument(
        "--only", choices=("points", "steps", "sbatch"), default=None, help="One figure only."
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "points"):
        per_point(args.out, args.repeats)
    if args.only in (None, "steps"):
        step_launch(args.steps)
    if args.only in (None, "sbatch"):
        sbatch_latency(args.out, args.sbatch_runs)


if __name__ == "__main__":
    main()
