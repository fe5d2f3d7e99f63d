"""harness.tools.gate_trials: tolerances chosen on some sessions, judged on others (fake sweeps
with known session offsets, so every count has a right answer)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from distrinews.errors import UserError
from harness import analysis, compare
from harness.tools import gate_trials as G
from harness.tools import pool
from tests.helpers_results import FakeSweep, write_sweep


def session(root: Path, seed: int, offset: float) -> Path:
    """A 1- and 2-rank sweep of 5 repeats whose whole session runs ``offset`` x the machine."""
    spec = FakeSweep(world_sizes=(1, 2), batches=(16,), precisions=("bf16",), repeats=5,
                     cv=0.02, seed=seed, throughput_scale=offset, failures=False,
                     telemetry=False, records=False)  # fmt: skip
    return write_sweep(root / f"s{seed}", spec)


CHOOSE = (1.0, 0.95, 1.05, 0.98, 1.02)


def test_choose_takes_the_largest_leave_one_out_stray_plus_the_margin(tmp_path):
    paths = [session(tmp_path, k, o) for k, o in enumerate(CHOOSE)]
    out = G.choose([G.load_session(p) for p in paths])
    strays = [r["stray"] for r in out["sessions"]]
    # The slow session (0.95) against the pool of the others (about 1.01): a clear 6% drop.
    assert 0.04 < strays[1] < 0.08 and strays[1] == max(strays)
    # Recompute that stray with the gate itself: the session's largest significant drop.
    others = G.pooled([G.load_session(p) for k, p in enumerate(paths) if k != 1])
    result = compare.compare(others, compare.load_side(paths[1]),
                             compare.GateSettings(rtol=0.0, efficiency_tol_pp=0.0))  # fmt: skip
    regressed = result.points[result.points["verdict"] == "regressed"]
    assert strays[1] == pytest.approx(-regressed["change"].min())
    assert out["rtol"] == pytest.approx(math.ceil(strays[1] * 100) / 100 + 0.01)
    # Faster sessions never count as strays (a speedup is not a false regression).
    assert strays[2] == 0.0
    with pytest.raises(UserError, match="at least three"):
        G.choose([G.load_session(p) for p in paths[:2]])


def test_judge_counts_false_alarms_and_power_on_unseen_sessions(tmp_path):
    choose = [session(tmp_path / "c", k, o) for k, o in enumerate(CHOOSE)]
    base_dir = tmp_path / "baseline"
    pool.pool(base_dir, choose)
    # Judging sessions: two healthy ones and one whose session ran 15% slow (a planted stray).
    judged = [session(tmp_path / "j", 10 + k, o) for k, o in enumerate((1.01, 0.97, 0.85))]
    base = compare.load_side(base_dir)
    out = G.judge(base, [G.load_session(p) for p in judged], compare.GateSettings(rtol=0.08))
    assert [r["false_alarm"] for r in out["sessions"]] == [False, False, True]
    assert out["false_alarms"]["count"] == 1 and out["false_alarms"]["of"] == 3
    assert out["false_alarms"]["ci95"] == list(analysis.proportion_interval(1, 3))
    # Planted 20%: caught in all three; 10%: caught where the session's own offset does not
    # hide it behind the 8% threshold (1.01 x 0.9 = -9%, 0.97 x 0.9 = -13%: both caught).
    assert out["power_20%"]["count"] == 3 and out["power_10%"]["count"] == 3
    assert out["ci_self_check"]["count"] == 3  # a session against its own x0.8 copy
    loose = G.judge(base, [G.load_session(p) for p in judged], compare.GateSettings(rtol=0.11))
    assert loose["power_10%"]["count"] == 2  # 1.01 x 0.9 = -9% hides inside 11%, -13% does not
    assert loose["false_alarms"]["count"] == 1


def test_proportion_interval_is_clopper_pearson():
    assert analysis.proportion_interval(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    lo, hi = analysis.proportion_interval(9, 10)
    assert (lo, hi) == pytest.approx((0.5550, 0.99747), abs=1e-4)  # published table values
    assert analysis.proportion_interval(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0))
    assert all(math.isnan(v) for v in analysis.proportion_interval(0, 0))


def test_cli_choose_and_judge_refuse_judging_on_the_pooled_sessions(tmp_path):
    choose = [session(tmp_path / "c", k, o) for k, o in enumerate(CHOOSE[:3])]
    runner = CliRunner()
    r = runner.invoke(G.main, ["choose", "--json", *map(str, choose)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["rtol"] > 0
    base_dir = tmp_path / "baseline"
    pool.pool(base_dir, choose)
    r = runner.invoke(G.main, ["judge", str(base_dir), str(choose[0]), "--rtol", "0.1"])
    assert r.exit_code == 2 and "pooled from it" in r.output
    fresh = session(tmp_path / "j", 20, 1.0)
    r = runner.invoke(G.main, ["judge", str(base_dir), str(fresh), "--rtol", "0.1"])
    assert r.exit_code == 0, r.output
    assert "false alarms: 0/1" in r.output and "planted 20% slowdown caught: 1/1" in r.output


def test_max_load_keeps_only_quiet_sessions_and_says_why(tmp_path):
    paths = [session(tmp_path, k, 1.0) for k in range(3)]
    for p, start, end in zip(paths, (1.5, 1.6, 4.8), (1.4, 3.1, 4.9), strict=True):
        env = json.loads((p / "env.json").read_text())
        env.update(load_avg_start=[start, 1.0, 1.0], load_avg_end=[end, 1.0, 1.0])
        (p / "env.json").write_text(json.dumps(env))
    sessions = [G.load_session(p) for p in paths]
    kept, dropped = G.quiet(sessions, 2.5)
    assert [s.path for s in kept] == paths[:1]
    assert dropped == [f"{paths[1]}: left out (load 3.1 > 2.5)",
                       f"{paths[2]}: left out (load 4.9 > 2.5)"]  # fmt: skip
    assert G.quiet(sessions, None) == (sessions, [])
