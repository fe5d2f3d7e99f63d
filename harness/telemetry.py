"""GPU telemetry during a sweep point: an NVML sampler on a background thread, or nothing.

NVML (the NVIDIA Management Library, ``nvidia-ml-py`` / ``import pynvml``) reports what the
driver sees: utilisation (share of time a kernel was running), memory used, board power, SM
clock, temperature and *throttle reasons* (why the clock is below its maximum: power cap,
thermal, idle, ...). The harness samples the GPUs a point uses every ``interval_s`` from the
sweep process -- outside the ranks, so training code pays nothing -- keeps every raw sample
(``telemetry.jsonl``) and summarises the ones inside the worker's measured window.

Where NVML is missing (no driver, no nvidia-ml-py, a CPU box) :func:`make_sampler` returns a
:class:`NullSampler`: the point runs on and its row says ``telemetry_available = false``.

The NVML module is injected (``nvml=``), so tests drive the real sampler with a fake module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from distrinews.errors import UserError
from distrinews.safeio import decimal, loads_strict

#: NVML clock-event (throttle) reason bits -> short names (nvmlClocksEventReason*).
THROTTLE_BITS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clock",
}

#: The telemetry columns of a ledger row (notes/contracts.md), all None when unavailable.
SUMMARY_KEYS = (
    "gpu_util_pct_mean",
    "gpu_mem_used_gib_max",
    "gpu_power_w_mean",
    "gpu_sm_clock_mhz_mean",
    "gpu_temp_c_max",
    "gpu_throttle_reasons",
    "gpu_clock_loss_share",
)
#: Reasons that mean the board is holding its clock down (power or heat), as opposed to an
#: idle GPU or a clock setting: the ones whose lost clock is contention (harness.attribution).
LIMITING_REASONS = frozenset(
    {"sw_power_cap", "hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake"}
)

Sample = dict[str, Any]


class Sampler(Protocol):
    """Something that samples GPUs between :meth:`start` and :meth:`stop`."""

    available: bool
    """False when no telemetry can be had (then :meth:`stop` returns no samples)."""
    unavailable_reason: str | None
    """Why telemetry is unavailable, one line; None when available."""

    def start(self) -> None: ...

    def stop(self) -> list[Sample]:
        """Stop sampling; return every raw sample taken, in time order."""
        ...


class NullSampler:
    """The sampler where there is no NVML: records nothing, costs nothing."""

    available = False

    def __init__(self, reason: str) -> None:
        self.unavailable_reason = reason

    def start(self) -> None:
        pass

    def stop(self) -> list[Sample]:
        return []


class NvmlSampler:
    """Samples chosen GPUs through NVML on a daemon thread.

    ``devices`` are NVML indices. Each sample is one GPU at one moment; a metric the device
    does not support (power on some boards, say) is None in that sample, not a made-up 0.
    """

    available = True
    unavailable_reason = None

    def __init__(
        self,
        nvml: Any,
        devices: Sequence[int],
        *,
        interval_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nvml = nvml
        self._interval_s = interval_s
        self._clock = clock
        self._devices = [
            (index, handle, _text(nvml.nvmlDeviceGetUUID(handle)))
            for index in devices
            for handle in [nvml.nvmlDeviceGetHandleByIndex(index)]
        ]
        self._samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Newer drivers call them clock-event reasons; older bindings only have "throttle".
        self._reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
        )

    @property
    def uuids(self) -> list[str]:
        return [uuid for _, _, uuid in self._devices]

    def sample_once(self) -> list[Sample]:
        """One sample of every device (also used by the overhead benchmark)."""
        nvml = self._nvml
        out = []
        for index, handle, uuid in self._devices:
            t = self._clock()
            util = self._read(lambda h=handle: nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            mem = self._read(lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h).used / 2**30)
            power = self._read(lambda h=handle: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0)
            clock = self._read(lambda h=handle: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))
            top = self._read(lambda h=handle: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM))
            temp = self._read(
                lambda h=handle: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)
            )
            mask = self._read(lambda h=handle: self._reasons(h)) if self._reasons else None
            # The board's running energy total (mJ, Volta+): harness.energy takes the
            # measured window's joules from it; None where the board has no counter.
            energy = self._read(lambda h=handle: nvml.nvmlDeviceGetTotalEnergyConsumption(h))
            out.append(
                {
                    "t_unix": t,
                    "gpu_uuid": uuid,
                    "gpu_index": index,
                    "util_pct": util,
                    "mem_used_gib": mem,
                    "power_w": power,
                    "sm_clock_mhz": clock,
                    "sm_clock_max_mhz": top,
                    "temp_c": temp,
                    "throttle_reasons": throttle_names(mask) if mask is not None else None,
                    "energy_mj": energy,
                }
            )
        return out

    def _read(self, getter: Callable[[], Any]) -> Any:
        try:
            return getter()
        except self._nvml.NVMLError:  # not supported on this board, or a transient failure
            return None
        except AttributeError:  # an nvidia-ml-py too old to have this call
            return None

    def _loop(self) -> None:
        # Event.wait doubles as the sleep, so stop() wakes the thread at once.
        while not self._stop.is_set():
            self._samples.extend(self.sample_once())
            self._stop.wait(self._interval_s)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._samples.extend(self.sample_once())  # one last look at the end state
        with_shutdown = getattr(self._nvml, "nvmlShutdown", None)
        if with_shutdown is not None:
            with contextlib.suppress(self._nvml.NVMLError):
                with_shutdown()
        samples, self._samples = self._samples, []
        return samples


def throttle_names(mask: int) -> list[str]:
    """The names of the set bits of an NVML clock-event reason mask (unknown bits as hex)."""
    names = [name for bit, name in THROTTLE_BITS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_BITS)
    if rest:
        names.append(f"0x{rest:x}")
    return names


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def select_devices(nvml: Any, visible: str | None, count: int) -> list[int]:
    """NVML indices of the GPUs a point's ranks use (local rank i -> the i-th visible GPU).

    ``visible`` is CUDA_VISIBLE_DEVICES: indices (in PCI bus order, which build_env asks CUDA
    to use) or UUIDs (``GPU-...``, prefixes allowed, as CUDA accepts them). Unset means all.
    """
    total = nvml.nvmlDeviceGetCount()
    uuids = [
        _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(total)
    ]
    if visible is None or not visible.strip():
        chosen = list(range(total))
    else:
        chosen = []
        for entry in (e.strip() for e in visible.split(",")):
            if (index := decimal(entry)) is not None and index < total:
                chosen.append(index)
            elif entry.startswith("GPU-"):
                matches = [i for i, u in enumerate(uuids) if u.startswith(entry)]
                chosen.extend(matches[:1])
            else:
                break  # CUDA stops at the first invalid entry, so do we
    return chosen[:count]


def make_sampler(
    *, visible: str | None, count: int, interval_s: float = 0.2, nvml: Any = None
) -> NvmlSampler | NullSampler:
    """An NVML sampler for the point's GPUs, or a NullSampler saying why there is none."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return NullSampler("nvidia-ml-py is not installed")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return NullSampler(f"NVML unavailable: {exc}")
    devices = select_devices(nvml, visible, count)
    if not devices:
        nvml.nvmlShutdown()
        return NullSampler("no GPU visible to NVML for this point")
    return NvmlSampler(nvml, devices, interval_s=interval_s)


def window_columns(
    samples: Sequence[Sample], window: tuple[float, float] | None, *, available: bool = True
) -> dict[str, Any]:
    """Ledger telemetry columns over the samples inside ``window`` (start, end unix seconds).

    Means are over all samples of all GPUs (per-GPU figures, not sums); maxima likewise.
    Without a window (the point failed) every sample counts. Unavailable -> every value None.
    """
    out: dict[str, Any] = {"telemetry_available": available, "telemetry_samples": 0}
    out.update(dict.fromkeys(SUMMARY_KEYS))
    if not available:
        out["telemetry_samples"] = None
        return out
    inside = [s for s in samples if window is None or window[0] <= s["t_unix"] <= window[1]]
    out["telemetry_samples"] = len(inside)

    def values(key: str) -> list[float]:
        return [float(s[key]) for s in inside if s.get(key) is not None]

    def mean(key: str) -> float | None:
        vals = values(key)
        return statistics.fmean(vals) if vals else None

    def peak(key: str) -> float | None:
        vals = values(key)
        return max(vals) if vals else None

    out["gpu_util_pct_mean"] = mean("util_pct")
    out["gpu_mem_used_gib_max"] = peak("mem_used_gib")
    out["gpu_power_w_mean"] = mean("power_w")
    out["gpu_sm_clock_mhz_mean"] = mean("sm_clock_mhz")
    out["gpu_temp_c_max"] = peak("temp_c")
    reasons = sorted({r for s in inside for r in (s.get("throttle_reasons") or [])})
    out["gpu_throttle_reasons"] = ",".join(reasons) if inside else None
    out["gpu_clock_loss_share"] = clock_loss_share(inside)
    return out


def clock_loss_share(samples: Sequence[Sample]) -> float | None:
    """Mean over samples of the SM clock lost to a power or thermal limit: 1 − clock / max
    clock where a :data:`LIMITING_REASONS` reason is set, else 0 (None without clocks)."""
    losses = []
    for s in samples:
        clock, top = s.get("sm_clock_mhz"), s.get("sm_clock_max_mhz")
        if clock is None or not top:
            continue
        limited = LIMITING_REASONS & set(s.get("throttle_reasons") or ())
        losses.append(min(1.0, max(0.0, 1.0 - float(clock) / float(top))) if limited else 0.0)
    return statistics.fmean(losses) if losses else None


# -- one sampler per node under SLURM ----------------------------------------------------------


def stream_to_file(
    sampler: NvmlSampler, path: Path, stop: threading.Event, *, host: str, interval_s: float
) -> int:
    """Sample until ``stop`` is set, appending one JSON line per sample; returns the count.

    Each round is flushed, so a sampler killed with its step loses at most one round (and a
    torn last line, which readers skip).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "a", encoding="utf-8") as fh:
        while not stop.is_set():
            for sample in sampler.sample_once():
                fh.write(json.dumps({**sample, "host": host}, sort_keys=True) + "\n")
                count += 1
            fh.flush()
            stop.wait(interval_s)
    return count


def read_node_samples(folder: Path) -> list[Sample]:
    """Every sample the per-node samplers wrote under ``folder``, in time order."""
    samples: list[Sample] = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:  # strict: NaN/Infinity, huge integers, bad UTF-8 are not samples
                sample = loads_strict(line, where=str(path))
            except UserError:  # also the torn last line of a killed sampler
                continue
            if isinstance(sample, dict) and isinstance(sample.get("t_unix"), (int, float)):
                samples.append(sample)
    samples.sort(key=lambda s: s["t_unix"])
    return samples


NODE_SUFFIX = ".node.json"


def read_node_status(folder: Path) -> dict[str, dict[str, Any]]:
    """host -> what that node's sampler said about itself (``<host>.node.json``).

    Each per-node sampler writes one when it starts (``stopped_unix`` null) and again when it
    stops: whether it could sample, why not, when it ran and how many samples it wrote.
    """
    from .store import read_json

    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob(f"*{NODE_SUFFIX}")):
        status = read_json(path)
        if isinstance(status, dict):
            out[path.name[: -len(NODE_SUFFIX)]] = status
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.telemetry --out-dir DIR --count G``: sample this node until SIGTERM.

    The SLURM launcher starts one of these per node (``srun --overlap``) beside a multi-node
    point, so every node's GPUs are sampled, not just the batch host's. Every node writes
    ``DIR/<host>.jsonl`` (its samples; empty without NVML or for a CPU point) and
    ``DIR/<host>.node.json`` (available or why not, started and stopped times), so a node that
    could not sample still says so, and its sampler still lives exactly as long as the point.
    """
    from .store import atomic_write_json

    parser = argparse.ArgumentParser(prog="python -m harness.telemetry")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True, help="GPUs the point uses here")
    parser.add_argument("--interval-s", type=float, default=0.2)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args(argv)
    # Handlers first: a point that ends at once must still stop us cleanly.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    host = socket.gethostname()
    sampler: NvmlSampler | NullSampler
    if args.device == "cpu":
        sampler = NullSampler("cpu point: no GPU to sample")
    else:
        sampler = make_sampler(
            visible=os.environ.get("CUDA_VISIBLE_DEVICES"), count=args.count, interval_s=1.0
        )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    samples_path = args.out_dir / f"{host}.jsonl"
    status_path = args.out_dir / f"{host}{NODE_SUFFIX}"
    status = {
        "host": host,
        "available": sampler.available,
        "unavailable_reason": sampler.unavailable_reason,
        "started_unix": time.time(),
        "stopped_unix": None,
        "samples": 0,
    }
    atomic_write_json(status_path, status)
    if isinstance(sampler, NvmlSampler):
        count = stream_to_file(sampler, samples_path, stop, host=host, interval_s=args.interval_s)
        sampler.stop()
    else:
        samples_path.touch()
        print(f"telemetry unavailable on {host}: {sampler.unavailable_reason}", file=sys.stderr)
        while not stop.wait(0.5):  # live as long as the point, so start and stop are real
            pass
        count = 0
    atomic_write_json(status_path, {**status, "stopped_unix": time.time(), "samples": count})
    return 0


if __name__ == "__main__":
    sys.exit(main())
