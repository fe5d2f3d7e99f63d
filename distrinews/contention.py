"""What else competes for the cores a rank runs on: the counters that name contention on CPU.

A CPU rank is slow for two different reasons: its own work grew (compute), or its threads were
ready to run and no core was free (contention: more ranks × threads than cores, another
process on the same cores, a hypervisor taking the core away). Linux counts the second kind
directly, so the report can name it instead of folding it into "compute" or "all-reduce":

- **run-queue wait** (``/proc/thread-self/schedstat``, second field): nanoseconds this thread
  spent runnable but waiting for a core. It is zero on an idle machine whatever the work, and
  grows by exactly the time a competitor held the core;
- **involuntary context switches** (``getrusage``): how often the kernel took a core away from
  this process's threads before they gave it up;
- **CPU steal** (``/proc/stat``): time the hypervisor ran something else on the virtual CPUs;
- **load average** (``os.getloadavg``): runnable threads, averaged over a minute;
- **oversubscription**: the ranks on this machine × torch's threads per rank over the cores
  the rank may run on (``os.sched_getaffinity``): above 1, the ranks cannot all run at once.

Every reader returns None where the kernel does not provide the counter (not Linux, schedstat
compiled out): a missing counter is never read as zero.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

#: /proc/stat's per-CPU columns (after the "cpu" label), in order.
_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


class RunQueueClock:
    """This thread's run-queue wait, read cheaply and often (one pread of a small proc file).

    Create it on the thread whose wait it reads: ``/proc/thread-self`` names the thread that
    opened it.
    """

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            self.read()
        except (OSError, ValueError, IndexError):
            self.close()

    @property
    def available(self) -> bool:
        return self._fd is not None

    def read(self) -> float | None:
        """Seconds this thread has waited for a core since it started (None if unknown)."""
        if self._fd is None:
            return None
        fields = os.pread(self._fd, 128, 0).split()
        return int(fields[1]) / 1e9

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
        self._fd = None


def process_run_queue_s() -> float | None:
    """Seconds all of this process's threads have waited for a core (summed), or None.

    A few dozen small reads: for measurements outside timed windows (the all-reduce ceiling,
    where gloo's own threads are the ones that wait).
    """
    total, seen = 0.0, False
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat", "rb") as fh:
                total += int(fh.read().split()[1]) / 1e9
                seen = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended between the listing and the read
    return total if seen else None


def involuntary_switches() -> int | None:
    """Involuntary context switches of this process (all its threads) so far."""
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw)
    except (ImportError, OSError):
        return None


def cpu_times() -> dict[str, int] | None:
    """/proc/stat's all-CPU line: ticks per column (user, ..., steal), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            first = fh.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(v) for v in first[1 : 1 + len(_STAT_FIELDS)]]
    return dict(zip(_STAT_FIELDS, values, strict=False))


def steal_share(before: dict[str, int] | None, after: dict[str, int] | None) -> float | None:
    """Share of all CPU time between two :func:`cpu_times` readings that was stolen (0..1)."""
    if before is None or after is None or "steal" not in before or "steal" not in after:
        return None
    total = sum(after.values()) - sum(before.values())
    if total <= 0:
        return None
    return min(1.0, max(0.0, (after["steal"] - before["steal"]) / total))


def load_avg_1m() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return None


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; all CPUs where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class WindowCounters:
    """Counters read at the start of a window on one rank; :meth:`finish` gives the deltas."""

    clock: RunQueueClock
    run_queue_s: float | None
    switches: int | None
    cpu: dict[str, int] | None

    @classmethod
    def start(cls) -> WindowCounters:
        clock = RunQueueClock()
        return cls(clock, clock.read(), involuntary_switches(), cpu_times())

    def finish(self, steps: int) -> dict[str, Any]:
        """This rank's figures over the window: per step run-queue wait of the calling thread
        (the one that trains) and involuntary switches of the process; the machine's steal
        share and load average."""
        rq, sw = self.clock.read(), involuntary_switches()
        self.clock.close()
        per = max(1, steps)
        return {
            "run_queue_s": None if rq is None or self.run_queue_s is None
            else (rq - self.run_queue_s) / per,
            "switches": None if sw is None or self.switches is None else (sw - self.switches) / per,
            "steal_share": steal_share(self.cpu, cpu_times()),
            "load_avg_1m": load_avg_1m(),
        }  # fmt: skip
