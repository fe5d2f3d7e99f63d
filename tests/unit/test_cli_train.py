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
