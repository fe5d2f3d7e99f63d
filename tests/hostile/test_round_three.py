"""Issue 25 (hardening, round three): the cases of the issue that are not tested for every
command at once (test_outputs.py, test_every_option.py), by class.

Each case as a user meets it: the exit code, the one line naming the file, field or value and
what is allowed, and nothing written or changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from distrinews import checkpoint
from distrinews.safeio import decimal
from harness import store
from harness.launch import slurm_gpus_per_node
from harness.sweep import SweepOptions, detect_resources
from harness.telemetry import select_devices
from harness.tools import perturb
from tests.hostile.conftest import assert_refused, invoke, run_command, snapshot

#: Digits that are not ASCII: '²' (isdigit() yes, int() no), '٣' and '３' (both yes: 3).
UNICODE_DIGITS = ["²", "٣", "３", "①", "1²", "٣٣"]

# -- tracebacks: numbers spelled in other scripts ---------------------------------------------


@pytest.mark.parametrize(
    "text", [*UNICODE_DIGITS, "", " 1", "1 ", "+1", "-1", "1_0", "1.0", "9" * 19]
)
def test_decimal_reads_ascii_digits_only(text):
    assert decimal(text) is None


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("007", 7), ("9" * 18, 10**18 - 1)])
def test_decimal_reads_what_it_should(text, value):
    assert decimal(text) == value


@pytest.mark.parametrize("name", UNICODE_DIGITS)
def test_retrying_a_point_whose_attempts_hold_a_unicode_digit_folder(tmp_path, name):
    """`sweep --retry-failed` numbers the next attempt; a folder named '²' made int() raise."""
    pdir = tmp_path / "s" / "points" / "abc"
    (pdir / "attempts" / name).mkdir(parents=True)
    (pdir / "attempts" / name / "mine.txt").write_text("kept")
    (pdir / "attempts" / "1").mkdir()
    (pdir / "error.json").write_text("{}")  # the failed attempt being retried
    assert store.fresh_point_dir(tmp_path / "s", "abc") == pdir
    assert (pdir / "attempts" / "2" / "error.json").is_file()  # after the ASCII 1
    assert (pdir / "attempts" / name / "mine.txt").read_text() == "kept"
    assert sorted(p.name for p in pdir.iterdir()) == ["attempts"]


@pytest.mark.parametrize("value", ["²", "٣", "1,²"])
def test_bench_serve_concurrency_in_other_digits_is_one_line(value):
    result = invoke("bench-serve", "--url", "http://127.0.0.1:9", "--concurrency", value)
    assert_refused(result, "--concurrency", "not a positive integer")


@pytest.mark.parametrize("value", ["²", "٣", "0", "-1"])
def test_train_synthetic_size_in_other_digits_is_one_line(tmp_path, value):
    out = tmp_path / "out"
    assert_refused(invoke("train", "--data", f"synthetic:{value}", "--out", out), "synthetic size")
    assert not out.exists()


def test_a_checkpoint_folder_named_in_other_digits_is_not_a_checkpoint(tmp_path):
    for name in ("step-²", "step-٣", "step-00000002"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / "config.json").write_text("{}")
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000002"]


def test_environment_counts_in_other_digits_are_ignored():
    env = {"SLURM_JOB_NUM_NODES": "²", "SLURM_CPUS_ON_NODE": "٣", "SLURM_GPUS_ON_NODE": "²"}
    res = detect_resources(SweepOptions(launcher="slurm"), env)
    assert res.nodes == 1 and res.cpus_per_node != 3
    assert slurm_gpus_per_node(env) == 0

    class Nvml:
        def nvmlDeviceGetCount(self):
            return 4

        def nvmlDeviceGetHandleByIndex(self, i):
            return i

        def nvmlDeviceGetUUID(self, i):
            return f"GPU-{i}"

    assert select_devices(Nvml(), "1,²,2", 4) == [1]  # CUDA stops at the first bad entry


# -- tracebacks and a half-made copy: the perturb tool ---------------------------------------


@pytest.mark.parametrize(
    ("scale", "needle"),
    [
        ("inf", "not a finite number"),
        ("nan", "not a finite number"),
        ("-inf", "x>0"),
        ("0", "x>0"),
        ("-0.5", "x>0"),
        ("1e-320", "finite, non-zero"),  # a time divided by it overflows
        ("1e308", "finite, non-zero"),  # a rate multiplied by it overflows
        ("1e-310", "finite, non-zero"),
    ],
)
def test_perturb_refuses_a_scale_that_is_not_a_planted_change_and_leaves_nothing(
    sweep_dir, tmp_path, scale, needle
):
    dst = tmp_path / "slow"
    before = snapshot(tmp_path)
    result = run_command(("tool:perturb",), sweep_dir, dst, "--throughput-scale", scale)
    assert_refused(result, "--throughput-scale", needle)
    assert snapshot(tmp_path) == before  # no half-made copy, no temp folder


def test_perturb_copies_whole_or_not_at_all(sweep_dir, tmp_path, monkeypatch):
    """A failure after the copy started (here: a destination that appears meanwhile) leaves
    neither a half-made copy nor a temp folder, and the folder that appeared untouched."""
    dst = tmp_path / "slow"
    real = perturb.store.atomic_write_text

    def write_then_race(*args, **kwargs):  # the new ledger, written after the copy
        real(*args, **kwargs)
        dst.mkdir()
        (dst / "theirs.txt").write_text("theirs")

    monkeypatch.setattr(perturb.store, "atomic_write_text", write_then_race)
    with pytest.raises(perturb.UserError, match=r"appeared|already exists"):
        perturb.perturb(sweep_dir, dst, scale=0.8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "slow"]
    assert [p.name for p in dst.iterdir()] == ["theirs.txt"]


@pytest.mark.parametrize("where", ["inside", "symlink", "exists"])
def test_perturb_destination_inside_the_source_a_link_or_taken_is_refused(
    sweep_dir, tmp_path, where
):
    dst = {"inside": sweep_dir / "copy", "symlink": tmp_path / "ln", "exists": tmp_path}[where]
    if where == "symlink":
        dst.symlink_to(tmp_path / "nowhere")
    before = snapshot(tmp_path)
    result = run_command(("tool:perturb",), sweep_dir, dst, "--throughput-scale", "0.8")
    assert_refused(result, str(dst))
    assert snapshot(tmp_path) == before


def test_perturb_copies_planted_links_as_links_never_their_targets(sweep_dir, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the copy")
    (sweep_dir / "notes.txt").symlink_to(secret)
    result = run_command(
        ("tool:perturb",), sweep_dir, tmp_path / "slow", "--throughput-scale", "0.8"
    )
    assert result.exit_code == 0, result.output
    copied = tmp_path / "slow" / "notes.txt"
    assert copied.is_symlink() and os.readlink(copied) == str(secret)
    rows = store.read_ledger(tmp_path / "slow")
    ok = [r for r in store.read_ledger(sweep_dir) if r["status"] == "ok"]
    assert [r["samples_per_s"] for r in rows if r["status"] == "ok"] == pytest.approx(
        [0.8 * r["samples_per_s"] for r in ok]
    )


# -- unbounded and tracebacks: train's ranks and device, checked before launching ------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--nproc-per-node", "1000000000"], "this machine has"),
        (["--nproc-per-node", "999"], "this machine has"),
        (["--device", "cuda", "--nproc-per-node", "2"], "CUDA is not available here"),
        (["--device", "cuda"], "CUDA is not available here"),
        (["--model", "synthetic-sleep", "--nproc-per-node", "100000"], "at most 8 per core"),
    ],
)
def test_train_refuses_ranks_this_machine_cannot_hold_before_launching(tmp_path, args, needle):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks a machine without CUDA")
    out = tmp_path / "out"
    result = invoke("train", "--data", "synthetic:64", *args, "--out", out)
    line = assert_refused(result, needle)
    assert "--nproc-per-node" in line or "--device" in line
    assert not out.exists()  # no fit.json, nothing launched


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seed", str(2**32)], "--seed"),
        (["--seed", str(10**30)], "--seed"),
        (["--batch-size", "1000000000000"], "cannot fill one step"),
    ],
)
def test_train_values_beyond_what_the_run_can_use_are_one_line(tmp_path, args, needle):
    out = tmp_path / "out"
    result = invoke("train", "--data", "synthetic:64", *args, "--steps", "1", "--out", out)
    assert_refused(result, needle)


@pytest.mark.parametrize("value", ["1,1000000000", "1025", str(10**30)])
def test_bench_serve_concurrency_is_bounded_before_any_task_exists(value):
    """10^9 requests in flight were 10^9 asyncio tasks (and bodies) before the first request."""
    result = invoke("bench-serve", "--url", "http://127.0.0.1:9", "--concurrency", value)
    assert_refused(result, "--concurrency", "at most 1024")


# -- tracebacks: resuming from a checkpoint someone else wrote -------------------------------


def _rewrite_weights(ckpt: Path, payload) -> None:
    """Replace checkpoint.pt and update config.json's size and checksum to match, as someone
    who knows the format would (so the checksum cannot be what refuses it)."""
    import hashlib

    import torch

    torch.save(payload, ckpt / "checkpoint.pt")
    data = (ckpt / "checkpoint.pt").read_bytes()
    config = json.loads((ckpt / "config.json").read_text())
    config["checkpoint_bytes"] = len(data)
    config["checkpoint_sha256"] = hashlib.sha256(data).hexdigest()
    (ckpt / "config.json").write_text(json.dumps(config))


class Planted:
    """Unpickles by calling ``print``: weights_only loading refuses it."""

    def __reduce__(self):
        return (print, ("this ran",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny single-rank run with a checkpoint after each of its 2 steps."""
    out = tmp_path_factory.mktemp("train") / "out"
    args = ("--data", "synthetic:64", "--steps", "2", "--batch-size", "8", "--checkpoint-every")
    result = invoke("train", *args, "1", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def _plant(payload: dict, kind: str):
    import collections

    import torch

    if kind == "pickled-object":
        return {**payload, "extra": Planted()}
    if kind == "a-list":
        return [1, 2, 3]
    if kind == "no-model":
        return {k: v for k, v in payload.items() if k != "model"}
    if kind == "foreign-weights":
        return {**payload, "model": {"x": torch.zeros(1)}}
    if kind == "rng-not-a-list":
        return {**payload, "rank_rng": "xx"}
    if kind == "rng-wrong-size":
        return {**payload, "rank_rng": [{"cpu": torch.zeros(3, dtype=torch.uint8)}]}
    if kind == "optimizer-wrong-shape":
        optimizer = {**payload["optimizer"], "state": dict(payload["optimizer"]["state"])}
        first = next(iter(optimizer["state"]))
        optimizer["state"][first] = {**optimizer["state"][first], "exp_avg": torch.zeros(3)}
        return {**payload, "optimizer": optimizer}
    if kind == "optimizer-garbage":
        return {**payload, "optimizer": {"state": {"a": 1}, "param_groups": [{"params": "x"}]}}
    if kind == "ordered-dict":
        return collections.OrderedDict(a=1)
    raise AssertionError(kind)


KINDS = [
    "pickled-object", "a-list", "no-model", "foreign-weights", "rng-not-a-list",
    "rng-wrong-size", "optimizer-wrong-shape", "optimizer-garbage", "ordered-dict",
]  # fmt: skip


def _copy(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(trained, out)
    return out, checkpoint.latest_checkpoint(out)


def test_resuming_train_from_a_checkpoint_holding_a_pickled_object_is_one_line_exit_2(
    trained, tmp_path, capfd
):
    """The issue's case, as the user meets it: exit 1 and torch's whole UnpicklingError before."""
    import torch

    out, ckpt = _copy(trained, tmp_path)
    payload = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    _rewrite_weights(ckpt, _plant(payload, "pickled-object"))
    before = snapshot(out)
    args = ("--data", "synthetic:64", "--steps", "3", "--batch-size", "8", "--out", out)
    line = assert_refused(invoke("train", *args), str(ckpt), "pickled objects")
    assert len(line) < 300
    assert "this ran" not in capfd.readouterr().out  # nothing unpickled ran
    assert snapshot(out) == before


@pytest.mark.parametrize("kind", ["pickled-object", "a-list", "rng-wrong-size"])
def test_a_multi_rank_resume_checks_the_checkpoint_before_starting_any_rank(
    trained, tmp_path, kind
):
    """With --nproc-per-node 2 every rank refused the file, each under torchrun's traceback;
    the launcher checks it first (what it can without the model) and starts nothing."""
    import torch

    from harness.spec import local_cpu_count

    if local_cpu_count() < 2:
        pytest.skip("two CPU ranks need two cores")

    out, ckpt = _copy(trained, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "world_size": 2}))
    payload = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    payload["rank_rng"] = payload["rank_rng"] * 2  # as two ranks would have written it
    _rewrite_weights(ckpt, _plant(payload, kind))
    before = snapshot(out)
    args = ("--data", "synthetic:64", "--steps", "3", "--batch-size", "8", "--out", out)
    assert_refused(invoke("train", *args, "--nproc-per-node", "2"), str(ckpt))
    assert snapshot(out) == before  # no fit.json: nothing was launched


@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_that_is_not_ours_is_refused_before_anything_is_restored(
    trained, tmp_path, kind
):
    """What resuming loads, each part planted wrong by someone who kept the checksum right: one
    CheckpointError line, and the model's weights as they were (checked before restoring)."""
    import torch

    _, ckpt = _copy(trained, tmp_path)
    model = checkpoint.load_for_inference(ckpt).model
    optimizer = torch.optim.AdamW(model.parameters())
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    payload = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    _rewrite_weights(ckpt, _plant(payload, kind))
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load_training_state(
            ckpt, model=model, optimizer=optimizer, scaler=None, rank=0, world_size=1,
            device=torch.device("cpu"),
        )  # fmt: skip
    assert str(ckpt) in str(info.value) and "\n" not in str(info.value)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_a_torn_weights_file_with_a_matching_checksum_is_one_line(trained, tmp_path):
    import hashlib

    _, ckpt = _copy(trained, tmp_path)
    (ckpt / "checkpoint.pt").write_bytes(b"\x80\x02garbage")
    config = json.loads((ckpt / "config.json").read_text())
    data = (ckpt / "checkpoint.pt").read_bytes()
    config.update(checkpoint_bytes=len(data), checkpoint_sha256=hashlib.sha256(data).hexdigest())
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(checkpoint.CheckpointError, match="cannot load"):
        checkpoint.check_inference(ckpt)


# -- the lead's three: a session pooled twice, a baseline's [gate] out of range ------------------


def test_pool_refuses_one_session_given_twice(shared_sweep, tmp_path):
    """The same folder twice (or through a symlink) would count one session's offset twice."""
    alias = tmp_path / "alias"
    alias.symlink_to(shared_sweep, target_is_directory=True)
    before = snapshot(shared_sweep)
    for second in (shared_sweep, alias):
        dst = tmp_path / f"pooled-{second.name}"
        result = run_command(("tool:pool",), dst, shared_sweep, second)
        assert_refused(result, str(second), "the same session as", "give each session once")
        assert not dst.exists()
    assert snapshot(shared_sweep) == before


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("rtol", 5, "a fraction in [0, 1)"),
        ("rtol", "x", "a fraction in [0, 1)"),
        ("rtol", True, "a fraction in [0, 1)"),
        ("efficiency_tol_pp", -1, "percentage points >= 0"),
        ("efficiency_tol_pp", "15", "percentage points >= 0"),
    ],
)
def test_a_baseline_gate_out_of_range_names_its_file_not_an_option(
    shared_sweep, tmp_path, key, value, allowed
):
    """A hand-edited baseline's [gate] is the file's fault: the line names sweep.json and the
    field (it blamed `--rtol 5.0`, which nobody gave), and nothing falls back silently."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(shared_sweep, base)
    doc = json.loads((base / "sweep.json").read_text())
    doc.setdefault("spec", {})["gate"] = {key: value}
    (base / "sweep.json").write_text(json.dumps(doc))
    before = snapshot(tmp_path)
    line = assert_refused(invoke("compare", base, shared_sweep), "sweep.json", f"spec.gate.{key}")
    assert allowed in line and "--rtol" not in line
    assert snapshot(tmp_path) == before
