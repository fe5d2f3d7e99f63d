"""``distrinews-bench project`` meets hostile input (issues 22 and 25).

Every case: one error line naming the flag, value, file or field and what is allowed, exit 2,
no traceback, and nothing written or changed (the folder is snapshotted before and after).
Every bound is checked before the work it bounds (a test times the worst ones: they must fail
fast, not after allocating what they bound).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.helpers_projection import Plant, write_planted_sweep
from tests.hostile.conftest import assert_refused, invoke, snapshot

PURE = ["project", "--step-time-ms", "100", "--grad-mb", "100", "--gpus", "8,16"]


def refused_pure(tmp_path: Path, *extra: str, needles: tuple[str, ...]) -> None:
    before = snapshot(tmp_path)
    assert_refused(invoke(*PURE, *extra), *needles)
    assert snapshot(tmp_path) == before


# -- every flag: zero, negative, non-finite, absurd ------------------------------------------

CASES = [
    # the issue-25 cases
    (["--grad-mb", "1e308"], ("--grad-mb", "<= 1e+09")),
    (["--grad-mb", "nan"], ("--grad-mb", "finite")),
    (["--grad-mb", "0"], ("--grad-mb", "> 0")),
    (["--bucket-mb", "0.000001"], ("--bucket-mb", "buckets", "at most 100,000")),
    (["--bucket-mb", "0"], ("--bucket-mb", "> 0")),
    (["--fabric", ""], ("--fabric", "empty")),
    (["--fabric", "  "], ("--fabric", "empty")),
    (["--gpus", "999999999,1000000000,...,2000000000"], ("--gpus", "at most 1,000,000")),
    (["--gpus", "8,16,...,999999"], ("999999", "multiple of --gpus-per-node 8")),
    (["--gpus", "0"], ("--gpus", "not a GPU count")),
    (["--gpus", "-8"], ("--gpus", "not a GPU count")),
    (["--gpus", "²"], ("--gpus", "not a GPU count")),
    (["--gpus", "8,...,16"], ("--gpus", "'...'")),
    # step time, overlap, jitter
    (["--step-time-ms", "0"], ("--step-time-ms", "> 0")),
    (["--step-time-ms", "inf"], ("--step-time-ms", "finite")),
    (["--step-time-ms", "1e300"], ("--step-time-ms", "<=")),
    (["--overlap", "1.5"], ("--overlap", "from 0 to 1")),
    (["--overlap", "-0.1"], ("--overlap", "from 0 to 1")),
    (["--overlap", "nan"], ("--overlap", "from 0 to 1")),
    (["--overlap", "0.7:0.5"], ("--overlap", "LO is above HI")),
    (["--overlap", "0.1:0.2:0.3"], ("--overlap", "LO:HI")),
    (["--jitter", "-1"], ("--jitter", "from 0 to 1")),
    (["--jitter", "inf"], ("--jitter", "from 0 to 1")),
    # new pure-input flags
    (["--host-overhead-ms", "-1"], ("--host-overhead-ms", "from 0")),
    (["--host-overhead-ms", "nan"], ("--host-overhead-ms", "from 0")),
    (["--host-overhead-ms", "1e300"], ("--host-overhead-ms", "3.6e+06")),
    (["--loader-samples-per-s", "0", "--per-device-batch", "8"], ("--loader-samples-per-s", "> 0")),
    (["--loader-samples-per-s", "inf", "--per-device-batch", "8"], ("--loader-samples-per-s",)),
    (["--loader-samples-per-s", "100"], ("--loader-samples-per-s", "--per-device-batch")),
    (["--ready-share", "0.5"], ("--ready-share", "1 value(s) for 4 bucket(s)")),
    (["--ready-share", "0.9,0.5,0.6,1"], ("--ready-share", "must not fall")),
    (["--ready-share", "0.1,0.2,0.3,2"], ("--ready-share", "<= 1")),
    (["--fixed-step-ms", "100", "--scaling", "strong"], ("--fixed-step-ms", "below the step")),
    (["--fixed-step-ms", "-1", "--scaling", "strong"], ("--fixed-step-ms", "from 0")),
    # new fabric flags
    (["--nics-per-node", "0"], ("--nics-per-node", ">= 1")),
    (["--nics-per-node", "-3"], ("--nics-per-node", ">= 1")),
    (["--nics-per-node", "1000000000"], ("--nics-per-node", "at most 1,024")),
    (["--nic-gbps", "0"], ("--nic-gbps", "> 0")),
    (["--nic-gbps", "-100"], ("--nic-gbps", "> 0")),
    (["--nic-gbps", "nan"], ("--nic-gbps", "> 0")),
    (["--nic-gbps", "inf"], ("--nic-gbps", "> 0")),
    (["--nic-gbps", "1e308"], ("--nic-gbps", "at most 100000")),
    (["--transport", "carrier-pigeon"], ("--transport", "rdma, tcp, efa, tcpxo")),
    (["--nvlink", "Z9000"], ("--nvlink", "P100, V100, A100, H100, H200, B200")),
    (["--gpu", "GTX480"], ("--gpu", "unknown GPU")),
    (["--pcie-gen", "0"], ("--pcie-gen", "3, 4 or 5")),
    (["--pcie-gen", "7"], ("--pcie-gen", "3, 4 or 5")),
    (["--pcie-gen", "-4"], ("--pcie-gen", "3, 4 or 5")),
    (["--fabric", "dgx-1", "--nvls", "on"], ("--nvls on", "NVSwitch")),
    (["--link-efficiency", "0"], ("--link-efficiency", "> 0")),
    (["--link-efficiency", "nan"], ("--link-efficiency", "from 0 to 2")),
    (["--link-efficiency", "3"], ("--link-efficiency", "from 0 to 2")),
    (["--link-efficiency", "0.9,0.8,0.7"], ("--link-efficiency", "INTRA or INTRA,INTER")),
    (["--busbw-gbps", "0"], ("--busbw-gbps", "> 0")),
    (["--busbw-gbps", "-5"], ("--busbw-gbps", "> 0")),
    (["--busbw-gbps", "inf"], ("--busbw-gbps", "finite")),
    (["--busbw-gbps", "1e308"], ("--busbw-gbps", "<= 100000")),
    (["--busbw-gbps", "1,2,3"], ("--busbw-gbps", "INTRA or INTRA,INTER")),
    (["--gpus-per-node", "2000", "--gpus", "4000"], ("--gpus-per-node", "at most 1,024")),
    (["--draws", "0"], ("--draws", "10 to 100,000")),
    (["--draws", "-1"], ("--draws", "10 to 100,000")),
    (["--draws", "1000000000"], ("--draws", "10 to 100,000")),
]


@pytest.mark.parametrize(("extra", "needles"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_every_flag_refuses_bad_values_in_one_line(tmp_path, extra, needles):
    refused_pure(tmp_path, *extra, needles=needles)


def test_bounds_are_checked_before_the_work_they_bound(tmp_path):
    """10^8 buckets or 10^9 GPU counts would take minutes and gigabytes to build: the refusal
    must come first, in well under a second each."""
    for extra in (["--bucket-mb", "0.000001"],
                  ["--gpus", "999999999,1000000000,...,2000000000"],
                  ["--gpus", "1,2,...,1000000", "--draws", "1000000000"],
                  ["--nics-per-node", "1000000000"]):  # fmt: skip
        start = time.perf_counter()
        res = invoke("project", "--step-time-ms", "100", "--grad-mb", "100", *extra)
        assert res.exit_code == 2, res.output
        assert time.perf_counter() - start < 2.0, extra


def test_pure_flags_and_a_sweep_do_not_mix(tmp_path):
    sweep = write_planted_sweep(tmp_path / "s", Plant())
    before = snapshot(tmp_path)
    assert_refused(invoke("project", sweep, "--overlap", "0.5"), "--overlap", "pure-input")
    assert_refused(invoke("project", sweep, "--step-time-ms", "5"), "not both")
    assert_refused(invoke("project", "--validate", "--step-time-ms", "5"), "--validate")
    assert snapshot(tmp_path) == before


# -- -o never replaces a file the command did not write ----------------------------------------


def test_output_aimed_at_the_ledger_is_refused_and_the_ledger_kept(tmp_path):
    sweep = write_planted_sweep(tmp_path / "s", Plant())
    before = snapshot(tmp_path)
    line = assert_refused(invoke("project", sweep, "-o", sweep / "ledger.jsonl"), "ledger.jsonl")
    assert "refusing to replace" in line
    assert snapshot(tmp_path) == before


def test_output_aimed_at_a_users_file_is_refused(tmp_path):
    notes = tmp_path / "my-notes.txt"
    notes.write_text("my own notes\n")
    before = snapshot(tmp_path)
    assert_refused(invoke(*PURE, "-o", notes), "my-notes.txt", "not a projection")
    assert snapshot(tmp_path) == before


def test_output_through_a_symlink_or_onto_a_folder_is_refused(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    (tmp_path / "folder").mkdir()
    before = snapshot(tmp_path)
    assert_refused(invoke(*PURE, "-o", link), "link.txt")
    assert_refused(invoke(*PURE, "-o", tmp_path / "folder"), "folder")
    assert snapshot(tmp_path) == before


def test_output_replaces_its_own_earlier_projection_only(tmp_path):
    out = tmp_path / "p.json"
    assert invoke(*PURE, "--format", "json", "--draws", "10", "-o", out).exit_code == 0
    first = out.read_text()
    assert json.loads(first)["kind"] == "distrinews-bench projection"
    assert invoke(*PURE, "--format", "text", "--draws", "10", "-o", out).exit_code == 0
    assert out.read_text() != first


def test_a_bad_value_leaves_an_earlier_output_untouched(tmp_path):
    out = tmp_path / "p.txt"
    assert invoke(*PURE, "--draws", "10", "-o", out).exit_code == 0
    before = snapshot(tmp_path)
    assert_refused(invoke(*PURE, "--grad-mb", "nan", "-o", out), "--grad-mb")
    assert snapshot(tmp_path) == before


# -- hostile sweeps ------------------------------------------------------------------------------


def test_a_ledger_row_without_nodes_is_one_line_naming_the_field(tmp_path):
    sweep = write_planted_sweep(tmp_path / "s", Plant(repeats=1))
    rows = [json.loads(x) for x in (sweep / "ledger.jsonl").read_text().splitlines()]
    del rows[-1]["nodes"]
    (sweep / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = snapshot(tmp_path)
    assert_refused(invoke("project", sweep), "nodes", "ledger.jsonl", "integer >= 1")
    assert snapshot(tmp_path) == before


def test_a_record_with_hostile_readiness_falls_back_to_the_assumption(tmp_path):
    """A record whose ready_s or backward_time_s is text, negative or NaN is not trusted: the
    projection uses the stated assumption and says so (it does not crash or trust garbage)."""
    sweep = write_planted_sweep(tmp_path / "s", Plant(readiness=True, repeats=1))
    for record in sweep.glob("points/*/record.json"):
        body = json.loads(record.read_text())
        body["metrics"]["backward_time_s"] = "soon"
        for b in body["buckets"]:
            b["ready_s"] = -1
        record.write_text(json.dumps(body))
    res = invoke("project", sweep, "--gpus", "8", "--format", "json", "--draws", "10")
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)["inputs"]["curves"][0]
    assert info["sources"]["ready"].startswith("assumed")


@pytest.mark.parametrize("bad", ["two", -2, 0, 2.5, 1e300, None, [2], {"n": 2}])
def test_hostile_cores_and_ceilings_in_a_ledger_are_not_trusted(tmp_path, bad):
    """A ledger's cpu_cores, bucket_count and allreduce_bucketed_time_s that are text, not
    whole, non-positive or absurd are left out (no scaling by the host's cores, no latency fit
    from the ceilings): the projection runs, says which link it used, and writes nothing."""
    plant = Plant(device="cpu", alpha_s=4e-4, busbw_gbps=2.0, buckets=(8 * 2**20,) * 4,
                  cpu_cores=2, repeats=1)  # fmt: skip
    sweep = write_planted_sweep(tmp_path / "s", plant)
    rows = [json.loads(x) for x in (sweep / "ledger.jsonl").read_text().splitlines()]
    for r in rows:
        r["cpu_cores"] = r["bucket_count"] = r["allreduce_bucketed_time_s"] = bad
    (sweep / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = snapshot(tmp_path)
    res = invoke("project", sweep, "--gpus", "8", "--format", "json", "--draws", "10")
    assert res.exit_code == 0, res.output
    source = json.loads(res.output)["inputs"]["curves"][0]["fits"][0]["link_source"]
    assert "cores" not in source and "ceilings" not in source, source
    assert snapshot(tmp_path) == before


def test_a_cpu_sweep_past_its_host_is_refused_with_the_reason(tmp_path):
    sweep = write_planted_sweep(tmp_path / "s", Plant(world_sizes=(1, 2), repeats=1))
    before = snapshot(tmp_path)
    assert_refused(invoke("project", sweep, "--gpus", "64"), "nothing to project", "what-if")
    assert snapshot(tmp_path) == before
