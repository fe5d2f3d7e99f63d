"""Measure the regression gate on this machine: fresh sweeps against a committed baseline.

    python -m harness.tools.gate_trials results/baselines/cpu-smoke --trials 10 --work /tmp/gt

Each trial runs a fresh ``distrinews-bench sweep`` of the baseline's sweep (its sweep.json name,
a built-in) into its own folder and asks ``compare`` three questions, printing one line per
trial and a summary:

- baseline vs fresh: must exit 0 (a healthy tree; exit 1 is a *false regression*);
- fresh vs fresh with a planted 20% slowdown (harness.tools.perturb): must exit 1 (caught);
- baseline vs the slowed fresh sweep: should exit 1 (caught against the committed baseline).

The load average before each sweep is printed: on a shared box it says how much the noise had
to fight. Nothing here is mocked: these are the real CLI commands CI runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from distrinews import layout


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def _verdict(done: subprocess.CompletedProcess[str]) -> str:
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("VERDICT:")), "")
    return f"exit {done.returncode} {line.removeprefix('VERDICT: ')}".strip()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("baseline", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--trials", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--scale", type=float, default=0.8, show_default=True, help="Planted slowdown.")
def main(baseline: Path, trials: int, work: Path, scale: float) -> None:
    """Run TRIALS fresh sweeps and gate each against BASELINE and a planted slowdown."""
    name = json.loads((baseline / layout.SWEEP_JSON).read_text())["name"]
    bench = [sys.executable, "-m", "harness.cli"]
    false_regressions = caught_self = caught_base = 0
    for i in range(trials):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        root = work / f"trial-{i}"
        done = _run(*bench, "sweep", name, "--results", str(root), "--no-progress")
        if done.returncode != 0:
            raise click.ClickException(f"trial {i}: sweep failed: {done.stderr[-400:]}")
        fresh = root / name
        slow = work / f"slow-{i}"
        _run(sys.executable, "-m", "harness.tools.perturb", str(fresh), str(slow),
             "--throughput-scale", str(scale))  # fmt: skip
        vs_base = _run(*bench, "compare", str(baseline), str(fresh))
        vs_self = _run(*bench, "compare", str(fresh), str(slow))
        base_slow = _run(*bench, "compare", str(baseline), str(slow))
        false_regressions += vs_base.returncode == 1
        caught_self += vs_self.returncode == 1
        caught_base += base_slow.returncode == 1
        rates = [
            json.loads(line)["samples_per_s"]
            for line in (fresh / layout.LEDGER_NAME).read_text().splitlines()
        ]
        click.echo(
            f"trial {i}: load {load:.1f}, sweep {time.perf_counter() - t0:.0f} s, "
            f"samples/s {min(rates):.0f}..{max(rates):.0f} | baseline vs fresh: "
            f"{_verdict(vs_base)} | fresh vs slowed: {_verdict(vs_self)} | "
            f"baseline vs slowed: {_verdict(base_slow)}"
        )
    click.echo(
        f"{trials} trials: {false_regressions} false regression(s) against the baseline; planted "
        f"{1 - scale:.0%} slowdown caught {caught_self}/{trials} against the same sweep and "
        f"{caught_base}/{trials} against the baseline"
    )


if __name__ == "__main__":
    main()
