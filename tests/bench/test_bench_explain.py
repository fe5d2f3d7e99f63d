"""What the explain measurements cost: their seconds against a default CPU sweep point's wall time.

The point is the cpu-smoke sweep's 2-rank point (the default sweep on a machine without a GPU),
launched through real torchrun exactly as a sweep launches it; the worker records the seconds
its explain phase took (``explain_time_s``). Target: under 10% of the point's wall time.
Figures: ``pytest tests/bench/test_bench_explain.py --benchmark-enable -s`` (3 launches). The
default test run does not launch it: tests/distributed/test_sweep.py's default-sweep test runs
this same point and holds it to the same target, so a fourth launch would add only CPU.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import pytest

from harness.spec import Resources, load_builtin

pytestmark = pytest.mark.slow


def _smoke_point():
    sweep = load_builtin("cpu-smoke")
    specs = [p.spec for p in sweep.expand(Resources()) if p.spec.world_size == 2]
    assert specs, "cpu-smoke has a 2-rank point"
    return specs[0]


def test_bench_explain_share_of_a_cpu_smoke_point(benchmark, bench_report, tmp_path):
    if not benchmark.enabled:
        pytest.skip("a figure only with --benchmark-enable; the default-sweep test checks it")
    spec = _smoke_point()
    assert spec.explain  # on by default
    shares: list[float] = []

    def launch() -> None:
        out = tmp_path / f"run{len(shares)}"
        out.mkdir()
        (out / "run.json").write_text(spec.to_json())
        argv = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0",
            "-m", "distrinews.worker", "--spec", str(out / "run.json"), "--out", str(out),
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        wall = time.perf_counter() - t0
        assert proc.returncode == 0, proc.stderr[-2000:]
        m = json.loads((out / "record.json").read_text())["metrics"]
        shares.append(m["explain_time_s"] / wall)
        print(f"\n[bench] point wall {wall:.2f} s, explain {m['explain_time_s']:.3f} s")

    benchmark.pedantic(launch, rounds=3, iterations=1)
    share = statistics.median(shares)
    bench_report(benchmark, "explain_share_of_cpu_smoke_point_pct", share * 100, "%")
    assert share < 0.10
