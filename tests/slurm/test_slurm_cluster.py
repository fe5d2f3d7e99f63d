"""The SLURM launcher, the sbatch writer and the per-node telemetry against a real cluster.

Two nodes (n1, n2: their own slurmd and hostname, one machine's cores), gloo CPU ranks, the
tiny model on synthetic data. Each test shares one job or allocation between its checks:

* an ``sbatch`` job of the built-in ``cpu-2node`` sweep, written by ``distrinews-bench sbatch``
  and submitted from a bare login-shell environment, cancelled mid-way and submitted again;
* one ``salloc -N2`` allocation in which ``distrinews-bench sweep --launcher slurm`` runs a
  healthy two-node point and the failure paths (a crash on one node, a rank that exits, a hang
  past its timeout), checked while the allocation still holds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import store
from tests.helpers_procs import LAUNCH_MODEL, listening_sockets, processes_mentioning

from .conftest import (
    job_field,
    login_shell_env,
    wait_for,
    wait_job_gone,
)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

#: A results folder name a shell would run three commands from, were it spliced in unquoted.
HOSTILE_RESULTS = "r $(touch PWNED1) `touch PWNED2`; touch PWNED3 'q\""

TINY_RUN = """
[run]
device = "cpu"
model = "tiny"
data = "synthetic:256"
max_length = 32
per_device_batch = 4
precision = "fp32"
warmup_steps = 1
measured_steps = 2
"""


#: The same run with the launch tests' model (tests/helpers_procs.py), for the salloc test's
#: failure classes: its subject is srun and torchrun, and the sbatch test runs DistilBERT.
LAUNCH_RUN = TINY_RUN.replace('model = "tiny"', f'model = "{LAUNCH_MODEL}"')


def _bench(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _submit(script: Path) -> str:
    """``sbatch`` from a login shell's bare environment (no venv, no PYTHONPATH)."""
    out = subprocess.run(
        ["bash", "-l", "-c", f"sbatch --parsable {script.name}"],
        cwd=script.parent, env=login_shell_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def _unix(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


@pytest.mark.slow(seconds=30)
def test_sbatch_script_as_generated_runs_the_cpu_sweep_on_both_nodes_and_resumes_after_scancel(
    slurm_cluster, scancel_after, tmp_path
):
    work = tmp_path / "project"
    work.mkdir()
    made = _bench(
        "sbatch", "cpu-2node", "--nodes", "2", "--partition", "debug", "--time", "15",
        "--results", HOSTILE_RESULTS, "-o", "job.sbatch", cwd=work,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    script = work / "job.sbatch"
    assert "--gpus-per-node" not in script.read_text()  # a CPU sweep asks for no GPUs
    sweep_dir = work / HOSTILE_RESULTS / "cpu-2node"

    # 1. Submit; the first point's row arrives; cancel while the two-node point runs.
    t0 = time.monotonic()
    first_job = scancel_after(_submit(script))
    wait_for(lambda: len(store.read_ledger(sweep_dir)) == 1, 240, "the first ledger row")
    t_first_row = time.monotonic() - t0
    (row1,) = store.read_ledger(sweep_dir)
    assert row1["status"] == "ok" and row1["nodes"] == 1, row1

    def next_point() -> Path | None:
        # The sweep makes the next point's folder a moment after it files the first row.
        points = (sweep_dir / "points").iterdir()
        return next((p for p in points if p.name != row1["run_id"]), None)

    wait_for(lambda: next_point() is not None, 60, "the two-node point's folder")
    two_node = next_point()
    assert two_node is not None
    wait_for(lambda: (two_node / "run.json").is_file(), 60, "the two-node point to start")
    subprocess.run(["scancel", first_job], check=True, timeout=30)
    assert wait_job_gone(first_job, timeout=90) == "CANCELLED"
    wait_for(lambda: not processes_mentioning(str(sweep_dir)), 60, "nothing left running")
    assert store.read_ledger(sweep_dir) == [row1], "a cancelled point must leave no row"

    # 2. Submit the same script again: it resumes, runs the two-node point once, and reports.
    t1 = time.monotonic()
    second_job = scancel_after(_submit(script))
    assert wait_job_gone(second_job, timeout=300) == "COMPLETED"
    t_resume_report = time.monotonic() - t1
    assert job_field(second_job, "ExitCode") == "0:0"
    rows = store.read_ledger(sweep_dir)
    assert rows[0] == row1 and len(rows) == 2, rows
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [(r["nodes"], r["world_size"]) for r in rows] == [(1, 1), (2, 2)]
    record = json.loads((sweep_dir / rows[1]["point_dir"] / "record.json").read_text())
    assert record["env"]["world_size"] == 2 and record["env"]["backend"] == "gloo"
    # Both nodes' samplers ran beside the point (CPU: nothing to sample, but each said so).
    nodes = {p.name.split(".")[0] for p in (two_node / "telemetry").glob("*.node.json")}
    assert nodes == {"n1", "n2"}
    status = json.loads((two_node / "status.json").read_text())
    assert status["telemetry_unavailable_reason"] == "cpu point: no GPU to sample (n1, n2)"
    assert status["argv"][0] == "srun" and "--nodes=2" in status["argv"]
    assert (sweep_dir / "report.html").stat().st_size > 1_000_000
    log = (work / f"distrinews-cpu-2node-{second_job}.out").read_text()
    assert "1 point(s) already ok" in log and "report: " in log
    # The hostile results folder was one literal argument: no command in it ran.
    assert not [p for p in work.rglob("PWNED*") if p.name.startswith("PWNED")]
    assert not list(Path.home().glob("PWNED*"))
    print(
        f"\nslurm sbatch figures (this box): first ledger row {t_first_row:.1f} s after sbatch; "
        f"resumed job to rendered report {t_resume_report:.1f} s"
    )


def _salloc_session(tmp_path: Path, commands: list[list[str]]) -> subprocess.Popen[str]:
    """``salloc -N2`` running ``commands`` one after another, then holding the allocation
    until the test has looked around (``release`` appears, or 180 s pass)."""
    steps = "\n".join(
        " ".join(_q(a) for a in cmd) + f" > {_q(str(tmp_path / f'cmd{i}.out'))} 2>&1 || true"
        for i, cmd in enumerate(commands)
    )
    body = (
        f"echo $SLURM_JOB_ID > {_q(str(tmp_path / 'job'))}\n{steps}\n"
        f"touch {_q(str(tmp_path / 'done'))}\n"
        f"for i in $(seq 1 900); do [ -e {_q(str(tmp_path / 'release'))} ] && break; "
        "sleep 0.2; done\n"
    )
    # A script file, so no command line of the session itself names the results folder.
    script = tmp_path / "session.sh"
    script.write_text(body)
    return subprocess.Popen(
        ["salloc", "-N2", "--time=15", "bash", str(script)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


@pytest.mark.scenario
@pytest.mark.slow(seconds=50)
def test_sweep_inside_salloc_runs_srun_torchrun_per_point_and_classifies_failures_as_locally(
    slurm_cluster, scancel_after, tmp_path
):
    results = tmp_path / "results"
    base = "timeout_s = 150\n" + LAUNCH_RUN + "[axes]\nnodes = [2]\ngpus_per_node = [1]\n"
    (tmp_path / "runs.toml").write_text(
        'name = "srun"\n' + base + 'fault = ["none", "crash_last", "rank_exit"]\n'
    )
    (tmp_path / "hang.toml").write_text('name = "hang"\n' + base + 'fault = ["hang"]\n')
    sweep = [sys.executable, "-m", "harness.cli", "sweep"]
    common = ["--launcher", "slurm", "--results", str(results), "--no-progress"]
    session = _salloc_session(
        tmp_path,
        [
            [*sweep, str(tmp_path / "runs.toml"), *common, "--nodes", "5"],  # 2 in the allocation
            [*sweep, str(tmp_path / "runs.toml"), *common],
            [*sweep, str(tmp_path / "hang.toml"), *common, "--timeout-s", "12"],
        ],
    )
    try:
        wait_for(lambda: (tmp_path / "job").is_file(), 60, "the allocation")
        job = scancel_after((tmp_path / "job").read_text().strip())
        # Issue 25: what the points' processes listen on, polled while they run (srun's own
        # I/O ports are Slurm's, not the point's).
        seen: set = set()
        deadline = time.monotonic() + 420
        while not (tmp_path / "done").is_file() and time.monotonic() < deadline:
            seen |= listening_sockets(str(results))
            time.sleep(0.1)
        wait_for(lambda: (tmp_path / "done").is_file(), 1, "both sweeps")
        # Inside the still-held allocation: no step and no process of any point is left.
        steps = subprocess.run(
            ["squeue", "-h", "-s", "-j", job, "-o", "%i %j"], capture_output=True, text=True,
            timeout=30,
        ).stdout.split("\n")  # fmt: skip
        assert not [s for s in steps if "distrinews-" in s], steps
        assert processes_mentioning(str(results)) == [], "a point left processes behind"
    finally:
        (tmp_path / "release").touch()
        try:
            session.wait(timeout=60)
        finally:
            if session.poll() is None:
                os.killpg(session.pid, signal.SIGKILL)
    outputs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("cmd*.out")))
    assert "Traceback" not in outputs, outputs
    # More --nodes than the allocation holds: one line before anything runs (issue 25).
    assert (
        (tmp_path / "cmd0.out")
        .read_text()
        .startswith("error: --nodes 5: the allocation has 2 node(s) (n1, n2)\n")
    )

    rows = {r["fault"]: r for r in store.read_ledger(results / "srun")}
    ok = rows["none"]
    assert ok["status"] == "ok" and ok["world_size"] == 2 and ok["samples_per_s"] > 0, ok
    pdir = results / "srun" / ok["point_dir"]
    status = json.loads((pdir / "status.json").read_text())
    argv = status["argv"]
    assert argv[:2] == ["srun", "--nodes=2"] and "--nodelist=n1,n2" in argv
    assert "--rdzv-backend=distrinews" in argv  # c10d, its store bound to n1's address
    # Every socket of the points on a node's own address (n1 hosts the rendezvous and the
    # ranks' store, gloo listens on each node's): none on [::] or 0.0.0.0.
    nodes_at = {socket.gethostbyname(n) for n in ("n1", "n2")}
    ours = {s for s in seen if "distrinews." in s[3]}  # the agents and the ranks, not Slurm's
    assert {address for _, address, *_ in ours} <= nodes_at, (sorted(seen), nodes_at)
    assert socket.gethostbyname("n1") in {address for _, address, *_ in ours}, sorted(seen)
    assert len({pid for pid, *_ in ours}) >= 3, sorted(seen)  # two agents and the ranks
    others = sorted({s[1:] for s in seen if s not in ours})
    print("listening beside the points (Slurm's own):", others)
    assert next(a for a in argv if a.startswith("--rdzv-endpoint=")).startswith(
        "--rdzv-endpoint=n1:"
    )
    # One torchrun agent per node, each with its own log tree.
    assert len([p for p in (pdir / "logs").iterdir() if p.is_dir()]) == 2
    # The per-node samplers started and stopped with the point, on both nodes.
    nodes = json.loads(json.dumps(_node_status(pdir)))
    assert set(nodes) == {"n1", "n2"}
    window = json.loads((pdir / "record.json").read_text())["measured_window"]
    for host, node in nodes.items():
        assert node["available"] is False and node["stopped_unix"] is not None, (host, node)
        assert node["started_unix"] <= window["start_unix"], (host, node, window)
        assert window["end_unix"] <= node["stopped_unix"], (host, node, window)
        assert node["stopped_unix"] <= _unix(ok["finished_at"]) + 1.5, (host, node)
    # Failures, held to what the local launcher records for the same faults
    # (tests/distributed/test_sweep.py::test_every_failure_class_through_a_real_torchrun).
    crash = rows["crash_last"]
    assert crash["status"] == "crashed", crash
    assert "injected fault: crash on rank 1" in crash["reason"]
    exit_ = rows["rank_exit"]
    assert exit_["status"] == "nccl_error", exit_
    assert "first failure: rank 1" in exit_["reason"]
    (hang,) = store.read_ledger(results / "hang")
    assert hang["status"] == "timeout" and "12 s" in hang["reason"], hang
    assert hang["duration_s"] < 12 + 60
    for row in [crash, exit_, hang]:
        assert row["samples_per_s"] is None


def _node_status(pdir: Path) -> dict[str, dict]:
    from harness.telemetry import read_node_status

    return read_node_status(pdir / "telemetry")


def test_sbatch_script_of_a_gpu_sweep_asks_for_the_gpus_slurm_then_enforces(
    slurm_cluster, tmp_path
):
    """sbatch reads the --gpus-per-node line (--test-only: validated and scheduled, not run)."""
    gres = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True).stdout
    if "gpu" not in gres:
        pytest.skip("the cluster has no GPUs (SLURM_LOCAL_GPUS=2 gives it fake ones)")
    have = int(gres.split("gpu:")[1].split("(")[0].split(",")[0].split(":")[-1])
    for gpus, accepted in ((have, True), (have + 1, False)):
        made = _bench(
            "sbatch", "h100-2node-scaling", "--nodes", "2", "--gpus-per-node", str(gpus),
            "--partition", "debug", "-o", f"gpu{gpus}.sbatch", cwd=tmp_path,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        script = tmp_path / f"gpu{gpus}.sbatch"
        assert f"#SBATCH --gpus-per-node={gpus}" in script.read_text().splitlines()
        test = subprocess.run(
            ["bash", "-l", "-c", f"sbatch --test-only {script.name}"], cwd=tmp_path,
            env=login_shell_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (test.returncode == 0) == accepted, (gpus, test.stderr)
