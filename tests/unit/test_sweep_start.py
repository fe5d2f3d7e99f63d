"""The first line of every sweep: which sweep, why it was chosen, how many points, how long.

Printed by ``run_sweep`` (and ``--dry-run``) through the same echo as the rest, so it is there
when the output is a file or a pipe, not only on a terminal (the progress bar is). The real
process's first line is checked in tests/distributed/test_sweep.py.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from harness import sweep as sweeps
from harness.cli import cli
from harness.spec import Resources, load_builtin, parse_sweep

SPEC = load_builtin("cpu-smoke")
POINTS = SPEC.expand(Resources(cpus_per_node=2))


def planned(actions: list[str]) -> list[sweeps.PlannedPoint]:
    return [sweeps.PlannedPoint(point=p, action=a) for p, a in zip(POINTS, actions, strict=False)]


def test_why_this_sweep_in_words():
    assert sweeps.chosen_because(None, gpu_count=0) == (
        "no GPU found: the default for a machine without one"
    )
    assert sweeps.chosen_because(None, gpu_count=8) == "8 GPU(s) found: the default for a GPU node"
    assert sweeps.chosen_because("cpu-smoke", gpu_count=0) == "named on the command line"


def test_the_estimate_rests_on_this_folders_runs_first():
    rows = [
        {"status": "ok", "world_size": 1, "duration_s": 6.0},
        {"status": "ok", "world_size": 1, "duration_s": 8.0},
        {"status": "ok", "world_size": 2, "duration_s": 10.0},
        {"status": "crashed", "world_size": 2, "duration_s": 300.0},  # not a basis
    ]
    est = sweeps.estimate(POINTS, rows, SPEC, timeout_s=300)
    assert est.seconds == 5 * 7.0 + 5 * 10.0  # per world size: medians 7 and 10 s
    assert est.basis == "median duration of the 3 earlier ok run(s) in this folder"


def test_then_on_the_sweep_files_measured_estimate_then_on_nothing():
    est = sweeps.estimate(POINTS, [], SPEC, timeout_s=300)
    assert SPEC.point_s is not None and est.seconds == len(POINTS) * SPEC.point_s
    assert est.basis.startswith(f"{SPEC.point_s:g} s a point, measured on ")
    assert SPEC.measured_on in est.basis
    bare = parse_sweep('name = "x"\n[axes]\ngpus_per_node = [1]\n', source="x.toml")
    none = sweeps.estimate(POINTS[:1], [], bare, timeout_s=900)
    assert none.seconds is None and "up to its timeout of 15 min 00 s" in none.basis


def test_the_start_line_names_sweep_reason_points_and_time():
    line = sweeps.start_line(
        SPEC,
        planned(["run"] * 8 + ["done"] * 2),
        Path("results/cpu-smoke"),
        chosen="no GPU found: the default for a machine without one",
        rows=[{"status": "ok", "world_size": 1, "duration_s": 8.5}],
        timeout_s=300,
    )
    assert line == (
        "sweep cpu-smoke (harness/sweeps/cpu-smoke.toml; no GPU found: the default for a "
        "machine without one) -> results/cpu-smoke: 10 points, 8 to run; estimated 1 min 08 s "
        "(median duration of the 1 earlier ok run(s) in this folder)"
    )


def test_nothing_to_run_says_so_and_how_to_measure_again():
    line = sweeps.start_line(
        SPEC, planned(["done"] * 10), Path("r"), chosen="", rows=[], timeout_s=300
    )
    assert "10 points, none to run (10 already ok" in line
    assert "--name NEW" in line and "--repeats N" in line


def test_dry_run_prints_the_start_line_first(tmp_path):
    out = CliRunner().invoke(cli, ["sweep", "--dry-run", "--results", str(tmp_path)])
    assert out.exit_code == 0, out.output
    first = out.output.splitlines()[0]
    assert first.startswith(
        "sweep cpu-smoke (harness/sweeps/cpu-smoke.toml; no GPU found: the default for a "
        f"machine without one) -> {tmp_path / 'cpu-smoke'}: 10 points, 10 to run; estimated "
    )


def test_durations_read_as_a_person_reads_them():
    assert [sweeps.duration(s) for s in (4.4, 85, 3600 + 5 * 60)] == [
        "4 s",
        "1 min 25 s",
        "1 h 05 min",
    ]


def test_a_bad_estimate_in_a_sweep_file_is_one_line():
    import pytest

    from distrinews.errors import UserError

    with pytest.raises(UserError, match=r"estimate\.point_s = -1"):
        parse_sweep('name = "x"\n[estimate]\npoint_s = -1\nmeasured_on = "m"\n')
    with pytest.raises(UserError, match=r"estimate\.measured_on"):
        parse_sweep('name = "x"\n[estimate]\npoint_s = 8.0\n')
    with pytest.raises(UserError, match=r"unknown key 'estimate\.seconds'"):
        parse_sweep('name = "x"\n[estimate]\nseconds = 8.0\n')
