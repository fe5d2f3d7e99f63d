"""Sweep files: parsing into frozen specs, grid expansion, stable run ids, and one-line errors."""

from __future__ import annotations

import dataclasses
import re

import pytest

from distrinews.errors import UserError
from harness import spec as S

GRID = """
name = "grid"
repeats = 2
[run]
device = "cpu"
model = "tiny"
data = "synthetic:64"
warmup_steps = 1
measured_steps = 3
[run.nccl]
algo = "Ring"
extra_env = { GLOO_SOCKET_IFNAME = "lo" }
[axes]
gpus_per_node = [2, 1]
per_device_batch = [8, 16]
precision = ["fp32", "bf16"]
[axes.ddp]
bucket_cap_mb = [25, 100]
[axes.nccl]
proto = ["LL", "Simple"]
"""

CPU = S.Resources(gpus_per_node=0)


def test_grid_is_the_product_in_ascending_world_size_with_stable_ids():
    sweep = S.parse_sweep(GRID, source="grid.toml")
    assert dataclasses.is_dataclass(sweep)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sweep.name = "x"  # type: ignore[misc]
    points = sweep.expand(CPU)
    assert (
        len(points) == 2 * 2 * 2 * 2 * 2 * 2
    )  # gpus x batch x precision x bucket x proto x repeats
    # Rounds: every configuration once (ascending world size) before any second repeat.
    repeats = [p.spec.repeat for p in points]
    assert repeats == sorted(repeats)
    for r in (0, 1):
        sizes = [p.spec.world_size for p in points if p.spec.repeat == r]
        assert sizes == sorted(sizes) and sizes[0] == 1
    assert len({p.run_id for p in points}) == len(points)
    # Repeats share the config key, differ in run id.
    by_key = {}
    for p in points:
        by_key.setdefault(p.spec.config_key, set()).add(p.spec.repeat)
    assert all(reps == {0, 1} for reps in by_key.values())
    again = S.parse_sweep(GRID, source="grid.toml").expand(CPU)
    assert [p.run_id for p in again] == [p.run_id for p in points]
    first = points[0].spec
    assert dict(first.nccl_env)["NCCL_ALGO"] == "Ring"
    assert dict(first.nccl_env)["GLOO_SOCKET_IFNAME"] == "lo"
    assert {dict(p.spec.nccl_env)["NCCL_PROTO"] for p in points} == {"LL", "Simple"}
    assert {p.spec.ddp.bucket_cap_mb for p in points} == {25, 100}
    assert all(p.skip_reason is None for p in points)


def test_unrunnable_points_are_kept_with_a_reason():
    text = """
name = "gpu"
[run]
device = "cuda"
[axes]
nodes = [1, 2]
gpus_per_node = [1, 4]
"""
    points = S.parse_sweep(text).expand(S.Resources(gpus_per_node=2))
    reasons = {(p.spec.nodes, p.spec.nproc_per_node): p.skip_reason for p in points}
    assert reasons[(1, 1)] is None
    assert "needs 4 GPUs per node; this machine has 2" in reasons[(1, 4)]
    assert "needs 2 nodes" in reasons[(2, 1)] and "--launcher slurm" in reasons[(2, 1)]
    slurm = S.parse_sweep(text).expand(S.Resources(nodes=2, gpus_per_node=4, launcher="slurm"))
    assert all(p.skip_reason is None for p in slurm)


def test_combinations_pytorch_cannot_run_are_skipped_with_the_reason():
    text = """
name = "knobs"
[run]
device = "cpu"
model = "tiny"
[axes]
grad_accum = [1, 2]
[axes.ddp]
static_graph = [false, true]
comm_hook = ["none", "bf16"]
"""
    points = S.parse_sweep(text).expand(CPU)
    reasons = {
        (p.spec.grad_accum, p.spec.ddp.static_graph, p.spec.ddp.comm_hook): p.skip_reason
        for p in points
    }
    assert reasons[(1, False, "none")] is None
    assert reasons[(1, True, "none")] is None
    assert "#143580" in reasons[(2, True, "none")]
    assert "needs CUDA + NCCL" in reasons[(1, False, "bf16")]
    assert sum(r is None for r in reasons.values()) == 3


def test_strong_scaling_fixes_global_batch_via_batch_or_accumulation():
    base = """
name = "strong"
scaling = "strong"
strong_via = "{via}"
[run]
device = "cpu"
per_device_batch = 4
[axes]
gpus_per_node = [1, 2, 3]
global_batch = [8]
"""
    points = S.parse_sweep(base.format(via="batch")).expand(CPU)
    got = {p.spec.world_size: (p.spec.per_device_batch, p.spec.grad_accum) for p in points}
    assert got[1] == (8, 1) and got[2] == (4, 1)
    three = next(p for p in points if p.spec.world_size == 3)
    assert "not divisible by 3 ranks" in three.skip_reason
    points = S.parse_sweep(base.format(via="accum")).expand(CPU)
    got = {p.spec.world_size: (p.spec.per_device_batch, p.spec.grad_accum) for p in points}
    assert got[1] == (4, 2) and got[2] == (4, 1)
    for p in points:
        if p.skip_reason is None:
            assert p.spec.global_batch == 8


def test_auto_gpu_counts_are_one_to_n():
    assert S.auto_gpu_counts(8) == (1, 2, 4, 8)
    assert S.auto_gpu_counts(6) == (1, 2, 4, 6)
    assert S.auto_gpu_counts(1) == (1,)
    assert S.auto_gpu_counts(0) == (1,)
    sweep = S.load_builtin("default-gpu")
    points = sweep.expand(S.Resources(gpus_per_node=4))
    assert sorted({p.spec.nproc_per_node for p in points}) == [1, 2, 4]
    assert all(p.spec.precision == "bf16" and p.spec.model == "base" for p in points)
    on_cpu = sweep.expand(S.Resources(gpus_per_node=0))
    assert on_cpu and all("this machine has 0" in p.skip_reason for p in on_cpu)
    assert "needs 1 GPU per node;" in on_cpu[0].skip_reason  # the plural agrees


def test_every_builtin_sweep_parses_and_default_is_fitted_to_the_machine():
    for name in S.builtin_sweeps():
        assert S.load_builtin(name).expand(S.Resources(gpus_per_node=8))
    assert S.resolve_sweep(None, gpu_count=0).name == "cpu-smoke"
    assert S.resolve_sweep(None, gpu_count=2).name == "default-gpu"
    cpu = S.resolve_sweep(None, gpu_count=0).expand(CPU)
    # 1 and 2 ranks, each repeated enough for the gate's significance test (>= 3 a point).
    assert sorted({p.spec.nproc_per_node for p in cpu}) == [1, 2]
    assert [p.spec.nproc_per_node for p in cpu].count(1) >= 3
    assert all(p.spec.model == "tiny" and p.spec.resolved_backend == "gloo" for p in cpu)
    assert dict(S.resolve_sweep(None, gpu_count=0).gate)["rtol"] < 0.2  # catches a 20% drop


def test_with_run_overrides_the_template_and_drops_that_axis():
    sweep = S.parse_sweep(GRID).with_run(data="real.csv", precision="fp32")
    points = sweep.expand(CPU)
    assert {p.spec.data for p in points} == {"real.csv"}
    assert {p.spec.precision for p in points} == {"fp32"}


BAD = [
    ("name = 'x'\nbogus = 1", r"unknown key 'bogus'; allowed: name, description"),
    ("name = 'x'\n[run]\nbogus = 1", r"unknown key 'run\.bogus'; allowed: .*per_device_batch"),
    ("name = 'x'\n[axes]\nbogus = [1]", r"unknown key 'axes\.bogus'; allowed: nodes"),
    ("name = 'x'\n[axes]\nprecision = []", r"axes\.precision is empty"),
    ("name = 'x'\n[axes]\nprecision = 'bf16'", r"axes\.precision = 'bf16': expected a list"),
    (
        "name = 'x'\n[axes]\nprecision = ['bf16', 'fp8']",
        r"axes\.precision\[1\]: precision = 'fp8' is not allowed; allowed: fp32, tf32, fp16, bf16",
    ),
    ("name = 'x'\n[axes]\nper_device_batch = [0]", r"axes\.per_device_batch\[0\]: .*>= 1"),
    ("name = 'x'\n[run]\nper_device_batch = 0", r"run\.per_device_batch = 0 .*>= 1"),
    ("name = 'x'\n[run]\nper_device_batch = '8'", r"run\.per_device_batch = '8'"),
    ("name = 'x'\n[run]\ncompile = 'yes'", r"run\.compile = 'yes' .*true or false"),
    ("name = 'x'\n[axes.ddp]\nbucket_mb = [1]", r"unknown key 'axes\.ddp\.bucket_mb'"),
    ("name = 'x'\n[axes.ddp]\nbucket_cap_mb = [-1]", r"axes\.ddp\.bucket_cap_mb\[0\]"),
    ("name = 'x'\n[axes.nccl]\nalgo = ['Ring', 'Star']", r"algo = 'Star': unknown 'Star'"),
    ("name = 'x'\n[run.nccl]\nproto = 'Fast'", r"run\.nccl\.proto = 'Fast'.*LL, LL128, Simple"),
    ("name = 'x'\n[run.nccl]\np2p_disable = 1", r"p2p_disable = 1: expected true or false"),
    ("name = 'x'\n[run.nccl]\nbogus = 1", r"run\.nccl: unknown key 'bogus'"),
    ("name = 'x'\nscaling = 'linear'", r"scaling = 'linear'; allowed: weak, strong"),
    ("name = 'x'\nscaling = 'strong'", r"needs axes\.global_batch"),
    ("name = 'x'\nrepeats = 0", r"repeats = 0"),
    ("name = 'x'\n[gate]\nrtol = 1.5", r"gate\.rtol = 1\.5; allowed: rtol a fraction"),
    ("name = 'x'\n[gate]\nefficiency_tol_pp = 'big'", r"gate\.efficiency_tol_pp = 'big'"),
    ("name = 'x'\n[gate]\nalpha = 0.1", r"unknown key 'gate\.alpha'; allowed: rtol"),
    ("name = 'x'\ngate = 3", r"gate must be a table"),
    ("name = 'a b'", r"name = 'a b'"),
    ("description = 'no name'", r"missing key 'name'"),
    ("name = 'x'\n[axes\nfoo = 1", r"invalid TOML"),
    ("name = 'x'\n[axes]\ngpus_per_node = [0]", r"axes\.gpus_per_node\[0\]"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_sweep_file_is_one_line_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        S.load_sweep(path)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(str(path)), line
    assert re.search(message, line), line


def test_missing_file_and_unknown_builtin():
    with pytest.raises(UserError, match="no such sweep file"):
        S.load_sweep("/nonexistent/x.toml")
    with pytest.raises(UserError, match="no built-in sweep 'nope'; built-in: cpu-2node, cpu-smoke"):
        S.resolve_sweep("nope", gpu_count=0)
