"""Measure the regression gate on this machine: choose its tolerances on some sessions, judge
them on others.

    python -m harness.tools.gate_trials run --sweep cpu-smoke --sessions 10 --work /tmp/gt
    python -m harness.tools.gate_trials choose /tmp/gt/s0*/cpu-smoke
    python -m harness.tools.gate_trials judge results/baselines/cpu-smoke /tmp/gt/s1*/cpu-smoke \\
        --rtol 0.12 --efficiency-tol-pp 15

A *session* is one fresh ``distrinews-bench sweep`` of the baseline's sweep (its own folder).
On a shared machine a whole session can sit 10-20% off another, so the gate's tolerance
(``rtol``; ``efficiency_tol_pp`` for scaling efficiency) must cover how far a healthy session
strays from the baseline -- and a tolerance chosen on the very sessions that then "show" it
holds is an in-sample figure. Hence two steps on two different sets of sessions:

- ``choose``: leave one out -- each session is gated against the pool of the others
  (harness.tools.pool), and the *stray* is the smallest tolerance under which it would pass
  (its largest significant drop: change < 0 with p <= alpha for a point, an interval wholly
  below 0 for an efficiency step). The rule: the largest stray, rounded up to a whole percent
  (pp), plus ``--margin`` (1 point): with k sessions the largest of k strays is exceeded by a
  new session about 1 in k+1 times, the margin is what buys less. Prints the strays, the choice
  and the pooled baseline's command;
- ``judge``: each other session against the baseline (pooled from the choosing sessions) with
  the chosen tolerances: false alarms (exit 1 on a healthy session), and power -- the same
  sessions with a planted 10% and 20% slowdown (harness.tools.perturb: every run x0.9, x0.8)
  must exit 1 -- plus the CI check (a session against its own x0.8 copy). Every rate gets its
  Clopper-Pearson 95% interval (harness.analysis.proportion_interval): 0 alarms in 10 sessions
  still allows a rate up to 31%.

``--max-load L`` (choose and judge) keeps only *quiet* sessions: both 1-minute load averages
env.json recorded (at the sweep's start and end) at most L. A tolerance is for the machine in
the state CI runs it in; on a box shared with other work a session can run at half speed, which
no tolerance below the planted 20% can absorb -- compare names such a load difference beside its
verdict instead. Judge with and without it to see both.

``run`` makes the sessions: fresh sweeps in turn, ``--pause`` seconds apart, each printing the
load average around it (on a shared box that says how much the noise had to fight; wrap the
command in the machine's queue, e.g. ``/work/heavy``, so sessions do not fight each other).
Nothing is mocked: ``run`` calls the real CLI, and ``choose``/``judge`` call the gate's own
functions (harness.compare) on the sessions' ledgers, exactly what ``distrinews-bench compare``
computes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from distrinews import layout
from distrinews.errors import UserError
from harness import analysis, compare, envinfo, store
from harness.cli import FiniteFloatRange, user_errors
from harness.tools import perturb, pool

#: The planted slowdowns judged (throughput multiplied by these).
PLANTS = (0.9, 0.8)


@dataclass(frozen=True, kw_only=True)
class Session:
    """One sweep folder, read once."""

    path: Path
    rows: list[dict[str, Any]]
    env: dict[str, Any]
    sweep: dict[str, Any]


def load_session(path: Path) -> Session:
    rows, env, sweep = pool._session(Path(path))  # the pool's own checks and reading
    return Session(path=Path(path), rows=rows, env=env, sweep=sweep)


def side(rows: list[dict[str, Any]], env: dict[str, Any], source: str) -> compare.Side:
    """A gate side from ledger rows held in memory (no tolerances of its own)."""
    return compare.Side(frame=analysis.frame_from_rows(rows, source=source), env=env, source=source)


def pooled(sessions: list[Session]) -> compare.Side:
    """The baseline harness.tools.pool would write from these sessions, in memory."""
    repeats = sessions[0].sweep.get("repeats")
    repeats = repeats if isinstance(repeats, int) and repeats > 0 else 100
    rows = pool.pool_rows([s.rows for s in sessions], repeats)
    return side(rows, sessions[0].env, "pool of " + ", ".join(str(s.path) for s in sessions))


def stray(result: compare.Comparison, alpha: float) -> tuple[float, float]:
    """The smallest (rtol, efficiency_tol_pp) under which ``result`` would not regress: the
    largest significant drop of a point (as a fraction) and of an efficiency step (pp)."""
    pts = result.points
    significant = pts[(pts["change"] < 0) & (pts["p_value"] <= alpha)]
    rtol = float(-significant["change"].min()) if len(significant) else 0.0
    curves = result.curves
    eff = 0.0
    if len(curves):
        clear = curves[(curves["change_pp"] < 0) & (curves["change_pp_hi"] < 0)]
        eff = float(-clear["change_pp"].min()) if len(clear) else 0.0
    return rtol, eff


def choose(
    sessions: list[Session], *, alpha: float = 0.05, margin: float = 0.01, margin_pp: float = 1.0
) -> dict[str, Any]:
    """Leave-one-out strays of ``sessions`` and the tolerances the rule picks from them."""
    if len(sessions) < 3:
        raise UserError("choose needs at least three sessions (each is gated against the others)")
    # Generous settings: nothing is tolerated, so every significant drop shows as a stray.
    open_gate = compare.GateSettings(rtol=0.0, efficiency_tol_pp=0.0, alpha=alpha)
    rows = []
    for i, s in enumerate(sessions):
        others = pooled([o for j, o in enumerate(sessions) if j != i])
        result = compare.compare(others, side(s.rows, s.env, str(s.path)), open_gate)
        r, e = stray(result, alpha)
        worst = result.points.sort_values("change").iloc[0]
        rows.append({"session": str(s.path), "stray": r, "stray_pp": e,
                     "worst_change": float(worst["change"]), "worst_point": worst["point"],
                     "load": _load(s.env)})  # fmt: skip
    rtol = math.ceil(round(max(r["stray"] for r in rows) * 100, 6)) / 100 + margin
    eff = math.ceil(round(max(r["stray_pp"] for r in rows), 6)) + margin_pp
    return {"sessions": rows, "rtol": round(rtol, 4), "efficiency_tol_pp": eff}


def judge(
    baseline: compare.Side, sessions: list[Session], settings: compare.GateSettings
) -> dict[str, Any]:
    """False alarms and power of ``settings`` against ``baseline`` on sessions it never saw."""
    rows = []
    for s in sessions:
        fresh = side(s.rows, s.env, str(s.path))
        row: dict[str, Any] = {"session": str(s.path), "load": _load(s.env)}
        healthy = compare.compare(baseline, fresh, settings)
        row["false_alarm"] = healthy.regressed
        row["changes"] = [round(float(c), 4) for c in healthy.points["change"]]
        for scale in PLANTS:
            slowed = [perturb.perturb_row(r, scale) for r in s.rows]
            caught = compare.compare(baseline, side(slowed, s.env, "slowed"), settings).regressed
            row[f"caught_{scale:g}"] = caught
        planted = [perturb.perturb_row(r, 0.8) for r in s.rows]
        row["ci_self_check"] = compare.compare(fresh, side(planted, s.env, "slowed"),
                                               settings).regressed  # fmt: skip
        rows.append(row)
    n = len(rows)

    def rate(key: str) -> dict[str, Any]:
        k = sum(bool(r[key]) for r in rows)
        lo, hi = analysis.proportion_interval(k, n)
        return {"count": k, "of": n, "rate": k / n if n else float("nan"), "ci95": [lo, hi]}

    return {
        "rtol": settings.rtol,
        "efficiency_tol_pp": settings.efficiency_tol_pp,
        "sessions": rows,
        "false_alarms": rate("false_alarm"),
        **{f"power_{1 - scale:.0%}": rate(f"caught_{scale:g}") for scale in PLANTS},
        "ci_self_check": rate("ci_self_check"),
    }


def quiet(sessions: list[Session], max_load: float | None) -> tuple[list[Session], list[str]]:
    """The sessions whose recorded loads are all <= ``max_load`` (all when None), and one line
    per session left out, saying why."""
    if max_load is None:
        return sessions, []
    kept, dropped = [], []
    for s in sessions:
        loads = envinfo.sweep_loads(s.env)
        if loads and max(loads) <= max_load:
            kept.append(s)
        else:
            why = f"load {max(loads):.1f} > {max_load:g}" if loads else "no load recorded"
            dropped.append(f"{s.path}: left out ({why})")
    return kept, dropped


def _load(env: dict[str, Any]) -> float | None:
    """The sweep's load average (1-minute, mean of its start and end) from env.json."""
    values = envinfo.sweep_loads(env)
    return float(np.mean(values)) if values else None


def _rate_line(name: str, r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    share = f"{r['count']}/{r['of']} = {r['rate']:.0%}"
    return f"{name}: {share} (Clopper-Pearson 95%: {lo:.0%}-{hi:.0%})"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Choose the gate's tolerances on some sessions and judge them on others."""


@main.command("run")
@click.option("--sweep", "sweep_name", default="cpu-smoke", show_default=True)
@click.option("--sessions", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--pause", type=FiniteFloatRange(0, 86_400), default=60.0, show_default=True,
              help="Seconds between sessions (sessions spread over time).")  # fmt: skip
def run_cmd(sweep_name: str, sessions: int, work: Path, pause: float) -> None:
    """Run SESSIONS fresh sweeps into WORK/sNN/<sweep>, one after another."""
    bench = [sys.executable, "-m", "harness.cli"]
    for i in range(sessions):
        root = work / f"s{i:02d}"
        before, t0 = os.getloadavg()[0], time.perf_counter()
        argv = [*bench, "sweep", sweep_name, "--results", str(root), "--no-progress"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise click.ClickException(f"session {i}: sweep failed: {done.stderr[-400:]}")
        click.echo(
            f"session {i}: {root / sweep_name}, {time.perf_counter() - t0:.0f} s, load "
            f"{before:.1f} -> {os.getloadavg()[0]:.1f}"
        )
        if i + 1 < sessions:
            time.sleep(pause)


@main.command("choose")
@click.argument("sessions", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--alpha", type=FiniteFloatRange(0, 0.5, min_open=True), default=0.05,
              show_default=True)  # fmt: skip
@click.option("--margin", type=FiniteFloatRange(0, 1), default=0.01, show_default=True,
              help="Added to the largest stray (a fraction: 0.01 = 1%).")  # fmt: skip
@click.option("--margin-pp", type=FiniteFloatRange(0, 100), default=1.0, show_default=True)
@click.option("--max-load", type=FiniteFloatRange(min=0), default=None,
              help="Keep only quiet sessions.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def choose_cmd(
    sessions: tuple[Path, ...],
    alpha: float,
    margin: float,
    margin_pp: float,
    max_load: float | None,
    as_json: bool,
) -> None:
    """Pick rtol and efficiency_tol_pp from SESSIONS (in sample: leave one out)."""
    kept, dropped = quiet([load_session(p) for p in sessions], max_load)
    for line in dropped:
        click.echo(line, err=True)
    out = choose(kept, alpha=alpha, margin=margin, margin_pp=margin_pp)
    sessions = tuple(s.path for s in kept)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for r in out["sessions"]:
        load = "" if r["load"] is None else f", load {r['load']:.1f}"
        click.echo(
            f"{r['session']}: stray {r['stray']:.1%} (worst change {r['worst_change']:+.1%} at "
            f"{r['worst_point']}), efficiency {r['stray_pp']:.1f} pp{load}"
        )
    click.echo(
        f"chosen: rtol = {out['rtol']:g}, efficiency_tol_pp = {out['efficiency_tol_pp']:g} "
        f"(largest in-sample stray of {len(out['sessions'])}, rounded up, plus the margin); "
        f"baseline: python -m harness.tools.pool DST {' '.join(map(str, sessions))}"
    )


@main.command("judge")
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("sessions", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--rtol", type=FiniteFloatRange(0, 1, min_open=True), default=None,
              help="[default: the baseline's [gate]]")  # fmt: skip
@click.option("--efficiency-tol-pp", type=FiniteFloatRange(0, 100, min_open=True), default=None)
@click.option("--alpha", type=FiniteFloatRange(0, 0.5, min_open=True), default=0.05,
              show_default=True)  # fmt: skip
@click.option("--max-load", type=FiniteFloatRange(min=0), default=None,
              help="Keep only quiet sessions.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def judge_cmd(
    baseline: Path,
    sessions: tuple[Path, ...],
    rtol: float | None,
    efficiency_tol_pp: float | None,
    alpha: float,
    max_load: float | None,
    as_json: bool,
) -> None:
    """Gate each of SESSIONS (not used to choose) against BASELINE, healthy and slowed."""
    base = compare.load_side(baseline)
    settings = compare.settings_for(base, rtol=rtol, efficiency_tol_pp=efficiency_tol_pp,
                                    alpha=alpha)  # fmt: skip
    loaded, dropped = quiet([load_session(p) for p in sessions], max_load)
    for line in dropped:
        click.echo(line, err=True)
    if not loaded:
        raise UserError("no session left to judge")
    used = {str(Path(s["source"]).resolve()) for s in _pool_sources(baseline)}
    overlap = [str(s.path) for s in loaded if str(s.path.resolve()) in used]
    if overlap:
        raise UserError(f"{overlap[0]}: the baseline was pooled from it; judge on other sessions")
    out = judge(base, loaded, settings)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for r in out["sessions"]:
        load = "" if r["load"] is None else f"load {r['load']:.1f}, "
        plants = ", ".join(f"{1 - s:.0%} {'caught' if r[f'caught_{s:g}'] else 'MISSED'}"
                           for s in PLANTS)  # fmt: skip
        click.echo(
            f"{r['session']}: {load}changes {', '.join(f'{c:+.1%}' for c in r['changes'])}: "
            f"{'FALSE ALARM' if r['false_alarm'] else 'passes'}; planted {plants}"
        )
    click.echo(f"rtol {out['rtol']:g}, efficiency_tol_pp {out['efficiency_tol_pp']:g}:")
    click.echo("  " + _rate_line("false alarms", out["false_alarms"]))
    for scale in PLANTS:
        key = f"power_{1 - scale:.0%}"
        click.echo("  " + _rate_line(f"planted {1 - scale:.0%} slowdown caught", out[key]))
    click.echo("  " + _rate_line("CI check (own x0.8 copy) caught", out["ci_self_check"]))


def _pool_sources(baseline: Path) -> list[dict[str, Any]]:
    doc = store.read_json(Path(baseline) / layout.POOL_JSON)
    sessions = doc.get("sessions") if isinstance(doc, dict) else None
    return [s for s in sessions or [] if isinstance(s, dict) and isinstance(s.get("source"), str)]


if __name__ == "__main__":
    main()
