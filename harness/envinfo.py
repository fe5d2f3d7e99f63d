"""What a sweep ran on: software versions, GPUs by UUID, topology, host, git state, fingerprint.

Throughput depends on much more than the code: the driver, CUDA, NCCL, the GPU model and how
the GPUs are wired (``nvidia-smi topo -m``: NVLink vs PCIe). :func:`collect` records all of it
in ``results/<sweep>/env.json``, and :func:`fingerprint` hashes the fields that make results
comparable -- a regression baseline only compares runs with the same fingerprint. Host name,
git sha and GPU serials (UUIDs) are recorded but not hashed: the same model of machine
elsewhere is still a fair comparison.

The **machine class** (:func:`machine_class`: CPU model, physical and logical cores, memory,
GPU model and count) is recorded under ``machine`` but, apart from the GPUs, not hashed: a CPU
box replaced by another model keeps its baseline, and ``compare`` names the difference in words
beside its verdict instead of refusing. So does the **load** (:func:`load_average`): the sweep
records the load averages when it starts (``load_avg_start``) and ends (``load_avg_end``), so
a verdict can say "load average 9.1 during this sweep vs 0.3 for the baseline".

Every probe degrades to None (no GPU, no nvidia-smi, not a git checkout, no /proc); none raises.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The fields a fingerprint is computed over (notes/contracts.md).
FINGERPRINT_FIELDS = ("gpu_names", "gpu_count", "driver", "cuda", "nccl", "torch")
#: The machine class: what the numbers depend on besides the software (env.json ``machine``).
MACHINE_FIELDS = (
    "cpu_model",
    "cpu_cores_physical",
    "cpu_cores_logical",
    "memory_gib",
    "gpu_names",
    "gpu_count",
)


def collect(*, nvml: Any = None, repo: Path | None = None) -> dict[str, Any]:
    """The environment of this machine as a JSON-ready dict, with its fingerprint."""
    import torch

    cuda_ok = torch.cuda.is_available()
    gpus = _gpus(nvml)
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": _nccl_version(torch) if cuda_ok else None,
        "transformers": _version("transformers"),
        "nvidia_ml_py": _version("nvidia-ml-py"),
        "driver": _driver(nvml),
        "cuda_device_count": torch.cuda.device_count() if cuda_ok else 0,
        "gpus": gpus,
        "gpu_names": sorted({g["name"] for g in gpus}),
        "gpu_count": len(gpus),
        "topology": _topology(),
        "cpu_count": _cpu_count(),
        "load_avg_start": load_average(),
        **_git(repo or Path(__file__).resolve().parents[1]),
    }
    info["machine"] = machine_class(gpus)
    info["fingerprint_fields"] = {k: info[k] for k in FINGERPRINT_FIELDS}
    info["fingerprint"] = fingerprint(info["fingerprint_fields"])
    return info


def fingerprint(fields: dict[str, Any]) -> str:
    """12 hex chars of SHA-256 over the comparability fields (sorted JSON)."""
    missing = [k for k in FINGERPRINT_FIELDS if k not in fields]
    if missing:
        raise ValueError(f"fingerprint needs {', '.join(missing)}")
    body = json.dumps({k: fields[k] for k in FINGERPRINT_FIELDS}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nccl_version(torch: Any) -> str | None:
    try:
        version = torch.cuda.nccl.version()
    except (RuntimeError, AttributeError):
        return None
    return ".".join(str(v) for v in version) if isinstance(version, tuple) else str(version)


def _nvml(nvml: Any) -> Any:
    """An initialised NVML module or None (the caller shuts it down)."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return None
    return nvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpus(nvml: Any) -> list[dict[str, Any]]:
    """Every GPU NVML sees: index (PCI bus order), name, UUID, memory."""
    mod = _nvml(nvml)
    if mod is None:
        return []
    try:
        gpus = []
        for i in range(mod.nvmlDeviceGetCount()):
            handle = mod.nvmlDeviceGetHandleByIndex(i)
            gpus.append(
                {
                    "index": i,
                    "name": _text(mod.nvmlDeviceGetName(handle)),
                    "uuid": _text(mod.nvmlDeviceGetUUID(handle)),
                    "memory_total_gib": mod.nvmlDeviceGetMemoryInfo(handle).total / 2**30,
                }
            )
        return gpus
    except mod.NVMLError:
        return []
    finally:
        mod.nvmlShutdown()


def _driver(nvml: Any) -> str | None:
    mod = _nvml(nvml)
    if mod is None:
        return None
    try:
        return _text(mod.nvmlSystemGetDriverVersion())
    except mod.NVMLError:
        return None
    finally:
        mod.nvmlShutdown()


def _run(argv: list[str], cwd: Path | None = None) -> str | None:
    """stdout of a short command, or None if it is missing, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _topology() -> str | None:
    """``nvidia-smi topo -m``: which GPU pairs talk over NVLink, PCIe switches or the CPU."""
    return _run(["nvidia-smi", "topo", "-m"])


def _git(repo: Path) -> dict[str, Any]:
    sha = _run(["git", "rev-parse", "HEAD"], cwd=repo)
    if sha is None:
        return {"git_sha": None, "git_dirty": None}
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    dirty = bool(status.strip()) if status is not None else None
    return {"git_sha": sha.strip(), "git_dirty": dirty}


def machine_class(
    gpus: list[dict[str, Any]] | None = None,
    *,
    cpuinfo: str | None = None,
    meminfo: str | None = None,
) -> dict[str, Any]:
    """CPU model, physical and logical cores, memory (GiB), GPU model(s) and count
    (:data:`MACHINE_FIELDS`); None for what this machine does not say. ``cpuinfo`` and
    ``meminfo`` stand for /proc's files (read when not given)."""
    if cpuinfo is None:
        cpuinfo = _read("/proc/cpuinfo")
    if meminfo is None:
        meminfo = _read("/proc/meminfo")
    models: list[str] = []
    cores: set[tuple[str, str]] = set()
    physical = core = None
    for line in [*(cpuinfo or "").splitlines(), ""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and value not in models:
            models.append(value)
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
        elif not key:  # a blank line ends one logical CPU's block
            if core is not None:
                cores.add((physical or "0", core))
            physical = core = None
    memory = None
    for line in (meminfo or "").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                memory = round(int(parts[1]) * 1024 / 2**30, 1)  # kB
    gpus = gpus or []
    return {
        "cpu_model": " / ".join(models) if models else (platform.processor() or None),
        "cpu_cores_physical": len(cores) or None,
        "cpu_cores_logical": os.cpu_count(),
        "memory_gib": memory,
        "gpu_names": sorted({g["name"] for g in gpus}),
        "gpu_count": len(gpus),
    }


def sweep_loads(env: dict[str, Any]) -> list[float]:
    """The 1-minute load averages env.json recorded as the sweep started and ended (``[]``
    where neither is there: older results, tables), finite numbers only."""
    import math

    return [
        float(v[0])
        for v in (env.get("load_avg_start"), env.get("load_avg_end"))
        if isinstance(v, list)
        and v
        and isinstance(v[0], (int, float))
        and not isinstance(v[0], bool)
        and math.isfinite(v[0])
    ]


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (processes running or waiting for a CPU), or
    None where the system has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cpu_count() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def point_env(sweep_env: dict[str, Any], *, nccl_env: dict[str, str]) -> dict[str, Any]:
    """The per-point environment: the sweep's identity plus the NCCL settings it really got."""
    return {
        "hostname": sweep_env.get("hostname"),
        "fingerprint": sweep_env.get("fingerprint"),
        "git_sha": sweep_env.get("git_sha"),
        "git_dirty": sweep_env.get("git_dirty"),
        "python_executable": sys.executable,
        "nccl_env": nccl_env,
    }
