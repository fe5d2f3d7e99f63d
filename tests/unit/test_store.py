"""The ledger: append-only, durable, torn-line tolerant; the sweep lock; the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from distrinews.errors import UserError
from harness import store


def _row(run_id: str, status: str = "ok", **extra):
    return {"schema_version": 1, "run_id": run_id, "status": status, "reason": None, **extra}


def test_append_then_read_round_trips_in_order(tmp_path):
    store.append_row(tmp_path, _row("a", samples_per_s=10.5))
    store.append_row(tmp_path, _row("b", "oom", reason="CUDA out of memory"))
    rows = store.read_ledger(tmp_path)
    assert [r["run_id"] for r in rows] == ["a", "b"]
    assert rows[0]["samples_per_s"] == 10.5
    assert rows[1]["reason"] == "CUDA out of memory"


def test_missing_ledger_is_empty(tmp_path):
    assert store.read_ledger(tmp_path / "nope") == []


def test_torn_last_line_is_ignored_and_repaired_on_next_append(tmp_path):
    store.append_row(tmp_path, _row("a"))
    path = store.ledger_path(tmp_path)
    with path.open("ab") as fh:  # what a kill in the middle of a write leaves behind
        fh.write(b'{"run_id": "torn", "sta')
    assert [r["run_id"] for r in store.read_ledger(tmp_path)] == ["a"]
    store.append_row(tmp_path, _row("b"))
    assert [r["run_id"] for r in store.read_ledger(tmp_path)] == ["a", "b"]
    assert b"torn" not in path.read_bytes()
    assert path.read_bytes().endswith(b"\n")


def test_torn_only_line_is_cut_to_empty(tmp_path):
    store.ledger_path(tmp_path).write_bytes(b'{"run_id": "x"')
    assert store.read_ledger(tmp_path) == []
    store.append_row(tmp_path, _row("b"))
    assert [r["run_id"] for r in store.read_ledger(tmp_path)] == ["b"]


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    store.ledger_path(tmp_path).write_text('{"run_id": "a", "status": "ok"}\nGARBAGE\n{}\n')
    with pytest.raises(UserError, match=r"ledger.jsonl: line 2 is not valid JSON"):
        store.read_ledger(tmp_path)


@pytest.mark.parametrize(
    "row, err",
    [
        ({"status": "ok"}, ValueError),
        (_row("a", "exploded"), ValueError),
        (_row("a", samples_per_s=float("nan")), ValueError),
        (_row("a", nested={"x": 1}), ValueError),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_written(tmp_path, row, err):
    with pytest.raises(err):
        store.append_row(tmp_path, row)
    assert store.read_ledger(tmp_path) == []


def test_latest_row_per_run_id_wins():
    rows = [_row("a", "crashed", reason="x"), _row("b"), _row("a", "ok")]
    latest = store.latest_by_run_id(rows)
    assert latest["a"]["status"] == "ok"
    assert set(latest) == {"a", "b"}


@pytest.mark.slow
def test_second_lock_holder_is_refused_with_one_line(tmp_path):
    # The lock must hold across processes (flock is per open file description).
    with store.sweep_lock(tmp_path):
        code = (
            "import sys; from harness import store\n"
            "from distrinews.errors import UserError\n"
            "try:\n"
            f"    with store.sweep_lock({str(tmp_path)!r}): sys.exit(0)\n"
            "except UserError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 3, proc.stderr
        assert "in use by another sweep" in proc.stdout
    with store.sweep_lock(tmp_path):  # released on exit
        pass
    assert not (tmp_path / store.LOCK_NAME).exists()  # and no file left behind


def test_lock_removed_at_the_end_never_lets_two_sweeps_hold_it(tmp_path, monkeypatch):
    """The holder ends (unlinking .lock) between a second sweep's open and its flock: the
    second must not keep a lock on the removed file while a third locks a new one."""
    import fcntl

    holder = store.sweep_lock(tmp_path)
    holder.__enter__()
    real_flock, calls = fcntl.flock, []

    def flock(fd, op):
        if not calls:
            calls.append(fd)
            holder.__exit__(None, None, None)  # the first sweep ends right now
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    with store.sweep_lock(tmp_path) as path:
        assert path.exists()  # the lock we hold is on the file the path names
        third = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                real_flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(third)
    assert len(calls) == 1 and not path.exists()


def test_atomic_write_json_replaces_whole_file(tmp_path):
    path = tmp_path / "x.json"
    store.atomic_write_json(path, {"a": 1})
    store.atomic_write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp files left


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_unions_columns_across_schema_growth(tmp_path, suffix):
    sweep = tmp_path / "s1"
    store.append_row(sweep, _row("a", sweep="s1", samples_per_s=1.0))
    store.append_row(sweep, _row("b", "oom", sweep="s1", reason="oom", new_metric=3.5))
    store.append_row(sweep, _row("a", sweep="s1", samples_per_s=2.0))  # retry supersedes
    other = tmp_path / "s2"
    store.append_row(other, _row("c", sweep="s2", samples_per_s=4.0))
    out = tmp_path / f"all{suffix}"
    assert store.export_ledger(tmp_path, out) == 3
    frame = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(frame.columns[:3]) == ["sweep", "run_id", "status"]  # lead columns first
    frame = frame.set_index("run_id")
    assert frame.loc["a", "samples_per_s"] == 2.0
    assert pd.isna(frame.loc["b", "samples_per_s"])
    assert frame.loc["b", "new_metric"] == 3.5
    assert pd.isna(frame.loc["c", "new_metric"])


def test_export_refuses_unknown_suffix_and_empty_folder(tmp_path):
    with pytest.raises(UserError, match=r"no ledger\.jsonl"):
        store.export_ledger(tmp_path, tmp_path / "x.csv")
    store.append_row(tmp_path / "s", _row("a"))
    with pytest.raises(UserError, match=r"\.parquet or \.csv"):
        store.export_ledger(tmp_path, tmp_path / "x.xlsx")


def _record(**metrics):
    base = {"samples_per_s": 100.0, "step_time_s_p50": 0.5, "mfu": None, "measured_steps": 3}
    return {
        "schema_version": 1,
        "metrics": {**base, **metrics},
        "step_times_s": [[0.5, 0.5, 0.6], [0.9, 1.0, 1.1]],
    }


def _make(status="ok", record=None, reason=None):
    from distrinews.runspec import RunSpec

    spec = RunSpec(
        device="cpu", nproc_per_node=2, nccl_env={"NCCL_PROTO": "LL", "NCCL_ALGO": "Ring"}
    )
    return spec, store.make_row(
        sweep="s", spec=spec, status=status, reason=reason, started_at="t0", finished_at="t1",
        duration_s=1.23456, scaling_mode="weak", point_dir=f"points/{spec.run_id}",
        record=record, telemetry={"telemetry_available": False, "gpu_util_pct_mean": None},
        env_fingerprint="abc",
    )  # fmt: skip


def test_make_row_is_flat_with_config_metrics_and_rank_spread(tmp_path):
    spec, row = _make(record=_record(new_metric=7.0))
    assert row["run_id"] == spec.run_id and row["config_key"] == spec.config_key
    assert row["world_size"] == 2 and row["global_batch"] == spec.global_batch
    assert row["backend"] == "gloo"  # resolved, not "auto"
    assert row["nccl_env"] == "NCCL_ALGO=Ring,NCCL_PROTO=LL"
    assert row["samples_per_s"] == 100.0 and row["mfu"] is None
    assert row["new_metric"] == 7.0  # metrics added later by the worker are kept
    assert row["step_time_s_rank_spread"] == pytest.approx(1.0 / 0.5)
    assert row["duration_s"] == 1.235
    store.append_row(tmp_path, row)  # valid for the ledger as it is
    assert store.read_ledger(tmp_path) == [row]


def test_make_row_nulls_metrics_of_failures_and_non_numbers():
    _, failed = _make(status="oom", record=_record(), reason="CUDA out of memory")
    assert failed["samples_per_s"] is None and failed["step_time_s_rank_spread"] is None
    assert failed["reason"] == "CUDA out of memory"
    _, odd = _make(record=_record(samples_per_s="fast", step_time_s_p50=float("nan")))
    assert odd["samples_per_s"] is None and odd["step_time_s_p50"] is None
