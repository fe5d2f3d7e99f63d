"""harness.compare: the regression gate on synthetic sweeps with known noise, and the CLI."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from distrinews import layout
from distrinews.errors import UserError
from harness import compare, store
from harness.cli import cli
from harness.tools import perturb
from tests.helpers_results import FakeSweep, write_sweep

SMALL = {"world_sizes": (1, 2, 4), "batches": (16, 32), "precisions": ("bf16",)}


def sweep(root: Path, **kw) -> Path:
    return write_sweep(root, FakeSweep(**{**SMALL, "telemetry": False, "records": False, **kw}))


def lognormal(rng: np.random.Generator, n: int, cv: float, scale: float = 1000.0) -> np.ndarray:
    sigma = math.sqrt(math.log1p(cv**2))
    return scale * rng.lognormal(-(sigma**2) / 2, sigma, n)


# -- statistics ------------------------------------------------------------------------------


def test_mann_whitney_exact_matches_enumeration():
    x = np.array([1.0, 3.0, 5.0, 6.0])
    y = np.array([2.0, 4.0, 7.0, 8.0, 9.0])
    # Enumerate every split of the pooled values: the exact null of U.
    pooled = np.concatenate([x, y])
    u_obs = compare.mann_whitney_u(x, y)
    us = [
        compare.mann_whitney_u(pooled[list(idx)], np.delete(pooled, list(idx)))
        for idx in combinations(range(len(pooled)), len(x))
    ]
    expected = np.mean([u <= u_obs for u in us])
    assert compare.mann_whitney_p(x, y, "less") == pytest.approx(expected)
    assert compare.mann_whitney_p(x, y, "greater") == pytest.approx(
        np.mean([u >= u_obs for u in us])
    )


def agrees_near_alpha(p: float, exact: float) -> bool:
    """Within 1% of the exact p (relative): where the gate decides (p near alpha = 0.05) an
    approximation must agree this well, or a point flips verdict."""
    return abs(p - exact) <= 0.01 * exact


def _normal_approximation(x: np.ndarray, y: np.ndarray, monkeypatch) -> float:
    """The approximation's p for the same data the exact test sees (limit lowered to 0)."""
    with monkeypatch.context() as m:
        m.setattr(compare, "EXACT_LIMIT", 0)
        return compare.mann_whitney_p(x, y, "less")


def test_mann_whitney_extremes_and_normal_approximation(monkeypatch):
    lo, hi = np.arange(5.0), np.arange(5.0) + 10
    assert compare.mann_whitney_p(lo, hi, "less") == pytest.approx(1 / 252, rel=1e-12)
    assert compare.min_p_value(5, 5) == pytest.approx(1 / 252, rel=1e-12)
    assert compare.min_p_value(2, 2) == pytest.approx(1 / 6)  # why 2 vs 2 falls back
    # Above 60 values the gate uses the normal approximation. Near alpha it matches the exact
    # p (30 vs 30 runs whose exact one-sided p is 0.0399 and 0.0691).
    for seed, shift in ((1, 0.45), (1, 0.4)):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(0, 1, 30), rng.normal(shift, 1, 30)
        exact = compare.mann_whitney_p(x, y, "less")
        assert 0.03 < exact < 0.08
        assert agrees_near_alpha(_normal_approximation(x, y, monkeypatch), exact)


def test_the_p_value_check_fails_a_planted_wrong_answer(monkeypatch):
    """The planted twin: a two-sided p, the wrong tail, or an approximation without its
    continuity correction all fail the check above (a tolerance of 0.02 absolute passed them
    all at p near 5e-4)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, 30), rng.normal(0.45, 1, 30)
    exact = compare.mann_whitney_p(x, y, "less")
    assert not agrees_near_alpha(2 * exact, exact)  # two-sided
    assert not agrees_near_alpha(compare.mann_whitney_p(x, y, "greater"), exact)  # wrong tail
    u, var = compare.mann_whitney_u(x, y), 30 * 30 * 61 / 12
    no_correction = 0.5 * (1 + math.erf((u - 450) / math.sqrt(2 * var)))
    assert not agrees_near_alpha(no_correction, exact)
    assert agrees_near_alpha(_normal_approximation(x, y, monkeypatch), exact)


def test_planted_ten_percent_drop_with_five_repeats_is_caught():
    rng = np.random.default_rng(42)
    base, cur = lognormal(rng, 5, 0.03), lognormal(rng, 5, 0.03, scale=900.0)
    out = compare.judge_point(base, cur, compare.GateSettings())
    assert out["verdict"] == "regressed"
    assert out["change"] < -0.05 and out["p_value"] <= 0.05
    assert out["method"].startswith("Mann-Whitney")


def _rates(drop: float, cv: float, trials: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    settings = compare.GateSettings()
    verdicts = [
        compare.judge_point(
            lognormal(rng, 5, cv), lognormal(rng, 5, cv, scale=1000.0 * (1 - drop)), settings
        )["verdict"]
        for _ in range(trials)
    ]
    return {v: verdicts.count(v) / trials for v in ("regressed", "improved", "unchanged")}


@pytest.mark.parametrize("cv", [0.02, 0.03])
def test_detection_power_and_false_alarm_rate(cv):
    """1,000 seeded trials each: a 10% drop with 5 vs 5 repeats, and identical distributions."""
    power = _rates(0.10, cv, 1000, seed=1)["regressed"]
    null = _rates(0.0, cv, 1000, seed=2)
    print(
        f"\ncv={cv:.0%}: detection power of a 10% drop (5 vs 5 repeats) = {power:.1%}; "
        f"false regressions = {null['regressed']:.1%}, any false change = "
        f"{null['regressed'] + null['improved']:.1%} over 1,000 identical comparisons"
    )
    assert power >= 0.95
    assert null["regressed"] <= 0.01


def test_single_runs_never_call_a_regression_they_cannot_support():
    s = compare.GateSettings(rtol=0.05)
    out = compare.judge_point(np.array([1000.0]), np.array([580.0]), s)  # -42%, one run each
    assert out["verdict"] == "inconclusive" and "no test (single run" in out["method"]
    assert out["change"] == pytest.approx(-0.42)
    out = compare.judge_point(np.array([1000.0]), np.array([970.0]), s)
    assert out["verdict"] == "unchanged"
    out = compare.judge_point(np.array([1000.0, 1001.0]), np.array([900.0, 901.0]), s)
    assert out["verdict"] == "inconclusive" and "2 vs 2 runs" in out["method"]
    # Three repeats a side can reach alpha = 0.05: the same drop is then a regression.
    out = compare.judge_point(np.array([1000.0, 1001.0, 1002.0]), np.array([900.0, 901, 902]), s)
    assert out["verdict"] == "regressed"


def test_single_run_sweeps_exit_0_and_say_why(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=1, failures=False)
    slow = tmp_path / "slow"
    perturb.perturb(b, slow, scale=0.6)
    r = invoke(str(b), str(slow))
    assert r.exit_code == 0, r.output
    assert "inconclusive" in r.output and "repeats >= 3" in r.output
    assert "VERDICT: INCONCLUSIVE" in r.output


def test_small_change_inside_noise_is_unchanged_even_if_significant():
    s = compare.GateSettings(rtol=0.05)
    base = np.array([1000.0, 1001.0, 1002.0, 1003.0, 1004.0])
    out = compare.judge_point(base, base * 0.98, s)  # every current run slower, but only 2%
    assert out["p_value"] <= 0.05 and out["verdict"] == "unchanged"


# -- whole sweeps ----------------------------------------------------------------------------


def test_same_distribution_sweeps_are_unchanged(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=5)
    c = sweep(tmp_path / "c", seed=2, repeats=5)
    result = compare.compare(compare.load_side(b), compare.load_side(c))
    assert result.verdict == "unchanged", compare.render_text(result)
    assert len(result.curves) > 0
    assert not result.regressed


def test_planted_slowdown_regresses_every_point_but_not_efficiency(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=5, failures=False)
    slow = sweep(tmp_path / "c", seed=2, repeats=5, failures=False, throughput_scale=0.8)
    result = compare.compare(compare.load_side(b), compare.load_side(slow))
    assert result.regressed
    assert set(result.points["verdict"]) == {"regressed"}
    assert (result.points["change"] < -0.15).all()
    assert (result.points["change_hi"] < 0).all()  # the interval excludes no-change
    assert set(result.curves["verdict"]) == {"unchanged"}  # uniform slowdown: same efficiency


def test_efficiency_regression_is_gated_in_percentage_points(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=5, failures=False)
    dst = tmp_path / "slow4"
    perturb.perturb(b, dst, scale=0.85, min_world_size=4)  # only the 4-GPU points slow down
    result = compare.compare(compare.load_side(b), compare.load_side(dst))
    curves = result.curves
    at4 = curves[curves["world_size"] == 4]
    assert set(at4["verdict"]) == {"regressed"}
    assert (at4["change_pp"] < -10).all() and (at4["change_pp_hi"] < 0).all()
    assert set(curves[curves["world_size"] == 2]["verdict"]) == {"unchanged"}
    # With a tolerance above the drop, the efficiency steps pass (the points still fail).
    loose = compare.compare(
        compare.load_side(b), compare.load_side(dst), compare.GateSettings(efficiency_tol_pp=30)
    )
    assert set(loose.curves["verdict"]) == {"unchanged"}


def test_join_by_keys_survives_reordering_and_missing_points(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=3)
    c = sweep(tmp_path / "c", seed=2, repeats=3)
    rows = store.read_ledger(c)
    dropped_key = rows[0]["config_key"]
    kept = [r for r in rows if r["config_key"] != dropped_key]
    random.Random(0).shuffle(kept)
    store.ledger_path(c).write_text("".join(json.dumps(r) + "\n" for r in kept))
    result = compare.compare(compare.load_side(b), compare.load_side(c))
    by_key = result.points.set_index("key")
    assert by_key.loc[dropped_key, "verdict"] == "missing"
    assert set(by_key.drop(index=dropped_key)["verdict"]) == {"unchanged"}
    assert result.verdict == "unchanged"
    strict = compare.compare(
        compare.load_side(b), compare.load_side(c), compare.GateSettings(fail_on_missing=True)
    )
    assert strict.regressed
    # The other direction: that point is new.
    back = compare.compare(compare.load_side(c), compare.load_side(b))
    assert back.points.set_index("key").loc[dropped_key, "verdict"] == "new"


def test_current_failures_regress_and_baseline_failures_improve(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=3, failures=False)
    c = sweep(tmp_path / "c", seed=2, repeats=3, failures=False)
    rows = store.read_ledger(c)
    key = rows[0]["config_key"]
    for r in rows:
        if r["config_key"] == key:
            r.update(status="oom", reason="CUDA out of memory", samples_per_s=None)
    store.ledger_path(c).write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = compare.compare(compare.load_side(b), compare.load_side(c))
    row = result.points.set_index("key").loc[key]
    assert row["verdict"] == "regressed" and "no ok current run (oom)" in row["note"]
    assert result.regressed
    back = compare.compare(compare.load_side(c), compare.load_side(b))
    assert back.points.set_index("key").loc[key, "verdict"] == "improved"


def test_environment_change_is_refused_unless_allowed(tmp_path):
    b = sweep(tmp_path / "b", seed=1)
    c = sweep(tmp_path / "c", seed=2, env={"driver": "580.65.06", "nccl": "2.28.1"})
    with pytest.raises(UserError, match=r"driver: '570.124.06' -> '580.65.06'.*nccl"):
        compare.compare(compare.load_side(b), compare.load_side(c))
    ok = compare.compare(
        compare.load_side(b), compare.load_side(c), compare.GateSettings(allow_env_change=True)
    )
    assert any("driver" in n and "nccl" in n for n in ok.notes)


def test_exported_tables_join_on_config_key_and_fallback_to_columns(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=3)
    c = sweep(tmp_path / "c", seed=2, repeats=3)
    parquet, csv = tmp_path / "b.parquet", tmp_path / "c.csv"
    store.export_ledger(b, parquet)
    store.export_ledger(c, csv)
    result = compare.compare(compare.load_side(parquet), compare.load_side(csv))
    assert result.verdict == "unchanged"
    assert "config_key" in result.notes[0]
    # A hand-made table without config keys joins on the config columns instead.
    bare = tmp_path / "bare.csv"
    pd.read_csv(csv).drop(columns=["config_key"]).to_csv(bare, index=False)
    fallback = compare.compare(compare.load_side(parquet), compare.load_side(bare))
    assert "config columns" in " ".join(fallback.notes)
    assert fallback.verdict == "unchanged"
    assert set(fallback.points["verdict"]) == {"unchanged"}


def test_renderings_carry_the_same_verdicts(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=3, failures=False)
    c = sweep(tmp_path / "c", seed=2, repeats=3, failures=False, throughput_scale=0.8)
    result = compare.compare(compare.load_side(b), compare.load_side(c))
    text = compare.render_text(result)
    assert "VERDICT: REGRESSED" in text and "Scaling efficiency" in text
    md = compare.render_markdown(result)
    assert md.startswith("### distrinews compare") and "| verdict | point |" in md
    data = json.loads(compare.render_json(result))
    assert data["verdict"] == "regressed" and data["regressed"] is True
    assert len(data["points"]) == len(result.points)
    assert {p["verdict"] for p in data["points"]} == {"regressed"}


# -- the CLI: every exit code -----------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(cli, ["compare", *args], catch_exceptions=False)


def test_cli_exit_codes(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=3, failures=False)
    same = sweep(tmp_path / "same", seed=2, repeats=3, failures=False)
    slow = tmp_path / "slow"
    perturb.perturb(b, slow, scale=0.8)

    r = invoke(str(b), str(same))
    assert r.exit_code == 0, r.output
    assert "VERDICT: UNCHANGED" in r.output

    r = invoke(str(b), str(slow), "--format", "json")
    assert r.exit_code == 1
    assert json.loads(r.output)["verdict"] == "regressed"

    r = invoke(str(b), str(slow), "--rtol", "0.5", "--format", "markdown")
    assert r.exit_code == 0 and "unchanged" in r.output  # a 20% drop inside a 50% tolerance

    r = invoke(str(b), str(tmp_path / "nope"))
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "no such results folder" in r.output

    other = sweep(tmp_path / "other", seed=3, batches=(8,), world_sizes=(1,))
    r = invoke(str(b), str(other))
    assert r.exit_code == 2 and "no common points" in r.output and "Traceback" not in r.output

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "ledger.jsonl").write_text('{"run_id": "x", "status": "ok"}\n{oops\n')
    r = invoke(str(b), str(corrupt))
    assert r.exit_code == 2 and "line 2" in r.output and r.output.count("\n") == 1

    changed = sweep(tmp_path / "changed", seed=2, repeats=3, env={"torch": "2.14.0"})
    r = invoke(str(b), str(changed))
    assert r.exit_code == 2 and "torch" in r.output and "--allow-env-change" in r.output
    r = invoke(str(b), str(changed), "--allow-env-change")
    assert r.exit_code in (0, 1) and "Environment changed (allowed): torch" in r.output

    r = invoke(str(b), str(same), "--rtol", "2")
    assert r.exit_code == 2  # click's own bad-option exit
    r = invoke(str(b), str(same), "--metric", "step_time_s_p50")  # lower is better: refused
    assert r.exit_code == 2 and "higher is better" in r.output

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "ledger.jsonl").write_text("")
    r = invoke(str(b), str(empty))
    assert r.exit_code == 2 and "no common points" in r.output


# -- the perturb tool ------------------------------------------------------------------------


def test_perturb_scales_rates_and_times_of_ok_rows_only(tmp_path):
    src = sweep(tmp_path / "src", seed=1)
    dst = tmp_path / "dst"
    n = perturb.perturb(src, dst, scale=0.8)
    before, after = store.read_ledger(src), store.read_ledger(dst)
    assert n == sum(r["status"] == "ok" for r in before)
    assert [r["run_id"] for r in before] == [r["run_id"] for r in after]  # order kept
    for a, b in zip(before, after, strict=True):
        if a["status"] == "ok":
            assert b["samples_per_s"] == pytest.approx(a["samples_per_s"] * 0.8)
            assert b["step_time_s_p50"] == pytest.approx(a["step_time_s_p50"] / 0.8)
        else:
            assert a == b
    assert (dst / "env.json").read_text() == (src / "env.json").read_text()
    with pytest.raises(UserError, match="already exists"):
        perturb.perturb(src, dst, scale=0.8)


@pytest.mark.slow
def test_perturb_module_entry_point(tmp_path):
    src = sweep(tmp_path / "src", seed=1)
    dst = tmp_path / "dst"
    cmd = [sys.executable, "-m", "harness.tools.perturb", str(src), str(dst)]
    done = subprocess.run(
        [*cmd, "--throughput-scale", "0.8"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "scaled by 0.8" in done.stdout
    again = subprocess.run(
        [*cmd, "--throughput-scale", "0.8"], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 2 and again.stderr.strip().startswith("error:")
    assert "Traceback" not in again.stderr


def test_baseline_sweep_file_gate_sets_the_tolerance_and_options_override_it(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=5, failures=False)
    slow = tmp_path / "slow"
    perturb.perturb(b, slow, scale=0.9)  # a 10% drop
    assert invoke(str(b), str(slow)).exit_code == 1  # default rtol 5%: regression
    doc = json.loads((b / "sweep.json").read_text()) if (b / "sweep.json").exists() else {}
    doc.setdefault("spec", {})["gate"] = {"rtol": 0.15, "efficiency_tol_pp": 15}
    (b / "sweep.json").write_text(json.dumps(doc))
    r = invoke(str(b), str(slow))
    assert r.exit_code == 0 and "rtol 15%" in r.output and "[gate] rtol = 0.15" in r.output
    assert invoke(str(b), str(slow), "--rtol", "0.05").exit_code == 1  # the option wins
    deeper = tmp_path / "deeper"
    perturb.perturb(b, deeper, scale=0.8)  # the planted 20% drop is still caught
    assert invoke(str(b), str(deeper)).exit_code == 1


# -- the pool tool ---------------------------------------------------------------------------


def test_pooled_sessions_keep_every_repeat_and_absorb_a_session_offset(tmp_path):
    from harness.tools import pool

    # Three sessions of one sweep, each offset as a shared host drifts between sessions.
    offsets = (1.0, 0.88, 1.15)
    sessions = [
        sweep(tmp_path / f"s{k}", seed=k, repeats=5, failures=False, cv=0.03, throughput_scale=o)
        for k, o in enumerate(offsets)
    ]
    base = tmp_path / "pooled"
    n = pool.pool(base, sessions)
    rows = store.read_ledger(base)
    assert n == len(rows) == sum(len(store.read_ledger(s)) for s in sessions)
    assert len({r["run_id"] for r in rows}) == n  # nothing hidden by "latest row per run_id"
    by_key: dict[str, list[int]] = {}
    for r in rows:
        by_key.setdefault(r["config_key"], []).append(r["repeat"])
    assert all(sorted(v) == list(range(15)) for v in by_key.values())
    assert json.loads((base / layout.POOL_JSON).read_text())["sessions"][2]["source"] == str(
        sessions[2]
    )
    env = json.loads((base / "env.json").read_text())
    assert env == json.loads((sessions[0] / "env.json").read_text())  # no loads recorded
    loads = [[1.0, 1.0, 1.0], [3.0, 2.0, 1.0], [9.0, 5.0, 2.0]]
    assert pool.pooled_load([{"load_avg_start": v} for v in loads]) == {
        "load_avg_start": [3.0, 2.0, 1.0]  # the median session's, element by element
    }
    side = compare.load_side(base)
    assert side.frame.groupby("config_key").size().eq(15).all()

    # A fresh session 10% below the middle session: against the pool (centred on the middle)
    # it is inside the 15% tolerance; against a baseline made in the one fast session alone
    # the same numbers are a significant 22% drop -- the false alarm pooling prevents.
    slow_session = sweep(tmp_path / "fresh", seed=7, repeats=5, failures=False, cv=0.03,
                         throughput_scale=0.90)  # fmt: skip
    settings = compare.GateSettings(rtol=0.15)
    pooled = compare.compare(side, compare.load_side(slow_session), settings)
    single = compare.compare(compare.load_side(sessions[2]), compare.load_side(slow_session),
                             settings)  # fmt: skip
    assert not pooled.regressed and single.regressed
    # A real 30% slowdown of the fresh session is still caught against the pool.
    slowed = tmp_path / "slowed"
    perturb.perturb(sweep(tmp_path / "fresh2", seed=8, repeats=5, failures=False, cv=0.03),
                    slowed, scale=0.7)  # fmt: skip
    assert compare.compare(side, compare.load_side(slowed), settings).regressed


@pytest.mark.slow
def test_pool_refuses_mixed_sweeps_environments_and_an_existing_destination(tmp_path):
    from harness.tools import pool

    a = sweep(tmp_path / "a", seed=1)
    b = sweep(tmp_path / "b", seed=2)
    other_env = sweep(tmp_path / "c", seed=3, env={"driver": "999.1"})
    other_name = sweep(tmp_path / "d", seed=4, name="another")
    with pytest.raises(UserError, match="field fingerprint differs"):
        pool.pool(tmp_path / "x1", [a, other_env])
    with pytest.raises(UserError, match="sweep 'another'"):
        pool.pool(tmp_path / "x2", [a, other_name])
    with pytest.raises(UserError, match="at least two"):
        pool.pool(tmp_path / "x3", [a])
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match="already exists"):
        pool.pool(tmp_path / "taken", [a, b])
    assert not any((tmp_path / n).exists() for n in ("x1", "x2", "x3"))
    done = subprocess.run(
        [sys.executable, "-m", "harness.tools.pool", str(tmp_path / "taken"), str(a), str(b)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "already exists" in done.stderr


# -- machine class and load, named beside the verdict ------------------------------------------


def _set_env(sweep_dir: Path, **fields) -> None:
    env = json.loads((sweep_dir / "env.json").read_text())
    (sweep_dir / "env.json").write_text(json.dumps({**env, **fields}))


XEON = {
    "cpu_model": "Intel(R) Xeon(R) Gold 6338",
    "cpu_cores_physical": 8,
    "cpu_cores_logical": 16,
    "memory_gib": 62.8,
    "gpu_names": [],
    "gpu_count": 0,
}
EPYC = {**XEON, "cpu_model": "AMD EPYC", "cpu_cores_physical": 2, "cpu_cores_logical": 2,
        "memory_gib": 23.5}  # fmt: skip


def test_a_different_machine_class_is_named_not_refused(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=3, failures=False)
    c = sweep(tmp_path / "c", seed=2, repeats=3, failures=False)
    _set_env(b, machine=XEON)
    _set_env(c, machine=EPYC)
    result = compare.compare(compare.load_side(b), compare.load_side(c))  # no refusal
    (line,) = result.context
    assert line.startswith(
        "The baseline ran on an 8-core Intel(R) Xeon(R) Gold 6338 (16 logical, 62.8 GiB), this "
        "run on a 2-core AMD EPYC (23.5 GiB): the change may be the machine, not the code"
    )
    assert "cpu_model" in line and "memory_gib" in line
    text = compare.render_text(result).splitlines()
    verdict_at = next(i for i, t in enumerate(text) if t.startswith("VERDICT:"))
    assert text[verdict_at + 1] == f"  ! {line}"  # right under the verdict
    assert line in compare.render_markdown(result)
    data = json.loads(compare.render_json(result))
    assert data["context"] == [line]
    assert data["machine"]["baseline"]["cpu_model"] == XEON["cpu_model"]
    # The same machine on both sides: nothing to say.
    _set_env(c, machine=XEON)
    assert compare.compare(compare.load_side(b), compare.load_side(c)).context == ()


def test_load_during_the_runs_is_named_from_the_ledger_or_env_json(tmp_path):
    b = sweep(tmp_path / "b", seed=1, repeats=3, failures=False)
    c = sweep(tmp_path / "c", seed=2, repeats=3, failures=False)
    for side in (b, c):
        _set_env(side, machine=EPYC)
    # Old results: no load anywhere. Nothing said, JSON says unknown.
    quiet = compare.compare(compare.load_side(b), compare.load_side(c))
    assert quiet.context == () and quiet.loads == {"baseline": None, "current": None}
    # Sweep-level load from env.json (start and end of the sweep).
    _set_env(b, load_avg_start=[0.2, 0.2, 0.2], load_avg_end=[0.4, 0.3, 0.2])
    _set_env(c, load_avg_start=[8.8, 6.0, 3.0], load_avg_end=[9.4, 7.0, 4.0])
    result = compare.compare(compare.load_side(b), compare.load_side(c))
    (line,) = result.context
    assert line.startswith("Load average 9.1 during this sweep vs 0.3 for the baseline")
    assert "sweep start and end" in line and "may explain a slowdown" in line
    # Per-run load in the ledger (the worker's load_avg_1m) wins over env.json.
    for side, load in ((b, 1.0), (c, 1.2)):
        rows = store.read_ledger(side)
        for r in rows:
            r["load_avg_1m"] = load
        store.ledger_path(side).write_text("".join(json.dumps(r) + "\n" for r in rows))
    close = compare.compare(compare.load_side(b), compare.load_side(c))
    assert close.context == ()  # 1.2 vs 1.0 on 2 cores: not worth a word
    assert close.loads["current"] == {"load_avg_1m": 1.2, "source": "runs"}
