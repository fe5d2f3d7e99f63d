"""Issue 12, items 4, 5 and 15: bounds, non-finite numbers, sweep names, non-sweep folders."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from distrinews.errors import UserError
from distrinews.runspec import RunSpec
from distrinews.train import FitSpec
from harness import spec as specs
from harness.spec import Resources, parse_sweep, why_skipped
from tests.hostile.conftest import assert_refused, invoke, snapshot

BASE = """
name = "t"
[run]
device = "cpu"
model = "tiny"
data = "synthetic:64"
"""


def sweep_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


# -- item 4: bounds ---------------------------------------------------------------------------


def test_a_million_point_grid_dry_run_answers_at_once(tmp_path):
    axes = "\n".join(
        f"{name} = [{', '.join(str(v) for v in range(1, 101))}]"
        for name in ("per_device_batch", "seed", "measured_steps")
    )
    path = sweep_file(tmp_path, BASE + "[axes]\n" + axes + "\n")
    start = time.perf_counter()
    result = invoke("sweep", path, "--dry-run", "--results", tmp_path / "r")
    elapsed = time.perf_counter() - start
    assert_refused(result, "1,000,000 points", "--max-points", str(path))
    # Expanding would take minutes; refusing is a product of 3 lengths. 30 s is generous on a
    # loaded box and still catches an expansion.
    assert elapsed < 30, elapsed
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("limit", "ok"), [(5, False), (11, False), (12, True), (100, True)])
def test_max_points_is_an_explicit_override(tmp_path, limit, ok):
    text = "repeats = 2\n" + BASE + "[axes]\nper_device_batch = [1, 2, 3]\nseed = [0, 1]\n"
    result = invoke(
        "sweep", sweep_file(tmp_path, text), "--dry-run", "--max-points", limit,
        "--results", tmp_path / "r",
    )  # fmt: skip
    if ok:
        assert result.exit_code == 0, result.output
        assert "12 points" in result.stdout
    else:
        assert_refused(result, "12 points", f"limit of {limit}")


@pytest.mark.parametrize("repeats", ["0", "101", "1000000", "-1", "2.5", '"3"', "true"])
def test_repeats_are_bounded(tmp_path, repeats):
    path = sweep_file(tmp_path, f"repeats = {repeats}\n" + BASE)
    assert_refused(invoke("sweep", path, "--dry-run"), str(path), "repeats", "1..100")


def test_the_repeat_bound_itself_is_allowed():
    text = "repeats = 100\n" + BASE
    assert parse_sweep(text).repeats == specs.MAX_REPEATS == 100


@pytest.mark.parametrize(
    ("ranks", "cores", "skipped"), [(1, 1, False), (2, 2, False), (3, 2, True), (64, 16, True)]
)
def test_cpu_ranks_beyond_the_cores_are_skipped_with_the_reason(ranks, cores, skipped):
    spec = RunSpec(device="cpu", nproc_per_node=ranks)
    reason = why_skipped(spec, Resources(cpus_per_node=cores))
    if skipped:
        assert reason == f"needs {ranks} CPU ranks per node; this machine has {cores} cores"
    else:
        assert reason is None


def test_synthetic_sleep_ranks_may_outnumber_the_cores():
    """Its compute is a sleep, so 8 ranks on 2 cores measure DDP, not the scheduler."""
    sleepy = RunSpec(device="cpu", nproc_per_node=8, model="synthetic-sleep")
    assert why_skipped(sleepy, Resources(cpus_per_node=2)) is None
    real = RunSpec(device="cpu", nproc_per_node=8, model="tiny")
    assert "CPU ranks" in why_skipped(real, Resources(cpus_per_node=2))


def test_a_cpu_sweep_past_this_machine_skips_only_the_extra_points(tmp_path):
    cores = specs.local_cpu_count()
    text = BASE + f"[axes]\ngpus_per_node = [1, {cores}, {cores + 1}, {cores * 4}]\n"
    result = invoke("sweep", sweep_file(tmp_path, text), "--dry-run", "--results", tmp_path)
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if "cpu" in ln]
    assert sum(" run " in ln for ln in lines) == (1 if cores == 1 else 2)
    assert sum(f"this machine has {cores} cores" in ln for ln in lines) == 2


def test_cpu_smoke_still_runs_both_points_on_two_cores():
    points = specs.load_builtin("cpu-smoke").expand(Resources(cpus_per_node=2))
    assert {p.spec.world_size for p in points} == {1, 2}  # every repeat of both GPU counts
    assert [p.skip_reason for p in points] == [None] * len(points)


# -- item 5: non-finite numbers ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "+inf"])
@pytest.mark.parametrize(
    ("command", "option"),
    [
        (("sweep", "cpu-smoke", "--dry-run"), "--timeout-s"),
        (("compare", "a", "b"), "--rtol"),
        (("compare", "a", "b"), "--efficiency-tol-pp"),
        (("compare", "a", "b"), "--alpha"),
        (("train", "--data", "synthetic:8"), "--lr"),
        (("train", "--data", "synthetic:8"), "--eval-fraction"),
        (("bench-serve", "--url", "http://127.0.0.1:9"), "--max-seconds"),
        (("serve", "--checkpoint", "x"), "--batch-window-ms"),
    ],
)
def test_cli_options_refuse_non_finite_numbers(tmp_path, command, option, value):
    result = invoke(*command, option, value)
    assert_refused(result, option)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("timeout_s = nan", "timeout_s"),
        ("timeout_s = inf", "timeout_s"),
        ("[run]\nlr = nan", "run.lr"),
        ("[run]\nlr = -inf", "run.lr"),
        ("[run.ddp]\nbucket_cap_mb = inf", "run.ddp.bucket_cap_mb"),
        ("[axes]\nlr = [0.001, nan]", "axes.lr[1]"),
        ("[axes.ddp]\nbucket_cap_mb = [25, inf]", "axes.ddp.bucket_cap_mb[1]"),
        ("[run.nccl.extra_env]\nNCCL_X = nan", "run.nccl.extra_env.NCCL_X"),
    ],
)
def test_sweep_files_refuse_non_finite_numbers(tmp_path, line, field):
    path = sweep_file(tmp_path, 'name = "t"\n' + line + "\n")
    assert_refused(invoke("sweep", path, "--dry-run"), str(path), field, "not a finite number")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["lr", "ddp"])
def test_spec_json_refuses_non_finite_numbers(field, token):
    body = json.loads(RunSpec().to_json())
    text = json.dumps(body).replace(
        '"lr": 5e-05' if field == "lr" else '"bucket_cap_mb": 25.0',
        f'"lr": {token}' if field == "lr" else f'"bucket_cap_mb": {token}',
    )
    name = "lr" if field == "lr" else "ddp.bucket_cap_mb"
    with pytest.raises(UserError) as info:
        RunSpec.from_json(text, where="run.json")
    assert str(info.value).startswith(f"run.json: field {name}: {token} is not a JSON number")
    fit = json.dumps({"run": body}).replace('"lr": 5e-05', f'"lr": {token}')
    if field == "lr":
        with pytest.raises(UserError, match="is not a JSON number"):
            FitSpec.from_json(fit, where="fit.json")


@pytest.mark.parametrize(("name", "value"), [("lr", float("nan")), ("lr", float("inf"))])
def test_runspec_refuses_non_finite_values_built_in_code(name, value):
    with pytest.raises(UserError, match="finite"):
        RunSpec(**{name: value})


# -- item 15: sweep names and non-sweep folders ------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["ok\n", "ok\r", "a/b", "..", ".hidden", "", " x", "x y", "é", "a\x00b", "x" * 101, "-x"],
)
def test_sweep_names_are_exactly_letters_digits_dot_underscore_dash(tmp_path, name):
    path = sweep_file(tmp_path, f"name = {json.dumps(name)}\n")
    assert_refused(invoke("sweep", path, "--dry-run"), str(path), "name")
    if "\x00" not in name and name:
        result = invoke("sweep", "cpu-smoke", "--dry-run", "--name", name)
        assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.parametrize("name", ["ok", "a.b_c-1", "X" * 100])
def test_good_names_pass(name):
    assert parse_sweep(f'name = "{name}"\n').name == name


def test_report_on_a_folder_that_is_not_a_sweep_refuses_like_export_and_compare(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    before = snapshot(tmp_path)
    assert_refused(invoke("report", folder), str(folder), "not a sweep folder")
    assert_refused(invoke("report", folder, "--format", "text"), "not a sweep folder")
    assert_refused(invoke("export", folder, "-o", tmp_path / "x.csv"), str(folder))
    assert_refused(invoke("compare", folder, folder), str(folder))
    assert snapshot(tmp_path) == before
