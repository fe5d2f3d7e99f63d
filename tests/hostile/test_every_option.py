"""Issue 25, item 5: every number and path option of every command and tool, fed what a user
(or a typo, or a colleague's symlink) can feed it.

The options are found by walking the CLI and ``harness/tools`` (tests/hostile/conftest.py), not
listed here, so an option added later is fed the same values the day it appears:

- every FLOAT option: nan, inf, -inf and a value outside its range are refused while the
  command line is parsed, in one line naming the option;
- every INT option: a value outside its range likewise; and an option without an upper bound
  must say here why none is needed (UNBOUNDED), so the bound is a decision, not an accident;
- where a command has a cheap valid invocation (BASE), the absurd values a range admits
  (1e308, 1e-320, 10**30, 2**63) run it to a clean end: exit 0, 1 or 2, one error line at
  most, never a traceback;
- every path of those commands pointed at a dangling symlink or a symlink to a ledger:
  no traceback, and no file the results folder held is changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from harness.cli import FiniteFloatRange
from tests.hostile.conftest import every_command, run_command, snapshot

COMMANDS = every_command()


def _options(kind: type) -> list[tuple[tuple[str, ...], click.Option]]:
    return [
        (path, p)
        for path, command in COMMANDS
        for p in command.params
        if isinstance(p, click.Option) and isinstance(p.type, kind)
    ]


FLOATS = _options(click.types.FloatParamType)
INTS = _options(click.types.IntParamType)


def _id(value: object) -> str:
    if isinstance(value, tuple):
        return " ".join(value)
    return getattr(value, "name", None) or str(value)


#: Cheap valid invocations, by command: ``argv(paths)`` where ``paths`` maps each path
#: parameter's name to its value (a test swaps one for a symlink). Commands missing here (train,
#: serve, bench-serve, gate_trials) run real work or a server: they get the parse-time checks.
BASE: dict[str, Callable[[dict[str, Path]], list]] = {
    "sweep": lambda p: ["cpu-smoke", "--dry-run", "--results", p["results"]],
    "sbatch": lambda p: ["cpu-smoke", "--nodes", "1", "-o", "-"],
    "compare": lambda p: [p["baseline"], p["current"]],
    "project": lambda p: ["--step-time-ms", "120", "--grad-mb", "255", "--gpus", "8,16"],
    "report": lambda p: [p["results_dir"], "--format", "text"],
    "export": lambda p: [p["results_dir"], "-o", p["output"]],
    "tool:perturb": lambda p: [p["src"], p["dst"], "--throughput-scale", "0.8"],
    "tool:pool": lambda p: [p["dst"], *p["sources"]],
}

#: INT options with no upper bound, and why none is needed (what bounds the work instead).
UNBOUNDED = {
    "bench-serve --requests": "bounded by --max-seconds; each body is made when it is sent",
    "bench-serve --texts-per-request": "checked against the server's max_texts before sending",
    "bench-serve --warmup": "bounded by --max-seconds like a level; made as sent",
    "project --draws": "checked against 10..100,000 by the projection itself (one line)",
    "project --pcie-gen": "checked against NCCL's known generations by the fabric (one line)",
    "project --nics-per-node": "checked by the fabric, with its allowed range (one line)",
    "project --gpus-per-node": "checked against --gpus by the projection itself (one line)",
    "project --grad-accum": "a factor in the model's formulas: nothing is allocated per unit",
    "project --powersgd-rank": "a factor in the model's formulas: nothing is allocated per unit",
    "project --matrix-dim": "a factor in the model's formulas: nothing is allocated per unit",
    "project --per-device-batch": "a factor of samples/s: nothing is allocated per sample",
    "sbatch --nodes": "written into #SBATCH; Slurm refuses what the cluster cannot give",
    "sbatch --gpus-per-node": "written into #SBATCH; Slurm refuses what the cluster cannot give",
    "serve --max-texts": "a limit the user raises on purpose; bodies over it are refused unread",
    "serve --max-chars": "a limit the user raises on purpose; bodies over it are refused unread",
    "sweep --repeats": "SweepSpec checks 1..MAX_REPEATS before anything runs",
    "sweep --nodes": "checked against the allocation's node count before anything runs",
    "sweep --max-points": "a limit: the grid's size is a product of axis lengths, not expanded",
    "train --epochs": "time the user asks for; --steps or Ctrl-C ends it, nothing is allocated",
    "train --steps": "time the user asks for; nothing is allocated per step",
    "train --batch-size": "checked against the data (one step must fit) before the model runs",
    "train --grad-accum": "checked against the batches per rank before the model runs",
    "train --nproc-per-node": "checked against the GPU or core count before launching",
    "train --checkpoint-every": "a period: compared, never allocated",
    "train --keep-checkpoints": "a count of folders kept: compared, never allocated",
    "tool:perturb --min-world-size": "a threshold: compared, never allocated",
}

#: Cases of issue 25 that other engineers own; strict, so the fix shows up as a failure here
#: that says to drop the entry.
OWNED_ELSEWHERE = {}


def _mark(name: str, case: str) -> list:
    reason = OWNED_ELSEWHERE.get((name, case))
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


def _bad_values(option: click.Option) -> list[str]:
    """Values the option's type must refuse at parse time."""
    t = option.type
    values = []
    if isinstance(t, click.types.FloatParamType):
        values += ["nan", "inf", "-inf"]
    low, high = getattr(t, "min", None), getattr(t, "max", None)
    if low is not None:
        values.append(str(low - 1))
    if high is not None:
        values.append(str(high + 1))
    return values


def _parse_cases(options):
    cases = []
    for path, option in options:
        name = f"{' '.join(path)} {option.opts[-1]}"
        for value in _bad_values(option) or ["x"]:
            cases.append(pytest.param(path, option, value, id=f"{name} {value}",
                                      marks=_mark(name, "parse")))  # fmt: skip
    return cases


@pytest.mark.parametrize(("path", "option", "value"), _parse_cases(FLOATS + INTS))
def test_every_number_option_refuses_what_its_range_does_not_hold(
    paths, tmp_path, path, option, value
):
    """One line naming the option, exit 2, nothing written: with the command's cheap valid
    invocation where there is one, else alone -- then its type must refuse it while the command
    line is parsed, before anything else is looked at."""
    before = snapshot(tmp_path)
    base = BASE.get(" ".join(path))
    result = run_command(path, *(base(paths) if base else []), option.opts[-1], value)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.lower().startswith("error")]
    assert len(lines) == 1 and option.opts[-1] in lines[0], result.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("path", "option"), FLOATS, ids=_id)
def test_every_float_option_is_a_finite_range(path, option):
    """The house's type for numbers from users: FiniteFloatRange (nan > 0 is False, so a
    plain FloatRange let nan through); or, for the projection, its own checks."""
    if path == ("project",):
        pytest.skip("checked in its own code: a value or LO:HI, one line naming the flag")
    assert isinstance(option.type, FiniteFloatRange)


@pytest.mark.parametrize(("path", "option"), INTS, ids=_id)
def test_every_int_option_has_an_upper_bound_or_a_reason(path, option):
    name = f"{' '.join(path)} {option.opts[-1]}"
    assert getattr(option.type, "max", None) is not None or name in UNBOUNDED, (
        f"{name}: give it a maximum (click.IntRange(lo, hi)) or say in UNBOUNDED what bounds "
        "the work instead"
    )


def test_the_walk_found_the_options():
    names = {f"{' '.join(p)} {o.opts[-1]}" for p, o in FLOATS + INTS}
    assert {"sweep --timeout-s", "train --lr", "tool:perturb --throughput-scale"} <= names
    assert set(UNBOUNDED) <= names, set(UNBOUNDED) - names  # no stale entries


# -- absurd values a range admits, on commands that run cheaply -------------------------------


@pytest.fixture
def paths(shared_sweep, tmp_path) -> dict[str, object]:
    return {
        "results": tmp_path / "r",
        "baseline": shared_sweep,
        "current": shared_sweep,
        "results_dir": shared_sweep,
        "output": tmp_path / "x.csv",
        "src": shared_sweep,
        "dst": tmp_path / "copy",
        "sources": [shared_sweep, shared_sweep],
    }


def _absurd(option: click.Option) -> list[str]:
    t = option.type
    low, high = getattr(t, "min", None), getattr(t, "max", None)
    if isinstance(t, click.types.FloatParamType):
        candidates = [1e308, -1e308, 1e-320, -1.0, 0.0]
    else:
        candidates = [10**30, 2**63, 2**31, -1, 0]
    inside = [
        v
        for v in candidates
        if (low is None or v > low or (v == low and not getattr(t, "min_open", False)))
        and (high is None or v < high or (v == high and not getattr(t, "max_open", False)))
    ]
    return [repr(v) if isinstance(v, float) else str(v) for v in inside if not math.isnan(v)]


def _absurd_cases():
    cases = []
    for path, option in FLOATS + INTS:
        if path[-1] not in BASE and " ".join(path) not in BASE:
            continue
        name = f"{' '.join(path)} {option.opts[-1]}"
        for value in _absurd(option):
            cases.append(pytest.param(path, option, value, id=f"{name} {value}",
                                      marks=_mark(name, value)))  # fmt: skip
    return cases


@pytest.mark.parametrize(("path", "option", "value"), _absurd_cases())
def test_absurd_values_inside_a_range_end_cleanly(paths, path, option, value):
    argv = BASE[" ".join(path)](paths)
    result = run_command(path, *argv, option.opts[-1], value)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{result.exception!r}\n{result.output}"
    )
    assert result.exit_code in (0, 1, 2) and "Traceback" not in result.output
    if result.exit_code == 2:
        lines = [ln for ln in result.stderr.splitlines() if ln.lower().startswith("error")]
        assert len(lines) == 1, result.stderr


# -- every path of those commands: a planted symlink ------------------------------------------


def _path_cases():
    cases = []
    for path, command in COMMANDS:
        name = " ".join(path)
        if name not in BASE:
            continue
        for param in command.params:
            if not isinstance(param.type, click.Path) or {"-o", "--output"} & set(param.opts):
                continue  # output files: test_outputs.py
            for target in ("dangling", "ledger"):
                cases.append(
                    pytest.param(path, param.name, target, id=f"{name} {param.name} {target}")
                )
    return cases


@pytest.mark.parametrize(("path", "name", "target"), _path_cases())
def test_every_path_given_a_planted_symlink_changes_nothing_and_never_tracebacks(
    paths, shared_sweep, tmp_path, path, name, target
):
    sweep_dir = shared_sweep
    link = tmp_path / f"link-{name}"
    link.symlink_to(sweep_dir / "ledger.jsonl" if target == "ledger" else tmp_path / "nowhere")
    held = snapshot(sweep_dir)
    argv = BASE[" ".join(path)]({**paths, name: link, "sources": [link, sweep_dir]})
    result = run_command(path, *argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{result.exception!r}\n{result.output}"
    )
    assert result.exit_code in (0, 1, 2) and "Traceback" not in result.output
    if result.exit_code == 2:
        lines = [ln for ln in result.stderr.splitlines() if ln.lower().startswith("error")]
        assert len(lines) == 1, result.stderr
    after = snapshot(sweep_dir)
    assert {k: after.get(k) for k in held} == held  # what the folder held is unchanged
    assert not (tmp_path / "nowhere").exists()  # nothing created through the dangling link
