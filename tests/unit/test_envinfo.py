"""Environment capture: versions, GPUs by UUID (fake NVML), git state, and the fingerprint."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from harness import envinfo
from tests.unit.test_telemetry import fake_nvml


def _nvml_with_names(n: int, name: str = "NVIDIA H100 80GB HBM3"):
    mod = fake_nvml(n)
    mod.nvmlDeviceGetName = lambda h: name.encode()  # older bindings return bytes
    mod.nvmlSystemGetDriverVersion = lambda: "570.86.15"
    used = mod.nvmlDeviceGetMemoryInfo
    mod.nvmlDeviceGetMemoryInfo = lambda h: type(
        "Mem", (), {"used": used(h).used, "total": 80 * 2**30}
    )()
    return mod


def test_collect_on_this_machine_is_json_with_versions_and_fingerprint():
    info = envinfo.collect()
    json.dumps(info)  # JSON-ready
    assert info["torch"] == torch.__version__
    assert info["python"].count(".") == 2
    assert info["transformers"]
    assert info["hostname"]
    assert len(info["fingerprint"]) == 12
    assert set(info["fingerprint_fields"]) == set(envinfo.FINGERPRINT_FIELDS)
    if not torch.cuda.is_available():
        assert info["cuda_device_count"] == 0 and info["nccl"] is None


def test_gpus_are_listed_by_uuid_and_change_the_fingerprint():
    info = envinfo.collect(nvml=_nvml_with_names(2))
    assert [g["uuid"] for g in info["gpus"]] == ["GPU-00000-aaaa", "GPU-00001-aaaa"]
    assert info["gpu_names"] == ["NVIDIA H100 80GB HBM3"]
    assert info["gpus"][0]["memory_total_gib"] == pytest.approx(80.0)
    assert info["driver"] == "570.86.15"
    other = envinfo.collect(nvml=_nvml_with_names(2, "NVIDIA A100-SXM4-80GB"))
    assert other["fingerprint"] != info["fingerprint"]
    same = envinfo.collect(nvml=_nvml_with_names(2))
    assert same["fingerprint"] == info["fingerprint"]


def test_fingerprint_ignores_host_and_git_but_not_versions():
    fields = {k: None for k in envinfo.FINGERPRINT_FIELDS}
    base = envinfo.fingerprint(fields)
    assert envinfo.fingerprint({**fields, "hostname": "elsewhere"}) == base
    assert envinfo.fingerprint({**fields, "nccl": "2.21.5"}) != base
    with pytest.raises(ValueError, match="needs"):
        envinfo.fingerprint({"torch": "2.4"})


def test_no_nvml_means_no_gpus_and_no_driver():
    info = envinfo.collect(nvml=fake_nvml(init_fails=True))
    assert info["gpus"] == [] and info["driver"] is None and info["gpu_count"] == 0


def test_git_sha_and_dirty_flag(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, timeout=30)

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    clean = envinfo.collect(nvml=fake_nvml(init_fails=True), repo=tmp_path)
    assert len(clean["git_sha"]) == 40 and clean["git_dirty"] is False
    (tmp_path / "f.txt").write_text("b")
    dirty = envinfo.collect(nvml=fake_nvml(init_fails=True), repo=tmp_path)
    assert dirty["git_dirty"] is True and dirty["git_sha"] == clean["git_sha"]
    nogit = envinfo.collect(nvml=fake_nvml(init_fails=True), repo=tmp_path / "f.txt")
    assert nogit["git_sha"] is None


def _cpu(processor: int, physical: int, core: int) -> str:
    return (
        f"processor\t: {processor}\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n"
        f"physical id\t: {physical}\ncore id\t\t: {core}\n\n"
    )


def test_machine_class_counts_physical_cores_and_memory_without_changing_the_fingerprint():
    # Two sockets x two cores x two hyperthreads: 8 logical CPUs, 4 physical cores.
    cpuinfo = "".join(
        _cpu(i, physical=i // 4, core=(i // 2) % 2) for i in range(8)
    )  # fmt: skip
    meminfo = "MemTotal:       65842340 kB\nMemFree:         1000 kB\n"
    m = envinfo.machine_class([], cpuinfo=cpuinfo, meminfo=meminfo)
    assert m["cpu_model"] == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert m["cpu_cores_physical"] == 4
    assert m["memory_gib"] == pytest.approx(62.8)
    assert (m["gpu_names"], m["gpu_count"]) == ([], 0)
    assert set(m) == set(envinfo.MACHINE_FIELDS)
    # Nothing readable: unknown, not an error.
    empty = envinfo.machine_class([], cpuinfo="", meminfo="")
    assert empty["cpu_cores_physical"] is None and empty["memory_gib"] is None
    # On this machine: recorded in env.json, with the load, outside the fingerprint.
    info = envinfo.collect()
    assert set(info["machine"]) == set(envinfo.MACHINE_FIELDS)
    assert info["machine"]["cpu_cores_logical"] >= 1
    assert len(info["load_avg_start"]) == 3
    cpu_side = set(envinfo.MACHINE_FIELDS) - {"gpu_names", "gpu_count"}
    assert not cpu_side & set(envinfo.FINGERPRINT_FIELDS)  # a new CPU model is not refused
