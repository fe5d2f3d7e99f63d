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
