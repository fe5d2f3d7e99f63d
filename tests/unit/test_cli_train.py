"""The `train` command's user-facing contract: bad input is one line, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from harness.cli import cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "missing.csv"], "error: missing.csv: data file not found"),
        (["--data", "nowhere"], "error: unknown data source 'nowhere'"),
        (["--data", "hub"], "offline alternatives"),
    ],
)
def test_bad_data_is_one_line_exit_2(args, message):
    result = CliRunner().invoke(cli, ["train", *args, "--steps", "1"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_bad_csv_row_names_file_and_line_through_a_real_process(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('"3","t","d"\n"9","t","d"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "train", "--data", str(bad), "--steps", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {bad}:2: label '9' is outside 1..4"
    assert "Traceback" not in proc.stderr


HUB_NAMES_SCRIPT = """
import time
from distrinews.dataset import get_tokenizer, load_agnews
from distrinews.model import NewsClassifier
for name, call in [("tokenizer", get_tokenizer), ("model", NewsClassifier.from_pretrained),
                   ("dataset", lambda: load_agnews("hub"))]:
    t0 = time.perf_counter()
    try:
        call()
        print(name, "loaded?!")
    except Exception as exc:
        print(name, round(time.perf_counter() - t0, 2), str(exc).splitlines()[0])
"""


@pytest.mark.slow
def test_unreachable_hub_fails_fast_without_retries(tmp_path):
    """No offline flag and a Hub that refuses connections (a closed loopback port): each hub
    name fails with its one-line error at once. Without the probe, huggingface_hub retries each
    file 5 times with back-off (1+2+4+8+8 s)."""
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run(
        [sys.executable, "-c", HUB_NAMES_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Retry" not in proc.stderr and "Retry" not in proc.stdout
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert set(lines) == {"tokenizer", "model", "dataset"}, proc.stdout
    for name, rest in lines.items():
        seconds, message = rest.split(" ", 1)
        assert float(seconds) < 10, (name, rest)  # the back-off alone would be 23 s
        assert "offline alternatives" in message, (name, message)


# -- one rank in process: threads, a finished run resumed, the paths it prints ---------------


def _fit_spec(**kw):
    from distrinews.runspec import RunSpec
    from distrinews.train import FitSpec

    run = RunSpec(device="cpu", model="tiny", data="synthetic:64", per_device_batch=16,
                  max_length=32, seed=0, lr=1e-3)  # fmt: skip
    return FitSpec(run=run, **kw)


def test_one_rank_trains_with_the_thread_count_a_launched_rank_gets(tmp_path, monkeypatch):
    import torch

    from harness.launch import build_env, rank_threads
    from harness.train_local import run_fit_local

    before = torch.get_num_threads()
    seen: list[tuple[str, int]] = []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    # Recorded from inside the training loop: the log callback runs on every logged step.
    run_fit_local(
        _fit_spec(epochs=1, stop_after_steps=2),
        tmp_path / "a",
        on_log=lambda m: seen.append((m, torch.get_num_threads())),
    )
    spec_threads = rank_threads(build_env(_fit_spec().run))
    assert spec_threads == 1  # what torchrun's ranks get (harness/launch.py)
    steps = [n for m, n in seen if m.startswith("step ")]
    assert steps and set(steps) == {spec_threads}
    assert seen[0][0] == "threads: 1 intra-op (OMP_NUM_THREADS, as a launched rank gets)"
    assert torch.get_num_threads() == before  # the process gets its own count back
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    seen.clear()
    run_fit_local(
        _fit_spec(epochs=1, stop_after_steps=2),
        tmp_path / "b",
        on_log=lambda m: seen.append((m, torch.get_num_threads())),
    )
    assert {n for m, n in seen if m.startswith("step ")} == {2}


def test_rank_threads_reads_omp_num_threads_as_openmp_does():
    from distrinews.errors import UserError
    from harness.launch import rank_threads

    assert rank_threads({}) == 1 and rank_threads({"OMP_NUM_THREADS": "4,2"}) == 4
    for bad in ("0", "x", "", "-1"):
        with pytest.raises(UserError, match="OMP_NUM_THREADS"):
            rank_threads({"OMP_NUM_THREADS": bad})


def test_resuming_a_finished_run_keeps_its_results(tmp_path):
    import json

    from harness.train_local import run_fit_local

    first = run_fit_local(_fit_spec(epochs=1), tmp_path, on_log=lambda _m: None)
    saved = (tmp_path / "fit_result.json").read_bytes()
    assert first.losses and first.accuracies
    lines: list[str] = []
    again = run_fit_local(_fit_spec(epochs=1), tmp_path, on_log=lines.append)
    assert (tmp_path / "fit_result.json").read_bytes() == saved  # not overwritten with nothing
    assert again == first
    assert any(line.startswith("nothing to train: ") for line in lines), lines
    assert any(line.startswith("kept ") for line in lines), lines
    assert json.loads(saved)["losses"]


def test_every_path_train_prints_exists(tmp_path):
    import re
    from pathlib import Path

    args = ["train", "--data", "synthetic:64", "--model", "tiny", "--batch-size", "16",
            "--max-length", "32"]  # fmt: skip
    cut = CliRunner().invoke(cli, [*args, "--steps", "1", "--out", str(tmp_path / "cut")])
    assert cut.exit_code == 0, cut.output
    # --steps ended before any checkpoint: no checkpoints folder is named.
    assert "no checkpoint yet" in cut.output and "checkpoints" not in cut.output.split("step 1")[-1]
    done = CliRunner().invoke(cli, [*args, "--epochs", "1", "--out", str(tmp_path / "done")])
    assert done.exit_code == 0, done.output
    assert "checkpoint: " in done.output
    for output in (cut.output, done.output):
        printed = re.findall(r"^(?:checkpoint|results): (\S+)", output, flags=re.MULTILINE)
        assert printed and all(Path(p).exists() for p in printed), printed
