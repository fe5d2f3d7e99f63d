"""A real Slurm cluster for the ``slurm`` tests, or a skip that says why there is none.

CI (``.ci/run``) starts one on the machine itself (``.ci/local-cluster.sh up``: slurmctld and
two slurmd, nodes n1 and n2, partition ``debug``). Every wait on the cluster is bounded, and
every job a test submits is cancelled when the test ends, whatever happened.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture(scope="session")
def slurm_cluster() -> list[str]:
    """The idle nodes of the cluster (sinfo), or skip with the reason."""
    if shutil.which("sinfo") is None:
        pytest.skip("no Slurm here (sinfo not on PATH); .ci/local-cluster.sh up starts one")
    try:
        r = subprocess.run(
            ["sinfo", "-h", "-N", "-t", "idle", "-o", "%N"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("sinfo did not answer within 20 s")
    nodes = sorted(set(r.stdout.split()))
    if r.returncode or len(nodes) < 2:
        why = (r.stderr or r.stdout).strip() or f"idle nodes: {nodes}"
        pytest.skip(f"no two idle Slurm nodes: {why}")
    return nodes


@pytest.fixture
def scancel_after() -> Iterator[Callable[[str], str]]:
    """Register a job id; it is scancelled when the test ends (a no-op if already done)."""
    jobs: list[str] = []
    yield lambda job: jobs.append(job) or job
    for job in jobs:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
    for job in jobs:
        wait_job_gone(job, timeout=60, check=False)


def job_state(job: str) -> str | None:
    """JobState from scontrol (kept for MinJobAge after the job ends), or None."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30
    )
    match = re.search(r"\bJobState=(\S+)", out.stdout)
    return match.group(1) if match else None


def job_field(job: str, name: str) -> str | None:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30
    )
    match = re.search(rf"\b{name}=(\S+)", out.stdout)
    return match.group(1) if match else None


def wait_job_gone(job: str, *, timeout: float, check: bool = True) -> str | None:
    """Wait until squeue no longer lists ``job``; returns its final JobState."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True)
        if not out.stdout.strip():
            return job_state(job)
        time.sleep(0.5)
    if check:
        raise AssertionError(f"job {job} still queued after {timeout:g} s: {job_state(job)}")
    return None


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def login_shell_env() -> dict[str, str]:
    """What a fresh login shell has: no venv, no PYTHONPATH, only the cluster's config."""
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin"}
    if "SLURM_CONF" in os.environ:
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    return env
