"""Failure classes (distrinews/failures.py): the exception -> class rule, the one exit-code
table and the launcher's inverse of it, and the error file a failing rank writes."""

from __future__ import annotations

import json

import pytest
import torch

from distrinews.errors import UserError
from distrinews.failures import (
    EXIT_CODES,
    GENERIC_EXIT_CODE,
    TERMINATED,
    Terminated,
    failure_class_of,
    write_error_file,
)
from distrinews.train import NonFiniteLossError
from harness import launch


def test_every_way_of_running_out_of_memory_is_classified_oom():
    from distrinews.failures import failure_class_of

    assert (
        failure_class_of(MemoryError()) == "oom"
    )  # Python's own allocation failure under RLIMIT_AS
    cpu = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 16777216 bytes."
    assert failure_class_of(RuntimeError(cpu)) == "oom"
    assert (
        failure_class_of(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling"))
        == "oom"
    )
    assert failure_class_of(RuntimeError("something else")) == "crashed"


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (UserError("bad"), "invalid_spec"),
        (NonFiniteLossError("loss is nan"), "nan_loss"),
        (Terminated(TERMINATED), "rank_died"),
        (RuntimeError("[Gloo] Connection closed by peer [127.0.0.1]:1234"), "rank_died"),
        (RuntimeError("NCCL error in: unhandled system error"), "nccl_error"),
        (torch.distributed.DistError("store timed out"), "nccl_error"),
        (RuntimeError("Broken pipe"), "rank_died"),
        (ValueError("anything else"), "crashed"),
    ],
)
def test_each_failure_class_and_its_exit_code(exc, failure):
    assert failure_class_of(exc) == failure
    assert failure in EXIT_CODES


def test_the_launcher_reads_exit_codes_back_through_the_worker_table(monkeypatch):
    # Every class the worker can report has a ledger status, and every exit code but the
    # generic one maps back to the status of the class(es) that exit with it.
    assert set(launch.FAILURE_STATUS) == set(EXIT_CODES)
    assert GENERIC_EXIT_CODE not in launch.EXIT_STATUS
    for failure, code in EXIT_CODES.items():
        if code != GENERIC_EXIT_CODE:
            assert launch.EXIT_STATUS[code] == launch.FAILURE_STATUS[failure]
    assert launch.EXIT_STATUS == {2: "invalid", 3: "oom", 4: "crashed", 5: "nccl_error"}


def test_the_first_failing_rank_claims_error_json_and_later_ones_keep_theirs(tmp_path):
    assert write_error_file(tmp_path, MemoryError(), rank=1) == 3
    assert write_error_file(tmp_path, UserError("fp8 is not a precision"), rank=0) == 2
    first = json.loads((tmp_path / "error.json").read_text())
    later = json.loads((tmp_path / "error.rank0.json").read_text())
    assert (first["failure"], first["rank"], first["exit_code"]) == ("oom", 1, 3)
    assert (later["failure"], later["message"]) == (
        "invalid_spec",
        "UserError: fp8 is not a precision",
    )
    assert list(first) == ["failure", "message", "rank", "traceback_tail", "exit_code"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["error.json", "error.rank0.json"]


def test_a_symlink_planted_at_error_json_is_not_written_through(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "error.json").symlink_to(target)
    assert write_error_file(tmp_path, RuntimeError("boom"), rank=3) == 1
    assert target.read_text() == "keep"
    assert json.loads((tmp_path / "error.rank3.json").read_text())["failure"] == "crashed"
