"""Pure launch builders (torchrun/srun argv, env, sbatch text) and the failure classifier."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import pytest

from distrinews.errors import UserError
from distrinews.runspec import RunSpec
from harness import launch as L

SPEC = RunSpec(device="cpu", model="tiny", nproc_per_node=2, nccl_env={"NCCL_ALGO": "Ring"})


def test_single_node_argv_is_loopback_torchrun_of_the_worker(tmp_path):
    argv = L.build_torchrun_argv(SPEC, tmp_path, python="/py")
    assert argv[:3] == ["/py", "-m", "distrinews.torchrun"]
    # c10d on 127.0.0.1:0 (the OS picks a free port), never --standalone (every interface);
    # the ranks' MASTER_ADDR is loopback too.
    assert "--standalone" not in argv
    assert "--rdzv-backend=distrinews" in argv and "--rdzv-endpoint=127.0.0.1:0" in argv
    assert "--local-addr=127.0.0.1" in argv and f"--rdzv-id={SPEC.run_id}" in argv
    assert "--nnodes=1" in argv and "--nproc-per-node=2" in argv
    assert "--max-restarts=0" in argv
    assert f"--log-dir={tmp_path / 'logs'}" in argv
    assert "--redirects=3" in argv and "--tee=3" in argv
    tail = argv[argv.index("-m", 3) :]
    assert tail == [
        "-m", "distrinews.worker", "--spec", str(tmp_path / "run.json"), "--out", str(tmp_path)
    ]  # fmt: skip


def test_a_fine_tune_is_launched_by_the_same_torchrun_builder(tmp_path):
    """`train --nproc-per-node N` reaches torchrun through the same builder as a sweep point;
    its ranks' output stays on the launcher's own stdout/stderr (no per-rank log files)."""
    argv = L.build_fit_argv(SPEC, tmp_path, timeout_s=90.0, python="/py")
    point = L.build_torchrun_argv(SPEC, tmp_path, python="/py")
    head = [
        a
        for a in point[: point.index("-m", 3)]
        if not a.startswith(("--log-dir", "--redi", "--tee"))
    ]
    assert argv[: len(head)] == head  # loopback, one node, 2 ranks, no restarts
    assert not any(a.startswith(("--log-dir", "--tee", "--redirects")) for a in argv)
    assert argv[len(head) :] == [
        "-m", "distrinews.worker", "--fit", str(tmp_path / "fit.json"), "--out", str(tmp_path),
        "--timeout-s", "90.0",
    ]  # fmt: skip


def test_multi_node_argv_uses_c10d_rendezvous(tmp_path):
    spec = RunSpec(nodes=2, nproc_per_node=8)
    with pytest.raises(ValueError, match="needs a Rendezvous"):
        L.build_torchrun_argv(spec, tmp_path)
    rdzv = L.Rendezvous(endpoint="node1:29400", run_id=spec.run_id)
    argv = L.build_torchrun_argv(spec, tmp_path, rdzv=rdzv)
    assert "--standalone" not in argv and not any(a.startswith("--local-addr") for a in argv)
    assert "--rdzv-backend=distrinews" in argv  # c10d, its store bound to node1's address
    assert "--rdzv-endpoint=node1:29400" in argv
    assert f"--rdzv-id={spec.run_id}" in argv
    assert "--nnodes=2" in argv and "--nproc-per-node=8" in argv


def test_srun_argv_runs_one_agent_per_node_on_the_first_hosts(tmp_path):
    spec = RunSpec(nodes=2, nproc_per_node=4)
    argv = L.build_srun_argv(spec, tmp_path, hosts=["gpu7", "gpu8", "gpu9"], port=29555)
    assert argv[0] == "srun"
    assert f"--job-name=distrinews-{spec.run_id}" in argv  # what a timeout scancels
    assert "--nodes=2" in argv and "--ntasks-per-node=1" in argv
    assert "--nodelist=gpu7,gpu8" in argv
    assert "--rdzv-endpoint=gpu7:29555" in argv
    assert argv[argv.index("distrinews.torchrun") - 2] == "python"
    with pytest.raises(ValueError):
        L.build_srun_argv(RunSpec(nodes=4), tmp_path, hosts=["a"], port=1)


def test_env_sets_nccl_settings_over_inherited_and_records_them():
    base = {"PATH": "/bin", "NCCL_ALGO": "Tree", "NCCL_DEBUG": "INFO", "OMP_NUM_THREADS": "4"}
    env = L.build_env(SPEC, base)
    assert env["NCCL_ALGO"] == "Ring"  # the spec wins
    assert env["PATH"] == "/bin" and env["OMP_NUM_THREADS"] == "4"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert base["NCCL_ALGO"] == "Tree"  # pure: the input is untouched
    assert L.effective_nccl_env(env) == {
        "NCCL_ALGO": "Ring",
        "NCCL_DEBUG": "INFO",  # inherited settings are recorded too: they shape the run
        "NCCL_SOCKET_IFNAME": "lo",  # one host: loopback
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }
    assert L.build_env(RunSpec(), {})["OMP_NUM_THREADS"] == "1"


def test_env_keeps_a_single_host_point_on_loopback_and_a_multi_node_one_on_its_interface():
    """Issue 25 item 4: one host -> gloo and NCCL on lo whatever the shell exported (a sweep
    file's own NCCL_SOCKET_IFNAME excepted); several nodes -> the user's interface choice."""
    shell = {"GLOO_SOCKET_IFNAME": "eth0", "NCCL_SOCKET_IFNAME": "ib0"}
    one = L.build_env(RunSpec(nproc_per_node=2), shell)
    assert one["GLOO_SOCKET_IFNAME"] == "lo" and one["NCCL_SOCKET_IFNAME"] == "lo"
    assert one["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"  # no agent store on [::]
    own = L.build_env(RunSpec(nccl_env={"NCCL_SOCKET_IFNAME": "eth1"}), shell)
    assert own["NCCL_SOCKET_IFNAME"] == "eth1"
    two = L.build_env(RunSpec(nodes=2), shell)
    assert two["GLOO_SOCKET_IFNAME"] == "eth0" and two["NCCL_SOCKET_IFNAME"] == "ib0"
    assert two["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"


def _job(**kw) -> L.SbatchJob:
    fields = {
        "sweep": "/proj/harness/sweeps/h100-2node-scaling.toml",
        "nodes": 2,
        "gpus_per_node": 8,
        "workdir": "/proj",
        "python": "/proj/.venv/bin/python",
        "activate": "/proj/.venv/bin/activate",
        "partition": "gpu",
        "account": "proj_1",
        "time_limit": "02:00:00",
        "job_name": "distrinews-x",
    }
    return L.SbatchJob(**{**fields, **kw})


def test_sbatch_script_text():
    lines = L.build_sbatch_script(_job()).splitlines()
    assert lines[0] == "#!/bin/bash"
    for expected in (
        "#SBATCH --job-name=distrinews-x",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --exclusive",
        "#SBATCH --time=02:00:00",
        "#SBATCH --chdir=/proj",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj_1",
        # The environment it was generated from, before anything else runs; then the folder.
        ". /proj/.venv/bin/activate",
        "set -euo pipefail",
        "cd /proj",
        "exec /proj/.venv/bin/python -m harness.cli sweep "
        "/proj/harness/sweeps/h100-2node-scaling.toml --launcher slurm --nodes 2 "
        "--results results --no-progress",
    ):
        assert expected in lines, expected
    # Every #SBATCH line precedes the first command (sbatch stops reading them there).
    first_cmd = next(i for i, ln in enumerate(lines) if ln and not ln.startswith("#"))
    assert all(i < first_cmd for i, ln in enumerate(lines) if ln.startswith("#SBATCH"))
    assert lines.index(". /proj/.venv/bin/activate") < lines.index("set -euo pipefail")
    plain = L.build_sbatch_script(_job(partition=None, account=None, activate=None))
    assert "--partition" not in plain and "--account" not in plain and "activate" not in plain


def test_sbatch_script_asks_for_gpus_only_when_the_sweep_uses_them():
    cpu = L.build_sbatch_script(_job(gpus_per_node=0))
    assert "--gpus-per-node" not in cpu and "#SBATCH --nodes=2" in cpu


#: Values that would run a command if spliced into a shell line unquoted.
HOSTILE = [
    "x; touch PWNED",
    "$(touch PWNED)",
    "`touch PWNED`",
    "a'b\"c",
    "two words",
    "x && touch PWNED",
    "x | touch PWNED",
    "${HOME}",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_sbatch_script_quotes_every_value_of_the_command_line(value):
    """Each hostile value comes back from the script, through bash's own parser, as one word."""
    script = L.build_sbatch_script(
        _job(
            sweep=f"/proj/{value}.toml",
            workdir=f"/proj/{value}",
            python=f"/proj/{value}/python",
            activate=f"/proj/{value}/activate",
            results=value,
            sweep_args=("--data", value),
        )
    )
    command = next(ln for ln in script.splitlines() if ln.startswith("exec "))
    words = shlex.split(command)
    assert words[:2] == ["exec", f"/proj/{value}/python"]
    assert f"/proj/{value}.toml" in words and words[words.index("--results") + 1] == value
    assert words[-2:] == ["--data", value]
    cd = next(ln for ln in script.splitlines() if ln.startswith("cd "))
    assert shlex.split(cd) == ["cd", f"/proj/{value}"]
    source = next(ln for ln in script.splitlines() if ln.startswith(". "))
    assert shlex.split(source) == [".", f"/proj/{value}/activate"]
    # A folder that #SBATCH cannot hold safely is only cd'd to, never put in --chdir.
    assert "--chdir" not in script
    assert "PWNED" not in "".join(ln for ln in script.splitlines() if ln.startswith("#SBATCH"))


@pytest.mark.parametrize("value", [*HOSTILE, "gpu\n#SBATCH --wrap=x", "gpu\nrm -rf ~", ""])
@pytest.mark.parametrize("field", ["partition", "account", "job_name"])
def test_sbatch_values_that_cannot_be_written_safely_are_refused(field, value):
    with pytest.raises(UserError) as err:
        _job(**{field: value})
    assert "\n" not in str(err.value)  # one line, even for a value with a newline in it


@pytest.mark.parametrize("value", ["1:00\nrm -rf ~", "2h", "", "$(date)", "01:00:00; x"])
def test_sbatch_time_limit_must_be_a_slurm_time(value):
    with pytest.raises(UserError, match="--time"):
        _job(time_limit=value)
    for ok in ("30", "1:00", "02:00:00", "1-12", "1-12:30", "1-12:30:00", "UNLIMITED"):
        assert f"#SBATCH --time={ok}" in L.build_sbatch_script(_job(time_limit=ok))


@pytest.mark.parametrize("field", ["results", "sweep", "workdir"])
def test_sbatch_control_characters_anywhere_are_refused(field):
    value = "/proj/a\nrm -rf ~" if field != "results" else "a\rb"
    with pytest.raises(UserError, match="control character"):
        _job(**{field: value})
    with pytest.raises(UserError, match="control character"):
        _job(sweep_args=("--data", "a\nb"))


@pytest.mark.parametrize(
    "env, gpus",
    [
        ({"SLURM_GPUS_ON_NODE": "8"}, 8),
        ({"SLURM_GPUS_PER_NODE": "h100:4"}, 4),
        ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, 3),
        ({}, 0),
    ],
)
def test_gpus_per_node_from_the_allocation(env, gpus):
    assert L.slurm_gpus_per_node(env) == gpus


def _result(rc=1, timed_out=False):
    return L.ProcessResult(returncode=rc, timed_out=timed_out, duration_s=1.0)


ROOT_CAUSE_LOG = """
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : 5 (pid: 11332)
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : {code} (pid: 11333)
"""


#: Both ranks ended within one second: torchrun's root cause (earliest by whole seconds, ties to
#: the lowest rank) names the survivor, rank 0, which only saw its peer vanish.
TIED_LOG = """
Failures:
[1]:
  time      : 2026-11-30_02:44:29
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 28504)
Root Cause (first observed failure):
[0]:
  time      : 2026-11-30_02:44:29
  rank      : 0 (local_rank: 0)
  exitcode  : 5 (pid: 28503)
"""
SURVIVOR = {"failure": "rank_died", "message": "Connection reset by peer", "rank": 0}


@pytest.mark.parametrize(
    "error, log_text, first",
    [
        (SURVIVOR, TIED_LOG, (1, 1)),  # the silent peer, not torchrun's tie-broken root cause
        ({**SURVIVOR, "failure": "nccl_error"}, TIED_LOG, (1, 1)),
        (SURVIVOR, ROOT_CAUSE_LOG.format(code=1), (1, 1)),
        (SURVIVOR, ROOT_CAUSE_LOG.format(code=-9), (1, -9)),  # SIGKILLed peer
        # error.json is create-only: a cause of its own (rank 1 crashed) is the first failure,
        # whatever torchrun's root cause says (here the survivor's exit 5).
        ({"failure": "crashed", "message": "boom", "rank": 1}, TIED_LOG, None),
        (SURVIVOR, "", None),  # no summary (SIGKILLed launcher): nothing to name
        (SURVIVOR, ROOT_CAUSE_LOG.format(code=5), None),  # every failed rank saw a symptom
    ],
)
def test_first_failure_is_the_rank_that_died_without_a_word(error, log_text, first):
    assert L.first_failure(error["failure"], error["rank"], log_text) == first
    outcome = L.outcome_of(
        result=_result(), has_record=False, errors=[error], log_text=log_text, timeout_s=30
    )
    if first is None:
        assert "first failure" not in outcome.reason
    else:
        assert outcome.reason.endswith(f"; first failure: rank {first[0]} exit code {first[1]}")


@pytest.mark.parametrize(
    "kwargs, status, reason",
    [
        (dict(result=_result(timed_out=True)), "timeout", "no result within 30 s"),
        (dict(result=_result(0), has_record=True), "ok", None),
        (dict(result=_result(0)), "crashed", "no record.json"),
        (
            dict(errors=[{"failure": "oom", "message": "CUDA out of memory", "rank": 3}]),
            "oom",
            "oom (rank 3): CUDA out of memory",
        ),
        (dict(errors=[{"failure": "invalid_spec", "message": "bad"}]), "invalid", "invalid_spec"),
        (dict(errors=[{"failure": "nan_loss", "message": "NaN"}]), "crashed", "nan_loss"),
        (
            dict(
                errors=[{"failure": "rank_died", "message": "reset by peer", "rank": 0}],
                log_text=ROOT_CAUSE_LOG.format(code=1),
            ),
            "nccl_error",
            "rank_died (rank 0): reset by peer; first failure: rank 1 exit code 1",
        ),
        (dict(log_text=ROOT_CAUSE_LOG.format(code=3)), "oom", "worker exit code 3"),
        (dict(log_text=ROOT_CAUSE_LOG.format(code=2)), "invalid", "worker exit code 2"),
        (dict(log_text=ROOT_CAUSE_LOG.format(code=-9)), "crashed", "killed by SIGKILL"),
        (
            dict(log_text="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB"),
            "oom",
            "log: torch.OutOfMemoryError",
        ),
        (
            dict(log_text="RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled"),
            "nccl_error",
            "log: RuntimeError: NCCL error",
        ),
        (dict(log_text="Segmentation fault\nbye"), "crashed", "exit code 1; Segmentation fault"),
    ],
)
def test_outcome_of(kwargs, status, reason):
    args = dict(result=_result(), has_record=False, errors=[], log_text="", timeout_s=30)
    outcome = L.outcome_of(**{**args, **kwargs})
    assert outcome.status == status
    if reason is None:
        assert outcome.reason is None
    else:
        assert reason in outcome.reason, outcome.reason
        assert "\n" not in outcome.reason


@pytest.mark.slow
def test_run_process_timeout_kills_the_whole_tree(tmp_path):
    """A child that spawns a grandchild in a session of its own (as torchrun does) and hangs."""
    marker = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True)\n"
        f"open({str(marker)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(600)\n"
    )
    start = time.monotonic()
    result = L.run_process(
        [sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin"},
        log_path=tmp_path / "log.txt",
        timeout_s=3,
        grace_s=1,
    )
    assert result.timed_out and result.returncode is None
    assert time.monotonic() - start < 30
    grandchild = int(marker.read_text())
    assert not _alive(grandchild)
    assert "killed after timeout" in (tmp_path / "log.txt").read_text()


@pytest.mark.slow
def test_run_process_returns_the_exit_code_and_keeps_output(tmp_path):
    result = L.run_process(
        [sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"],
        env={"PATH": "/usr/bin:/bin"},
        log_path=tmp_path / "logs" / "x.log",
        timeout_s=60,
    )
    assert result.returncode == 3 and not result.timed_out
    assert "hello" in (tmp_path / "logs" / "x.log").read_text()


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_free_port_is_bindable():
    import socket

    port = L.free_port("127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_slurm_hosts_expand_the_nodelist_with_the_batch_host_first(tmp_path, monkeypatch):
    """scontrol does not exist off a cluster; a stand-in prints what it prints for a nodelist."""
    import socket

    here = socket.gethostname().split(".")[0]
    fake = tmp_path / "scontrol"
    fake.write_text(f"#!/bin/sh\necho gpu1\necho {here}\necho gpu3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert L.slurm_hosts({"SLURM_JOB_NODELIST": "gpu[1-3]"}) == [here, "gpu1", "gpu3"]
    with pytest.raises(UserError, match="inside an allocation"):
        L.slurm_hosts({})


def test_srun_telemetry_argv_runs_one_sampler_per_node_beside_the_point(tmp_path):
    spec = RunSpec(nodes=2, nproc_per_node=8)
    argv = L.build_srun_telemetry_argv(spec, tmp_path, hosts=["g1", "g2", "g3"], python="py")
    assert argv[:2] == ["srun", "--overlap"]
    assert "--nodes=2" in argv and "--ntasks-per-node=1" in argv and "--nodelist=g1,g2" in argv
    assert argv[argv.index("py") :] == [
        "py", "-m", "harness.telemetry", "--out-dir", str(tmp_path), "--count", "8",
        "--interval-s", "0.2", "--device", "cuda",
    ]  # fmt: skip
    assert f"--job-name=distrinews-{spec.run_id}-telemetry" in argv
