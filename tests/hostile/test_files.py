"""Issue 12, items 6, 7, 9, 10 and 11: resumable files, kept evidence, file-system errors and
readers that validate what they read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distrinews.train import _truncate_history, check_fresh_out
from harness import serving_store, store
from harness import sweep as sweeps
from harness.spec import parse_sweep
from tests.hostile.conftest import assert_refused, invoke, snapshot

# -- item 6: a corrupt line never costs the good lines after it --------------------------------


@pytest.mark.parametrize(
    "bad",
    [b"GARBAGE", b'{"step": ', b"\xff\xfe\x00", b"[1, 2]", b'{"step": "3"}', b'{"loss": 1}', b""],
)
def test_a_corrupt_history_line_drops_only_itself(tmp_path, bad):
    path = tmp_path / "history.jsonl"
    good = [json.dumps({"step": s, "epoch": 0, "loss": 1.0 / s}).encode() for s in range(1, 7)]
    path.write_bytes(b"\n".join([*good[:2], bad, *good[2:]]) + b"\n")
    _truncate_history(path, upto_step=5)
    kept = [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert kept == [1, 2, 3, 4, 5]


# -- item 9: --no-resume never empties an old run ---------------------------------------------


@pytest.mark.parametrize("held", ["history.jsonl", "checkpoints"])
def test_no_resume_into_a_folder_holding_a_run_refuses(tmp_path, held):
    out = tmp_path / "run"
    out.mkdir()
    (out / "history.jsonl").write_text('{"step": 1, "epoch": 0, "loss": 1.0}\n')
    if held == "checkpoints":
        (out / "history.jsonl").unlink()
        (out / "checkpoints" / "step-00000001").mkdir(parents=True)
    before = snapshot(tmp_path)
    result = invoke("train", "--data", "synthetic:64", "--out", out, "--no-resume")
    assert_refused(result, str(out), held, "--no-resume")
    assert snapshot(tmp_path) == before


def test_no_resume_into_a_new_or_empty_folder_is_fine(tmp_path):
    check_fresh_out(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_fresh_out(tmp_path / "empty")


# -- item 7: --retry-failed keeps the failed attempt's evidence --------------------------------


@pytest.mark.slow
def test_retry_failed_keeps_each_failed_attempt_beside_the_new_one(tmp_path):
    """A real launch through a stand-in interpreter that fails like a crashed torchrun."""
    fake = tmp_path / "fake-python"
    fake.write_text('#!/bin/sh\necho "boom from attempt $(date +%s%N)"\nexit 1\n')
    fake.chmod(0o755)
    spec = parse_sweep(
        'name = "retry"\ntimeout_s = 60\n[run]\ndevice = "cpu"\nmodel = "tiny"\n'
        'data = "synthetic:64"\n'
    )
    opts = sweeps.SweepOptions(results=tmp_path, progress=False, python=str(fake))
    first = sweeps.run_sweep(spec, opts, echo=lambda _: None)
    assert first.statuses == {"crashed": 1}
    pdir = next((tmp_path / "retry" / "points").iterdir())
    evidence = snapshot(pdir)
    assert b"boom" in evidence["logs/launcher.log"] and "status.json" in evidence
    retry = sweeps.SweepOptions(
        results=tmp_path, progress=False, python=str(fake), retry_failed=True
    )
    sweeps.run_sweep(spec, retry, echo=lambda _: None)
    sweeps.run_sweep(spec, retry, echo=lambda _: None)
    kept = snapshot(pdir / "attempts" / "1")
    assert {k: v for k, v in kept.items() if k != "logs"} == {
        k: v for k, v in evidence.items() if k != "logs"
    }
    assert (pdir / "attempts" / "2" / "status.json").is_file()
    assert (pdir / "status.json").is_file() and not (pdir / "attempts" / "3").exists()
    assert len(store.read_ledger(tmp_path / "retry")) == 3


def test_fresh_point_dir_numbers_attempts_and_never_nests_them(tmp_path):
    pdir = store.fresh_point_dir(tmp_path, "abc")
    (pdir / "error.json").write_text('{"failure": "oom"}')
    for n in (1, 2):
        pdir = store.fresh_point_dir(tmp_path, "abc")
        assert sorted(p.name for p in pdir.iterdir()) == ["attempts"]
        assert (pdir / "attempts" / str(n) / "error.json").read_text() == '{"failure": "oom"}'
        (pdir / "error.json").write_text('{"failure": "oom"}')
    assert sorted(os.listdir(pdir / "attempts")) == ["1", "2"]


# -- item 11: readers validate what they read --------------------------------------------------


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"run_id": ["a", "b"]}, "field run_id"),
        ({"run_id": ""}, "field run_id"),
        ({"run_id": None}, "field run_id"),
        ({"status": "great"}, "field status"),
        ({"status": None}, "field status"),
        ({"reason": {"x": 1}}, "field reason"),
        ({"repeat": "1"}, "field repeat"),
        ({"repeat": 2**63}, "beyond 64 bits"),
        ({"config_key": 7}, "field config_key"),
        ({"point_dir": ["points", "x"]}, "field point_dir"),
    ],
)
def test_ledger_rows_of_the_wrong_type_are_refused_naming_line_and_field(sweep_dir, change, needle):
    rows = store.read_ledger(sweep_dir)
    rows[2].update(change)
    store.ledger_path(sweep_dir).write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = snapshot(sweep_dir)
    assert_refused(invoke("report", sweep_dir), "ledger.jsonl: line 3", needle)
    assert_refused(invoke("export", sweep_dir, "-o", sweep_dir.parent / "x.csv"), "line 3")
    assert_refused(invoke("compare", sweep_dir, sweep_dir), "line 3", needle)
    assert snapshot(sweep_dir) == before


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ('"samples_per_s": Infinity', "Infinity is not a JSON number"),
        ('"samples_per_s": -Infinity', "-Infinity is not a JSON number"),
        ('"samples_per_s": NaN', "NaN is not a JSON number"),
        ('"reason": "\\ud800"', "lone surrogate"),
        ('"samples_per_s": 1' + "0" * 30, "beyond 64 bits"),
        ('"x": ' + "[" * 100 + "]" * 100, "nested more than 64 levels"),
    ],
)
def test_ledger_values_that_are_not_data_are_refused(sweep_dir, raw, needle):
    lines = store.ledger_path(sweep_dir).read_text().splitlines()
    lines[1] = lines[1][:-1] + ", " + raw + "}"
    if '"samples_per_s": ' in raw:  # replace the existing key, not add a second one
        row = json.loads(lines[0])
        row.pop("samples_per_s")
        lines[1] = json.dumps(row)[:-1] + ", " + raw + "}"
    store.ledger_path(sweep_dir).write_text("\n".join(lines) + "\n")
    before = snapshot(sweep_dir)
    assert_refused(invoke("report", sweep_dir), "ledger.jsonl: line 2", needle)
    assert_refused(invoke("export", sweep_dir, "-o", sweep_dir.parent / "x.parquet"), "line 2")
    assert snapshot(sweep_dir) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"concurrency": [1]}, "concurrency"),
        ({"requests": "200"}, "requests"),
        ({"latency_s_p50": "fast"}, "latency_s_p50"),
        ({"kind": "sweep"}, "kind"),
        ({"url": 5}, "url"),
    ],
)
def test_serving_rows_of_the_wrong_type_are_refused(tmp_path, change, field):
    from tests.unit.test_bench_serve import _row

    folder = tmp_path / "serving"
    serving_store.append_serving_row(folder, _row(1))
    serving_store.append_serving_row(folder, _row(4))
    path = serving_store.serving_path(folder)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1].update(change)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = snapshot(tmp_path)
    assert_refused(invoke("report", folder), "serving.jsonl: line 2", f"field {field}")
    assert snapshot(tmp_path) == before


def test_telemetry_and_records_holding_non_numbers_are_skipped_not_trusted(sweep_dir):
    from harness import analysis

    row = next(r for r in store.read_ledger(sweep_dir) if r["world_size"] == 2)
    pdir = sweep_dir / row["point_dir"]
    (pdir / "telemetry.jsonl").write_text(
        '{"t_unix": Infinity, "util_pct": 5}\n{"t_unix": 1.0, "util_pct": NaN}\n'
        '{"t_unix": 2.0, "util_pct": 50, "gpu_index": 0}\n'
    )
    (pdir / "record.json").write_text('{"step_times_s": [[Infinity]]}')
    frame = analysis.load_telemetry(sweep_dir, [row["point_dir"]])
    assert list(frame["t_unix"]) == [2.0]
    assert analysis.load_rank_step_times(sweep_dir, [row["point_dir"]]) == {}


def test_parquet_export_of_mixed_values_keeps_every_value(sweep_dir, tmp_path):
    import pandas as pd

    rows = store.read_ledger(sweep_dir)
    rows[0]["gpu_name"] = 3.5
    rows[1]["gpu_name"] = "H100"
    rows[2]["gpu_name"] = True
    store.ledger_path(sweep_dir).write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "mixed.parquet"
    result = invoke("export", sweep_dir, "-o", out)
    assert result.exit_code == 0, result.output
    back = pd.read_parquet(out).set_index("run_id")["gpu_name"]
    assert back[rows[0]["run_id"]] == "3.5" and back[rows[1]["run_id"]] == "H100"
    assert back[rows[2]["run_id"]] == "True"


# -- item 10: file-system errors end in one line -----------------------------------------------


def test_a_path_under_a_regular_file_is_one_line(sweep_dir, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    before = snapshot(tmp_path)
    for args in (
        ("export", sweep_dir, "-o", plain / "x.csv"),
        ("report", sweep_dir, "-o", plain / "r.html"),
        ("sbatch", "cpu-smoke", "--nodes", "1", "-o", plain / "j"),  # cpu: no --gpus-per-node
        ("sweep", "cpu-smoke", "--results", plain / "results"),
        ("train", "--data", "synthetic:64", "--out", plain / "run"),
    ):
        line = assert_refused(invoke(*args), "plain.txt")
        assert "Not a directory" in line or "File exists" in line or "is a file" in line, line
    assert snapshot(tmp_path) == before


def test_a_folder_where_the_ledger_belongs_is_one_line(tmp_path):
    sweep = tmp_path / "s"
    (sweep / "ledger.jsonl").mkdir(parents=True)
    (sweep / "sweep.json").write_text("{}")
    line = assert_refused(invoke("report", sweep), "ledger.jsonl")
    assert "Is a directory" in line


def test_a_folder_where_env_json_belongs_is_one_line(tmp_path):
    (tmp_path / "r" / "cpu-smoke" / "env.json").mkdir(parents=True)
    result = invoke("sweep", "cpu-smoke", "--results", tmp_path / "r")
    assert_refused(result, "env.json", "is a folder")
    assert not store.ledger_path(tmp_path / "r" / "cpu-smoke").exists()


def _namespace_works() -> str | None:
    try:
        probe = subprocess.run(
            ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
            capture_output=True, timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare not usable here ({exc})"
    if probe.returncode != 0:
        return f"no private mount namespace here: {probe.stderr.decode().strip()}"
    return None


def in_namespace(setup: str, *cli_args: str, after: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``setup`` (mounts), ``distrinews-bench CLI_ARGS``, then ``after``, in a private
    mount namespace (the mounts vanish with it); the exit status is the command's."""
    reason = _namespace_works()
    if reason:
        pytest.skip(reason)
    cmd = " ".join(f"'{a}'" for a in cli_args)
    script = (
        f"set -e\n{setup}\nset +e\n'{sys.executable}' -m harness.cli {cmd}\nrc=$?\n"
        f"{after}\nexit $rc\n"
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300
    )


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _copy_into_tmpfs(sweep_dir: Path, mnt: Path, size: str) -> str:
    mnt.mkdir()
    return f"mount -t tmpfs -o size={size} tmpfs '{mnt}'\ncp -a '{sweep_dir}' '{mnt}/s'"


@pytest.mark.slow
def test_disk_full_while_writing_the_report_is_one_line_and_the_ledger_survives(
    sweep_dir, tmp_path
):
    mnt = tmp_path / "mnt"
    setup = _copy_into_tmpfs(sweep_dir, mnt, "1m")
    digest = f"sha256sum '{mnt}/s/ledger.jsonl' | cut -c1-64 >> '{tmp_path}/sums'"
    left = f"ls -A '{mnt}/s' > '{tmp_path}/left'"
    proc = in_namespace(f"{setup}\n{digest}", "report", str(mnt / "s"), after=f"{digest}\n{left}")
    assert_one_error_line(proc, str(mnt / "s" / "report.html"), "No space left on device")
    before, after = (tmp_path / "sums").read_text().split()
    assert before == after  # every finished row survives, byte for byte
    assert "report.html" not in (tmp_path / "left").read_text()  # no temp or partial file


@pytest.mark.slow
def test_disk_full_export_and_ledger_append_keep_every_row(sweep_dir, tmp_path):
    mnt = tmp_path / "mnt"
    setup = _copy_into_tmpfs(sweep_dir, mnt, "1m")
    fill = f"\ndd if=/dev/zero of='{mnt}/filler' bs=4k 2>/dev/null || true"
    proc = in_namespace(setup + fill, "export", str(mnt / "s"), "-o", str(mnt / "x.parquet"))
    assert_one_error_line(proc, "No space left on device")
    # Appending a row to a full disk fails with one line and leaves the committed rows intact.
    code = (
        "import sys; from harness import store; from harness.cli import describe_os_error\n"
        f"rows = store.read_ledger('{mnt}/s')\n"
        "try:\n"
        f"    store.append_row('{mnt}/s', {{'run_id': 'z', 'status': 'ok', 'pad': 'x' * 200000}})\n"
        "except OSError as exc:\n"
        "    print(describe_os_error(exc)); sys.exit(2)\n"
        f"finally:\n    assert store.read_ledger('{mnt}/s')[: len(rows)] == rows\n"
    )
    reason = _namespace_works()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"{setup}{fill}\nexec '{sys.executable}' -c \"{code}\""],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "No space left on device" in proc.stdout


@pytest.mark.slow
def test_read_only_sweep_folder_is_one_line(sweep_dir, tmp_path):
    ro = f"mount --bind '{sweep_dir}' '{sweep_dir}'\nmount -o remount,ro,bind '{sweep_dir}'"
    before = snapshot(sweep_dir)
    proc = in_namespace(ro, "report", str(sweep_dir))
    assert_one_error_line(proc, str(sweep_dir), "Read-only file system")
    proc = in_namespace(ro, "sweep", "cpu-smoke", "--results", str(sweep_dir), "--name", "n")
    assert_one_error_line(proc, str(sweep_dir), "Read-only file system")
    assert snapshot(sweep_dir) == before


@pytest.mark.slow
def test_a_sweep_whose_report_cannot_be_written_warns_and_exits_0(sweep_dir, tmp_path):
    """The report step of a finished sweep (cli._after_sweep) on a full disk."""
    mnt = tmp_path / "mnt"
    setup = _copy_into_tmpfs(sweep_dir, mnt, "1m")
    reason = _namespace_works()
    if reason:
        pytest.skip(reason)
    code = (
        "from pathlib import Path; from harness.cli import _after_sweep; "
        f"_after_sweep(Path('{mnt}/s'))"
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"{setup}\nexec '{sys.executable}' -c \"{code}\""],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("warning: no report:")
    assert "No space left on device" in proc.stderr
