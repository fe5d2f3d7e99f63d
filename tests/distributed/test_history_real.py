"""The history end to end on real sweeps: five nights of a real 2-rank point (torchrun, the real
worker, gloo on CPU), a real planted slowdown switched on from the fourth night (``fault =
"slow_data"``: every batch fetch sleeps), each night ingested, and the change found at that
sweep with the changed fields named.

The launch model is the synthetic-sleep one (tests/helpers_procs.py), a step of ~10 ms. Five
nights leave the detector's t-test three degrees of freedom, and a shared 2-core box strays by
up to 40% from one night to the next, so the planted cause is large -- 300 ms per batch -- and
the test runs at the default significance level (0.001). Five launches is the fewest that can
pass it; the precision/recall of smaller steps over longer series is measured on real rows by
tests/bench/history_eval.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import spec
from harness import sweep as sw
from harness.cli import cli
from tests.helpers_procs import LAUNCH_MODEL

pytestmark = pytest.mark.scenario

SWEEP = """
name = "nightly"
repeats = 1

[run]
device = "cpu"
model = "{model}"
data = "synthetic:256"
max_length = 32
per_device_batch = 4
precision = "fp32"
warmup_steps = 1
measured_steps = 4
explain = false
fault = "{fault}"
fault_ms = {fault_ms}

[axes]
gpus_per_node = [2]
"""


def _night(tmp_path: Path, night: int, *, slow: bool) -> Path:
    path = tmp_path / f"night{night}.toml"
    fault = ("slow_data", 300.0) if slow else ("none", 0.0)
    path.write_text(SWEEP.format(model=LAUNCH_MODEL, fault=fault[0], fault_ms=fault[1]))
    options = sw.SweepOptions(results=tmp_path / f"n{night}", progress=False)
    result = sw.run_sweep(spec.load_sweep(path), options, echo=lambda _m: None)
    assert result.statuses == {"ok": 1}, result
    return result.sweep_dir


@pytest.mark.slow(seconds=65)
def test_a_real_planted_slowdown_is_found_at_its_sweep_with_the_fault_named(tmp_path):
    folders = [_night(tmp_path, n, slow=n >= 3) for n in range(5)]
    db = tmp_path / "history.db"
    run = CliRunner().invoke
    done = run(cli, ["history", "ingest", *map(str, folders), "--db", str(db)])
    assert done.exit_code == 0, done.output
    out = run(cli, ["history", "changes", "--db", str(db), "--format", "json"])
    assert out.exit_code == 0, out.output
    (change,) = json.loads(out.output)["changes"]
    assert change["sweep_dir"] == str(folders[3].resolve())
    assert change["world_size"] == 2 and change["kind"] == "regression"
    assert change["change_pct"] < -80  # a 300 ms sleep per batch on a step of ~10 ms
    assert change["what_changed"]["fault"] == ["none", "slow_data"]
    assert change["what_changed"]["fault_ms"] == [0.0, 300.0]
    # The CI verdict: the fourth night opens the regression (exit 1), the fifth does not.
    verdict = run(cli, ["history", "check", str(folders[3]), "--db", str(db)])
    assert verdict.exit_code == 1, verdict.output
    assert "regression" in verdict.output and "fault: none -> slow_data" in verdict.output
    calm = run(cli, ["history", "check", str(folders[4]), "--db", str(db)])
    assert calm.exit_code == 0, calm.output
