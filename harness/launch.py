"""Launching torchrun (a sweep point, a ``train`` run): pure argv/env builders, the one subprocess
call, the failure class.

Every point gets a fresh ``torchrun`` (``python -m distrinews.torchrun``: torchrun with a
rendezvous store that listens on one address only), so no state (CUDA context, NCCL
communicators, allocator caches, a crashed rank) leaks from one point into the next. torchrun
starts ``nproc_per_node`` copies of the worker per node::

    python -m distrinews.torchrun --rdzv-backend=distrinews --rdzv-endpoint=127.0.0.1:0 \
        --rdzv-id=RUN_ID --local-addr=127.0.0.1 --nnodes=1 --nproc-per-node=2 \
        --log-dir=POINT/logs --redirects=3 --tee=3 -m distrinews.worker --spec POINT/run.json \
        --out POINT

On one host everything listens on loopback only: the rendezvous store on ``127.0.0.1:0`` (the
OS picks a free port, so two points or two sweeps never clash), the ranks' store on
MASTER_ADDR = 127.0.0.1, gloo and NCCL on ``lo`` (:func:`build_env`). ``--standalone`` would
do the same on every interface. Across nodes the agents meet in a rendezvous hosted on the
first node's address instead (:class:`Rendezvous`), and under SLURM ``srun`` starts one agent
per node.

The builders are pure (tested without processes): :func:`torchrun_argv` is the one place that
spells a torchrun command line (a sweep point's, and a ``train`` run's via
:func:`build_fit_argv`), and :func:`run_process` is the only place that starts one;
:func:`outcome_of` turns what the run left behind into a ledger status.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distrinews.errors import UserError
from distrinews.failures import EXIT_CODES, GENERIC_EXIT_CODE
from distrinews.layout import (
    ERROR_JSON,
    ERROR_RANK_GLOB,
    FIT_JSON,
    LOGS_DIR,
    RUN_JSON,
)
from distrinews.runspec import RunSpec

from .outputs import OutputKind
from .store import read_json

WORKER_MODULE = "distrinews.worker"
#: torchrun with a rendezvous store that listens on the endpoint's address only.
TORCHRUN_MODULE = "distrinews.torchrun"
RDZV_BACKEND = "distrinews"
#: Where a single-host point listens: the loopback address and interface (Linux's name).
LOOPBACK = "127.0.0.1"
LOOPBACK_IFNAME = "lo"

#: Worker failure class (error.json "failure", distrinews/failures.py) -> ledger status. A NaN
#: loss is a crash, and a dead peer a collective failure; the reason keeps the worker's own
#: failure name, so nothing is lost by the coarser status.
FAILURE_STATUS = {
    "oom": "oom",
    "nccl_error": "nccl_error",
    "rank_died": "nccl_error",
    "invalid_spec": "invalid",
    "nan_loss": "crashed",
    "crashed": "crashed",
}
#: Worker exit code -> ledger status, derived from the worker's own table (the inverse of
#: distrinews.failures.EXIT_CODES). The generic exit 1 is left out: any Python crash and
#: torchrun's own failures give it too, so the log patterns below get a say first.
EXIT_STATUS = {
    code: FAILURE_STATUS[failure]
    for failure, code in sorted(EXIT_CODES.items(), key=lambda item: item[1])
    if code != GENERIC_EXIT_CODE
}
#: Log patterns, checked only when the worker could not write error.json (killed, segfault,
#: torchrun itself failing). The first match wins, so the more specific patterns come first.
LOG_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "oom",
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|"
            r"std::bad_alloc|Cannot allocate memory|MemoryError"
        ),
    ),
    (
        "nccl_error",
        re.compile(
            r"NCCL error|ncclInternalError|ncclSystemError|ncclUnhandledCudaError|"
            r"ProcessGroupNCCL|Watchdog caught collective operation timeout|"
            r"Connection closed by peer|Connection reset by peer|DistNetworkError"
        ),
    ),
)
_EXITCODE = re.compile(r"exitcode\s*:\s*(-?\d+)")
#: torchrun's summary names the first rank that failed and its exit code.
_ROOT_CAUSE = re.compile(
    r"Root Cause \(first observed failure\):.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)",
    re.DOTALL,
)
#: Every failed rank in torchrun's summary (its "Failures:" list and its root cause).
_FAILED_RANK = re.compile(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")
#: The classes a rank reports when what it saw was a peer's death, not a cause of its own.
SYMPTOM_FAILURES = ("rank_died", "nccl_error")


# -- pure builders ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Rendezvous:
    """Where the torchrun agents of one multi-node point meet (c10d store on one host)."""

    endpoint: str
    """host:port of the c10d store, on the first node."""
    run_id: str
    """Rendezvous id shared by all agents of the point (the point's run_id)."""


def build_torchrun_argv(
    spec: RunSpec,
    point_dir: Path,
    *,
    python: str = sys.executable,
    rdzv: Rendezvous | None = None,
) -> list[str]:
    """The torchrun command line for one point on one node (pure).

    Single node without ``rdzv``: ``--standalone``. Otherwise a c10d rendezvous at
    ``rdzv.endpoint``; every node runs the same argv and the rendezvous assigns node ranks.
    Per-rank stdout/stderr go into ``POINT/logs/<rdzv>_*/attempt_0/<local_rank>/`` and are
    teed to the agent's own output (launcher.log), so one file shows the whole story.
    """
    point_dir = Path(point_dir)
    return torchrun_argv(
        spec,
        ["--spec", str(point_dir / RUN_JSON), "--out", str(point_dir)],
        python=python,
        rdzv=rdzv,
        log_dir=point_dir / LOGS_DIR,
    )


def build_fit_argv(
    spec: RunSpec, out: Path, *, timeout_s: float, python: str = sys.executable
) -> list[str]:
    """The torchrun command line of a local fine-tuning run (``distrinews-bench train``; pure).

    The worker reads ``out/fit.json`` and writes checkpoints, history.jsonl and
    fit_result.json into ``out``; ``timeout_s`` is its collective timeout. The ranks' output
    goes to the launcher's own stdout/stderr (the user's terminal).
    """
    out = Path(out)
    worker_args = ["--fit", str(out / FIT_JSON), "--out", str(out), "--timeout-s", str(timeout_s)]
    return torchrun_argv(spec, worker_args, python=python)


def torchrun_argv(
    spec: RunSpec,
    worker_args: list[str],
    *,
    python: str = sys.executable,
    rdzv: Rendezvous | None = None,
    log_dir: Path | None = None,
) -> list[str]:
    """torchrun starting ``spec.nproc_per_node`` workers with ``worker_args`` on this node (pure).

    The one place that spells a torchrun command line (a point's, a fine-tune's). ``log_dir``:
    per-rank log files there, teed to the agent's output; None leaves the ranks' output on the
    agent's stdout/stderr.
    """
    argv = [python, "-m", TORCHRUN_MODULE]
    if rdzv is None:
        if spec.nodes != 1:
            raise ValueError(f"a {spec.nodes}-node point needs a Rendezvous")
        # Every rank on this host: the rendezvous store on loopback, port chosen by the OS
        # (what --standalone does, but --standalone listens on every interface), and the
        # ranks' MASTER_ADDR loopback too.
        argv += [
            f"--rdzv-backend={RDZV_BACKEND}",
            f"--rdzv-endpoint={LOOPBACK}:0",
            f"--rdzv-id={spec.run_id}",
            f"--local-addr={LOOPBACK}",
        ]
    else:
        argv += [
            f"--rdzv-backend={RDZV_BACKEND}",
            f"--rdzv-endpoint={rdzv.endpoint}",
            f"--rdzv-id={rdzv.run_id}",
        ]
    argv += [
        f"--nnodes={spec.nodes}",
        f"--nproc-per-node={spec.nproc_per_node}",
        # A run is measured (or trained) once: a restarted rank would time a different run.
        "--max-restarts=0",
    ]
    if log_dir is not None:
        argv += [f"--log-dir={log_dir}", "--redirects=3", "--tee=3"]
    return [*argv, "-m", WORKER_MODULE, *worker_args]


def build_env(spec: RunSpec, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the point's processes (pure): ``base`` plus the point's settings.

    The spec's NCCL settings override inherited ones; :func:`effective_nccl_env` then records
    what the ranks really got, inherited values included.
    """
    env = dict(os.environ if base is None else base)
    env.update(dict(spec.nccl_env))
    # Python buffers stdout when it is not a terminal: a killed rank would lose its last lines.
    env["PYTHONUNBUFFERED"] = "1"
    # CUDA's default order (fastest first) can differ from NVML's (PCI bus); matching them
    # lets telemetry sample exactly the GPUs the ranks use.
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    # One intra-op thread per rank unless the user says otherwise: ranks share the cores.
    env.setdefault("OMP_NUM_THREADS", RANK_THREADS)
    # Surface NCCL failures as exceptions (-> error.json) instead of hanging until timeout.
    env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    # Nothing listens on every interface (distrinews/torchrun.py): the agent hosts no second
    # store for the ranks (that one would bind [::]); rank 0 hosts it on MASTER_ADDR instead.
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    if spec.nodes == 1:
        # Every rank on this host: gloo's and NCCL's sockets on loopback, whatever the shell
        # exported for multi-node work (a sweep file's own NCCL_SOCKET_IFNAME still wins).
        env["GLOO_SOCKET_IFNAME"] = LOOPBACK_IFNAME
        env["NCCL_SOCKET_IFNAME"] = dict(spec.nccl_env).get("NCCL_SOCKET_IFNAME", LOOPBACK_IFNAME)
    return env


#: Intra-op threads per rank unless OMP_NUM_THREADS says otherwise. One: a machine's ranks share
#: its cores, and a rank running as many threads as there are cores spins against the others.
#: The in-process single rank of ``train`` gets the same (:func:`rank_threads`), so one rank
#: trains as fast there as under torchrun.
RANK_THREADS = "1"


def rank_threads(env: Mapping[str, str]) -> int:
    """The intra-op thread count a rank started with ``env`` (from :func:`build_env`) runs.

    ``OMP_NUM_THREADS`` as OpenMP reads it: a whole number >= 1, or a list for nested levels
    whose first entry counts (``4,2`` -> 4). Anything else is refused (UserError).
    """
    text = env.get("OMP_NUM_THREADS", RANK_THREADS)
    first = text.split(",")[0].strip()
    if not first.isdigit() or int(first) < 1:
        raise UserError(f"OMP_NUM_THREADS = {text!r}; expected a whole number >= 1")
    return int(first)


def effective_nccl_env(env: Mapping[str, str]) -> dict[str, str]:
    """Every NCCL_* / TORCH_NCCL_* variable the ranks will see, for the point's status.json."""
    return {k: env[k] for k in sorted(env) if k.startswith(("NCCL_", "TORCH_NCCL_"))}


def build_srun_argv(
    spec: RunSpec, point_dir: Path, *, hosts: list[str], port: int, python: str = "python"
) -> list[str]:
    """``srun`` starting one torchrun agent on each of the first ``spec.nodes`` hosts (pure).

    Run inside an allocation (sbatch/salloc). The c10d store is hosted by the agent on the
    first host (its hostname matches the endpoint). Under sbatch that is where the sweep process
    runs (the batch step), so ``port`` is one it found free there; under salloc on a login node
    the port was found free on the login node, which is only likely to be free on the first.
    """
    if len(hosts) < spec.nodes:
        raise ValueError(f"{spec.nodes} nodes needed, {len(hosts)} hosts given")
    used = hosts[: spec.nodes]
    rdzv = Rendezvous(endpoint=f"{used[0]}:{port}", run_id=spec.run_id)
    return [
        "srun",
        f"--nodes={spec.nodes}",
        # Explicit: srun would otherwise take SLURM_NTASKS of the whole allocation from its
        # environment and start two agents on one node for a one-node point.
        f"--ntasks={spec.nodes}",
        "--ntasks-per-node=1",
        f"--nodelist={','.join(used)}",
        # The step's name, so a timeout can find it and scancel it (slurm_cancel_steps).
        f"--job-name={step_name(spec)}",
        # One failed agent ends the step instead of leaving the others waiting.
        "--kill-on-bad-exit=1",
        *build_torchrun_argv(spec, point_dir, python=python, rdzv=rdzv),
    ]


def step_name(spec: RunSpec, role: str = "point") -> str:
    """The SLURM job-step name of a point's training step (or its telemetry step)."""
    return f"distrinews-{spec.run_id}" + ("" if role == "point" else f"-{role}")


def build_srun_telemetry_argv(
    spec: RunSpec,
    out_dir: Path,
    *,
    hosts: list[str],
    python: str = "python",
    interval_s: float = 0.2,
) -> list[str]:
    """``srun`` starting one NVML sampler per node of a point, beside its training step (pure).

    ``--overlap`` lets this step share the nodes' resources with the training step.
    """
    used = hosts[: spec.nodes]
    return [
        "srun",
        "--overlap",
        f"--nodes={spec.nodes}",
        f"--ntasks={spec.nodes}",
        "--ntasks-per-node=1",
        f"--nodelist={','.join(used)}",
        f"--job-name={step_name(spec, 'telemetry')}",
        python,
        "-m",
        "harness.telemetry",
        "--out-dir",
        str(out_dir),
        "--count",
        str(spec.nproc_per_node),
        "--interval-s",
        f"{interval_s:g}",
        "--device",
        spec.device,
    ]


#: What an #SBATCH value may contain. sbatch reads these lines itself (no shell), so nothing
#: can be quoted there: a value outside these is refused instead of written.
_SBATCH_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,+-]*")
#: SLURM's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or no limit.
_SBATCH_TIME = re.compile(r"\d+(-\d+)?(:\d+){0,2}|UNLIMITED|INFINITE", re.IGNORECASE)
#: A folder for #SBATCH --chdir (else only the script's `cd` goes there).
_SBATCH_PATH = re.compile(r"/[A-Za-z0-9_./+-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, kw_only=True)
class SbatchJob:
    """Everything an sbatch script for one sweep says; validated so that it can be written safely.

    ``#SBATCH`` values are checked against what SLURM accepts (they cannot be quoted); the
    command line is shell-quoted word by word. Any value that cannot be represented safely (a
    newline, a ``;`` in a partition name, ...) raises UserError naming the option.
    """

    sweep: str
    """A built-in sweep name, or a sweep file (made absolute by :func:`sbatch_job_here`)."""
    nodes: int
    gpus_per_node: int = 0
    """GPUs to ask for per node; 0 (a CPU sweep) writes no --gpus-per-node line."""
    workdir: str
    """Absolute project folder: the script cd's there, so relative paths mean what they meant."""
    python: str
    """Absolute interpreter of the environment the script was generated from."""
    activate: str | None = None
    """That environment's ``bin/activate`` (a venv), sourced first so PATH matches too."""
    results: str = "results"
    partition: str | None = None
    account: str | None = None
    time_limit: str = "04:00:00"
    job_name: str = "distrinews"
    exclusive: bool = True
    """Keep other jobs off the nodes, so their traffic does not pollute the measurement."""
    sweep_args: tuple[str, ...] = ()
    """Further ``distrinews-bench sweep`` options (--name, --data, ...), quoted word by word."""

    def __post_init__(self) -> None:
        for option, value in (("--partition", self.partition), ("--account", self.account)):
            if value is not None and not _SBATCH_WORD.fullmatch(value):
                raise UserError(
                    f"{option} {value!r} cannot go into an #SBATCH line; use letters, digits "
                    "and '_', '.', ',', '+', '-'"
                )
        if not _SBATCH_WORD.fullmatch(self.job_name):
            raise UserError(f"job name {self.job_name!r}: use letters, digits, '_', '.' or '-'")
        if not _SBATCH_TIME.fullmatch(self.time_limit):
            raise UserError(
                f"--time {self.time_limit!r}: expected minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, "
                "D-HH:MM:SS or UNLIMITED"
            )
        for name in ("nodes", "gpus_per_node"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserError(f"{name} = {value!r}: expected an integer >= 0")
        if self.nodes < 1:
            raise UserError(f"nodes = {self.nodes!r}: expected an integer >= 1")
        texts = [
            ("sweep", self.sweep), ("folder", self.workdir), ("python", self.python),
            ("activate", self.activate or ""), ("--results", self.results),
            *(("sweep option", a) for a in self.sweep_args),
        ]  # fmt: skip
        for what, text in texts:
            if _CONTROL.search(text):
                raise UserError(
                    f"{what} {text!r} holds a control character (newline, tab, ...); "
                    "it cannot be written into a job script safely"
                )
        for what, path in (("folder", self.workdir), ("python", self.python)):
            if not path.startswith("/"):
                raise UserError(f"{what} {path!r}: expected an absolute path")


def sbatch_job_here(sweep: str, **fields: Any) -> SbatchJob:
    """An :class:`SbatchJob` for this environment: this interpreter (and its venv's activate
    script), this working folder, and ``sweep`` made absolute when it is a file."""
    path = Path(sweep)
    if path.suffix == ".toml" or path.exists():
        sweep = str(path.resolve())
    activate = Path(sys.prefix) / "bin" / "activate"
    in_venv = sys.prefix != sys.base_prefix and activate.is_file()
    return SbatchJob(
        sweep=sweep,
        workdir=str(Path.cwd().resolve()),
        # Not resolved: a venv's python is a symlink to the base interpreter, and only the
        # link's own path makes Python find the venv's site-packages.
        python=str(Path(sys.executable).absolute()),
        activate=str(activate) if in_venv else None,
        **fields,
    )


def is_sbatch_script(_path: Path, head: bytes) -> bool:
    """Whether a file is an sbatch script :func:`build_sbatch_script` wrote (``sbatch -o`` may
    replace it)."""
    return head.startswith(b"#!/bin/bash\n#SBATCH --job-name=distrinews-")


#: What ``sbatch -o`` writes: an earlier script of ours may be replaced, nothing else.
SBATCH_KIND = OutputKind(name="sbatch script", recognizes=is_sbatch_script)


def build_sbatch_script(job: SbatchJob) -> str:
    """The text of an sbatch script that runs a sweep in its allocation (pure).

    Works as written from a login shell: it sources the environment it was generated from,
    cd's to the project folder, and runs the sweep with that environment's interpreter. The
    batch step (the sweep process) runs on the first node; for each point it calls srun, which
    starts one torchrun agent per node.
    """
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job.job_name}",
        f"#SBATCH --nodes={job.nodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    if job.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={job.gpus_per_node}")
    if job.exclusive:
        lines.append("#SBATCH --exclusive")
    lines.append(f"#SBATCH --time={job.time_limit}")
    if _SBATCH_PATH.fullmatch(job.workdir):
        # The job's output file lands in the project folder, not wherever sbatch was typed.
        lines.append(f"#SBATCH --chdir={job.workdir}")
    lines.append("#SBATCH --output=%x-%j.out")
    if job.partition:
        lines.append(f"#SBATCH --partition={job.partition}")
    if job.account:
        lines.append(f"#SBATCH --account={job.account}")
    args = [
        job.python, "-m", "harness.cli", "sweep", job.sweep, "--launcher", "slurm",
        "--nodes", str(job.nodes), "--results", job.results, "--no-progress", *job.sweep_args,
    ]  # fmt: skip
    lines += [
        "",
        "# The environment this script was generated from (a login shell has none of it).",
    ]
    if job.activate:
        # Before `set -u`: activate scripts read variables that may be unset.
        lines.append(f". {_sh(job.activate)}")
    lines += [
        "set -euo pipefail",
        f"cd {_sh(job.workdir)}",
        "# The sweep runs here, on the first node; each point is one srun step of torchrun",
        "# agents (one per node) meeting in a c10d rendezvous on the first node.",
        "exec " + " ".join(_sh(a) for a in args),
        "",
    ]
    return "\n".join(lines)


def _sh(text: str) -> str:
    return shlex.quote(str(text))


# -- SLURM allocation ------------------------------------------------------------------------


def slurm_gpus_per_node(env: Mapping[str, str]) -> int:
    """GPUs per node in the current allocation: SLURM_GPUS_ON_NODE, SLURM_GPUS_PER_NODE
    (may read "h100:8"), else the count in CUDA_VISIBLE_DEVICES; 0 when none says."""
    for key in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        value = env.get(key, "").strip()
        if value:
            match = re.search(r"([0-9]+)\s*$", value.split("(")[0])
            if match:
                return int(match.group(1))
    visible = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    return len([v for v in visible.split(",") if v]) if visible else 0


def slurm_hosts(env: Mapping[str, str]) -> list[str]:
    """Hostnames of the allocation, in order (``scontrol show hostnames``)."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise UserError(
            "--launcher slurm runs inside an allocation (sbatch/salloc); no SLURM_JOB_NODELIST"
        )
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    hosts = out.stdout.split()
    # The c10d store lives where the sweep runs (the batch host), so that host goes first.
    here = socket.gethostname().split(".")[0]
    if here in hosts:
        hosts.remove(here)
        hosts.insert(0, here)
    return hosts


def slurm_cancel_steps(
    job_id: str, name: str, *, signal_name: str | None = None, wait_s: float = 60.0
) -> list[str]:
    """scancel every step of job ``job_id`` named ``name``; returns the step ids it found.

    Without ``signal_name`` the steps are cancelled (SIGTERM, then SIGKILL after the cluster's
    KillWait) and this waits until none is left: killing ``srun`` here does not reliably end
    the tasks slurmstepd started on the nodes, cancelling the step does. With ``signal_name``
    (e.g. "TERM") only that signal is delivered to the steps' tasks, which may then finish in
    their own time. (A SIGTERM to ``srun`` itself is no substitute: srun answers it by killing
    its tasks outright, so they cannot write their last words.)
    """

    def steps() -> list[str]:
        out = subprocess.run(
            ["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        found = (line.split(None, 1) for line in out.stdout.splitlines() if line.strip())
        return [f[0] for f in found if len(f) == 2 and f[1].strip() == name]

    found = steps()
    if not found:
        return []
    how = [f"--signal={signal_name}"] if signal_name else []
    subprocess.run(["scancel", *how, *found], capture_output=True, timeout=30)
    deadline = time.monotonic() + wait_s
    while signal_name is None and steps() and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def slurm_job_state(job_id: str) -> str | None:
    """The job's state as slurmctld sees it now (RUNNING, CANCELLED, TIMEOUT, ...); None when
    scontrol cannot say."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\bJobState=(\S+)", out.stdout)
    return match.group(1) if match else None


def free_port(host: str = "") -> int:
    """A TCP port free right now on this host (the OS picks it; racy but short-lived)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# -- the one subprocess ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ProcessResult:
    """How the launched process ended."""

    returncode: int | None
    """The agent's exit status (negative: killed by that signal); None when it was killed."""
    timed_out: bool
    """True when the point ran past its timeout and its process tree was killed."""
    duration_s: float
    """Wall-clock seconds from start to exit."""


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Any:
    """A preexec_fn making the child get SIGTERM when the sweep dies (even by SIGKILL).

    torchrun handles SIGTERM by tearing down its workers, so no orphan run keeps the GPUs busy.
    libc is loaded here, in the parent: between fork and exec the child should only make the
    one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return preexec


def run_process(
    argv: list[str],
    *,
    env: Mapping[str, str],
    log_path: Path | None,
    timeout_s: float | None,
    cwd: Path | None = None,
    grace_s: float = 10.0,
    on_start: Callable[[], None] | None = None,
    on_kill: Callable[[], None] | None = None,
) -> ProcessResult:
    """Run ``argv`` to completion or ``timeout_s``; on timeout or interrupt kill its whole tree.

    The process starts a new session (its own process group), so the kill reaches torchrun
    and its workers but never the sweep itself; should this process die, even by SIGKILL, the
    child gets SIGTERM. Output (stdout and stderr) goes to ``log_path``, or with None to this
    process's own stdout/stderr. ``timeout_s`` None waits as long as it takes. ``on_start``
    runs once the process exists (e.g. starting telemetry); ``on_kill`` runs first when it
    must be killed (under SLURM: cancel the job step, whose tasks on other nodes are not in
    this process tree).
    """
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log_path, "ab") if log_path is not None else contextlib.nullcontext() as log:
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        try:
            if on_start is not None:
                on_start()
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            if on_kill is not None:
                with contextlib.suppress(Exception):  # the tree below is killed regardless
                    on_kill()
            kill_tree(proc, grace_s=grace_s)
            note = f"\n[distrinews] killed after timeout of {timeout_s:g} s\n"
            if log is not None:
                log.write(note.encode())
            else:
                print(note, file=sys.stderr, end="", flush=True)
            return ProcessResult(
                returncode=None, timed_out=True, duration_s=time.monotonic() - start
            )
        except BaseException:  # KeyboardInterrupt, SystemExit: leave nothing running
            if on_kill is not None:
                with contextlib.suppress(Exception):
                    on_kill()
            kill_tree(proc, grace_s=min(grace_s, 5.0))
            raise
    return ProcessResult(
        returncode=returncode, timed_out=False, duration_s=time.monotonic() - start
    )


def kill_tree(proc: subprocess.Popen[Any], *, grace_s: float) -> None:
    """SIGTERM the process group, wait ``grace_s``, then SIGKILL everything left.

    torchrun puts each worker in a session of its own, so killing the agent's group alone
    could orphan workers; their groups are collected first and killed too.
    """
    tree = _descendants(proc.pid)
    groups = {proc.pid} | {_pgid(pid) for pid in tree}
    groups.discard(None)
    groups.discard(os.getpgid(0))  # never ourselves
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    # SIGKILL is asynchronous: wait until the workers are really gone, so the next point never
    # starts while the last one's ranks still hold GPU memory or a port.
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited process awaiting its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _descendants(root: int) -> list[int]:
    """All live descendants of ``root`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may hold spaces, so split
        # after its closing parenthesis.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


# -- what happened ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """A point's ledger status and its one-line reason (None when ok)."""

    status: str
    reason: str | None


def read_errors(point_dir: Path) -> list[dict[str, Any]]:
    """The worker's error.json (first failing rank) then any error.rank<N>.json."""
    point_dir = Path(point_dir)
    first = read_json(point_dir / ERROR_JSON)
    others = [read_json(p) for p in sorted(point_dir.glob(ERROR_RANK_GLOB))]
    return [e for e in [first, *others] if e]


def read_logs(point_dir: Path, *, tail_bytes: int = 200_000) -> str:
    """The launcher log and every per-rank log of a point (tails), for pattern matching."""
    texts = []
    logs = Path(point_dir) / LOGS_DIR
    for path in sorted(logs.rglob("*.log")) if logs.is_dir() else ():
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - tail_bytes))
            texts.append(fh.read().decode("utf-8", "replace"))
    return "\n".join(texts)


def outcome_of(
    result: ProcessResult,
    *,
    has_record: bool,
    errors: list[dict[str, Any]],
    log_text: str,
    timeout_s: float,
) -> Outcome:
    """The ledger status of a finished point (pure).

    Order of evidence: the timeout (we killed it); the worker's own error.json (it knows best);
    success (exit 0 and a record); the worker's exit code as torchrun reports it; log patterns;
    else crashed with the last error-looking log line.
    """
    if result.timed_out:
        return Outcome(
            status="timeout",
            reason=f"no result within {timeout_s:g} s; the process tree was killed",
        )
    if errors:
        err = errors[0]
        failure = str(err.get("failure", "crashed"))
        status = FAILURE_STATUS.get(failure, "crashed")
        message = _one_line(str(err.get("message", "")), limit=200)
        rank = err.get("rank")
        where = f" (rank {rank})" if rank is not None else ""
        first = first_failure(failure, rank, log_text)
        if first is not None:
            message += f"; first failure: rank {first[0]} exit code {first[1]}"
        return Outcome(status=status, reason=_one_line(f"{failure}{where}: {message}"))
    if result.returncode == 0:
        if has_record:
            return Outcome(status="ok", reason=None)
        return Outcome(status="crashed", reason="exited 0 but wrote no record.json")
    root = _ROOT_CAUSE.search(log_text)
    codes = [int(c) for c in _EXITCODE.findall(log_text)]
    worker_code = int(root.group(2)) if root else next((c for c in codes if c != 0), None)
    if worker_code in EXIT_STATUS:
        status = EXIT_STATUS[worker_code]
        reason = f"worker exit code {worker_code}; {_last_error(log_text)}"
        return Outcome(status=status, reason=_one_line(reason))
    for status, pattern in LOG_PATTERNS:
        match = pattern.search(log_text)
        if match:
            reason = f"log: {_line_of(log_text, match.start())}"
            return Outcome(status=status, reason=_one_line(reason))
    if worker_code is not None and worker_code < 0:
        try:
            name = signal.Signals(-worker_code).name
        except ValueError:
            name = f"signal {-worker_code}"
        return Outcome(status="crashed", reason=f"a rank was killed by {name}")
    code = worker_code if worker_code is not None else result.returncode
    return Outcome(status="crashed", reason=_one_line(f"exit code {code}; {_last_error(log_text)}"))


def first_failure(failure: str, rank: Any, log_text: str) -> tuple[int, int] | None:
    """The rank that failed first and its exit code, when it is not the rank that wrote
    error.json (pure); None when error.json already names the cause.

    error.json is created only by the first rank to report (distrinews/files.py, create-only),
    so its class is the cause unless it is a symptom (:data:`SYMPTOM_FAILURES`): the rank saw
    a peer vanish, and the peer died without a word (``os._exit``, SIGKILL, a segfault). The
    peer is then a rank that torchrun lists as failed with an exit code that is not a
    symptom's. torchrun's own "Root Cause" is not enough: it is the earliest failure by whole
    seconds with ties to the lowest rank, so when both die within a second it names the
    survivor that reported the symptom as often as the peer that caused it.
    """
    if failure not in SYMPTOM_FAILURES:
        return None
    symptom_codes = {EXIT_CODES[name] for name in SYMPTOM_FAILURES}
    failed = {int(r): int(c) for r, c in _FAILED_RANK.findall(log_text)}
    causes = {r: c for r, c in failed.items() if r != rank and c not in symptom_codes}
    if not causes:
        return None
    root = _ROOT_CAUSE.search(log_text)
    first = int(root.group(1)) if root and int(root.group(1)) in causes else min(causes)
    return first, causes[first]


_ERRORISH = re.compile(
    r"Error|Exception|error:|Killed|failed|Segmentation fault|Aborted|core dumped|Fatal",
    re.IGNORECASE,
)


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if _ERRORISH.search(line) and not line.startswith(("File ", "Traceback")):
            return line
    return lines[-1] if lines else "no output"


def _line_of(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start : end if end >= 0 else len(text)].strip()


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
