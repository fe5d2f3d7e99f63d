"""Helpers for real-process tests: the model they launch, and the process-table check that
nothing is left running."""

from __future__ import annotations

import os
from pathlib import Path

#: The model for real-process tests whose subject is the launch path (failure classes,
#: timeouts, signals, rendezvous, telemetry), not the network: the synthetic-sleep shape with
#: sleeps of a millisecond or two. Its ranks never import transformers, which is most of what
#: a tiny-DistilBERT rank costs (about 2.7 s of CPU of 4.3 s before its first step, on the
#: 2-core box). DistilBERT itself still runs under torchrun in the default-sweep,
#: record-schema, train, DDP and Slurm sbatch tests.
LAUNCH_MODEL = "synthetic-sleep:layers=2,layer_mb=0.0625,embed_mb=0.0625,fwd_ms=1,bwd_ms=2"


def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes, this one excepted, whose command line mentions ``text`` --
    on every Slurm node too, since the local cluster's nodes share this machine's process
    table."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            found.append(int(entry.name))
    return found


def listening_sockets(text: str) -> set[tuple[int, str, int, str]]:
    """(pid, address, port, command) of every TCP socket listening in a live process whose
    command line mentions ``text``; ``command`` is the start of that command line, to say which
    program it is (``python -m distrinews.torchrun``, ``srun``, ...).

    Linux /proc, no tool needed: a process's sockets are the ``socket:[INODE]`` links under
    /proc/PID/fd; /proc/PID/net/tcp and tcp6 list the sockets of its network namespace with
    their state (0A: LISTEN), local address (hex, in the kernel's byte order) and inode.
    """
    found = set()
    for pid in processes_mentioning(text):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            command = " ".join(a.decode(errors="replace") for a in argv[:3])
            inodes = {
                os.readlink(fd)[8:-1]
                for fd in Path(f"/proc/{pid}/fd").iterdir()
                if os.readlink(fd).startswith("socket:[")
            }
        except OSError:  # gone meanwhile
            continue
        for table in ("tcp", "tcp6"):
            try:
                lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    address, port = fields[1].split(":")
                    found.add((pid, _kernel_address(address), int(port, 16), command))
    return found


def _kernel_address(hexed: str) -> str:
    """/proc/net/tcp's address (each 32-bit word little-endian) as text: 0100007F -> 127.0.0.1."""
    import ipaddress

    raw = bytes.fromhex(hexed)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def made_once(tmp_path_factory, name: str, make) -> Path:
    """A folder ``make(folder)`` fills once per test run, for every test that reads it.

    Module- and session-scoped fixtures are per pytest-xdist worker: two workers that each ran
    one test of a shared launch would each launch it (a 2-rank DDP launch is about 10 s of CPU
    on the 2-core box). The folder lives in the run's base temporary directory, which every
    worker shares; an exclusive lock makes the first worker to ask build it while the others
    wait, and a marker file says it is complete (a failed build is retried by the next test).
    """
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # .../pytest-N/popen-gwK -> .../pytest-N, shared by the workers
    folder, done = base / f"once-{name}", base / f"once-{name}.done"
    with open(base / f"once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder
