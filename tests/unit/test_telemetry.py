"""The NVML sampler against a fake pynvml module (injected), and the no-NVML path."""

from __future__ import annotations

import time
import types

import pytest

from harness import telemetry as T


class FakeNVMLError(Exception):
    pass


def fake_nvml(
    n_gpus: int = 2, *, power_supported: bool = True, init_fails: bool = False
) -> types.ModuleType:
    """A module object with the slice of the pynvml API the sampler uses.

    Readings depend on the device and a call counter, so tests can tell samples apart.
    """
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError
    mod.NVML_CLOCK_SM = 1
    mod.NVML_TEMPERATURE_GPU = 0
    mod.calls = {"init": 0, "shutdown": 0, "util": 0}

    def init():
        if init_fails:
            raise FakeNVMLError("Driver Not Loaded")
        mod.calls["init"] += 1

    def shutdown():
        mod.calls["shutdown"] += 1

    def util(handle):
        mod.calls["util"] += 1
        return types.SimpleNamespace(gpu=50 + handle, memory=10)

    def power(handle):
        if not power_supported:
            raise FakeNVMLError("Not Supported")
        return 300_000 + 1000 * handle  # milliwatts

    mod.nvmlInit = init
    mod.nvmlShutdown = shutdown
    mod.nvmlDeviceGetCount = lambda: n_gpus
    mod.nvmlDeviceGetHandleByIndex = lambda i: i
    mod.nvmlDeviceGetUUID = lambda h: f"GPU-0000{h}-aaaa"
    mod.nvmlDeviceGetUtilizationRates = util
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=(h + 1) * 2**30)
    mod.nvmlDeviceGetPowerUsage = power
    mod.nvmlDeviceGetClockInfo = lambda h, kind: 1980 if kind == mod.NVML_CLOCK_SM else 0
    mod.nvmlDeviceGetTemperature = lambda h, kind: 40 + h
    mod.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0x4 | 0x20 if h else 0x0
    return mod


def test_sampler_records_every_metric_for_the_chosen_gpus_by_uuid():
    nvml = fake_nvml(4)
    sampler = T.make_sampler(visible="GPU-00002,3", count=2, interval_s=0.01, nvml=nvml)
    assert isinstance(sampler, T.NvmlSampler) and sampler.available
    assert sampler.uuids == ["GPU-00002-aaaa", "GPU-00003-aaaa"]
    sampler.start()
    time.sleep(0.1)
    samples = sampler.stop()
    assert nvml.calls["init"] == 1 and nvml.calls["shutdown"] == 1
    assert len(samples) >= 4  # several rounds of 2 GPUs
    assert {s["gpu_uuid"] for s in samples} == {"GPU-00002-aaaa", "GPU-00003-aaaa"}
    s3 = next(s for s in samples if s["gpu_index"] == 3)
    assert s3["util_pct"] == 53
    assert s3["mem_used_gib"] == pytest.approx(4.0)
    assert s3["power_w"] == pytest.approx(303.0)
    assert s3["sm_clock_mhz"] == 1980
    assert s3["temp_c"] == 43
    assert s3["throttle_reasons"] == ["sw_power_cap", "sw_thermal"]
    times = [s["t_unix"] for s in samples]
    assert times == sorted(times)
    # The thread is gone: no more reads after stop().
    reads = nvml.calls["util"]
    time.sleep(0.05)
    assert nvml.calls["util"] == reads


def test_unsupported_metric_is_none_not_zero():
    sampler = T.make_sampler(
        visible=None, count=1, interval_s=1, nvml=fake_nvml(1, power_supported=False)
    )
    (sample,) = sampler.sample_once()
    assert sample["power_w"] is None and sample["util_pct"] == 50
    summary = T.window_columns([sample], None)
    assert summary["gpu_power_w_mean"] is None and summary["gpu_util_pct_mean"] == 50


def test_no_nvml_gives_a_null_sampler_with_a_reason():
    sampler = T.make_sampler(visible=None, count=1, nvml=fake_nvml(init_fails=True))
    assert isinstance(sampler, T.NullSampler) and not sampler.available
    assert "Driver Not Loaded" in sampler.unavailable_reason
    sampler.start()
    assert sampler.stop() == []
    none_visible = T.make_sampler(visible="7", count=1, nvml=fake_nvml(2))
    assert isinstance(none_visible, T.NullSampler)
    summary = T.window_columns([], None, available=False)
    assert summary["telemetry_available"] is False
    assert all(summary[k] is None for k in T.SUMMARY_KEYS)


def test_real_pynvml_on_this_machine_is_unavailable_or_real():
    """On a box without a driver the real module must fail over to the NullSampler."""
    sampler = T.make_sampler(visible=None, count=1)
    if isinstance(sampler, T.NvmlSampler):  # a GPU machine: real readings
        sampler.start()
        samples = sampler.stop()
        assert samples and samples[0]["gpu_uuid"].startswith(("GPU-", "MIG-"))
    else:
        assert sampler.unavailable_reason


def test_summary_covers_only_the_measured_window():
    samples = [
        {
            "t_unix": t,
            "util_pct": u,
            "mem_used_gib": m,
            "power_w": 100.0,
            "sm_clock_mhz": 1000,
            "temp_c": 30 + t,
            "throttle_reasons": r,
        }
        for t, u, m, r in [
            (0.0, 0, 1.0, ["gpu_idle"]),  # warmup: outside
            (1.0, 90, 5.0, []),
            (2.0, 100, 6.0, ["sw_power_cap"]),
            (3.0, 0, 9.0, ["gpu_idle"]),  # teardown: outside
        ]
    ]
    summary = T.window_columns(samples, (0.5, 2.5))
    assert summary["telemetry_samples"] == 2
    assert summary["gpu_util_pct_mean"] == 95
    assert summary["gpu_mem_used_gib_max"] == 6.0
    assert summary["gpu_temp_c_max"] == 32
    assert summary["gpu_throttle_reasons"] == "sw_power_cap"
    empty = T.window_columns(samples, (10, 11))
    assert empty["telemetry_available"] is True and empty["telemetry_samples"] == 0
    assert empty["gpu_util_pct_mean"] is None and empty["gpu_throttle_reasons"] is None


def test_clock_lost_to_a_power_or_thermal_limit_is_measured_idle_clocks_are_not():
    def sample(clock, reasons):
        return {"t_unix": 1.0, "sm_clock_mhz": clock, "sm_clock_max_mhz": 2000,
                "throttle_reasons": reasons}  # fmt: skip

    samples = [
        sample(1500, ["sw_power_cap"]),  # 25% of the clock lost to the power cap
        sample(1000, ["hw_thermal", "sw_thermal"]),  # 50% lost to heat
        sample(300, ["gpu_idle"]),  # idle: a low clock costs nothing
        sample(2000, []),
    ]
    assert T.window_columns(samples, None)["gpu_clock_loss_share"] == pytest.approx(0.75 / 4)
    no_max = [{**s, "sm_clock_max_mhz": None} for s in samples]
    assert T.window_columns(no_max, None)["gpu_clock_loss_share"] is None  # never a guess
    nvml = fake_nvml(2)
    nvml.nvmlDeviceGetMaxClockInfo = lambda h, kind: 1980 if kind == nvml.NVML_CLOCK_SM else 0
    (first, _second) = T.make_sampler(visible=None, count=2, nvml=nvml).sample_once()
    assert first["sm_clock_max_mhz"] == 1980


def test_throttle_names_decode_bits():
    assert T.throttle_names(0) == []
    assert T.throttle_names(0x1 | 0x40) == ["gpu_idle", "hw_thermal"]
    assert T.throttle_names(0x1000) == ["0x1000"]


def test_node_sampler_streams_lines_until_stopped_and_files_merge_in_time_order(tmp_path):
    import threading

    sampler = T.make_sampler(visible=None, count=2, interval_s=1, nvml=fake_nvml(2))
    stop = threading.Event()
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    n = T.stream_to_file(sampler, tmp_path / "a.jsonl", stop, host="a", interval_s=0.01)
    assert n >= 2 and n % 2 == 0
    (tmp_path / "b.jsonl").write_text(
        '{"t_unix": 0.5, "host": "b", "util_pct": 1}\n{"t_unix": 1e12, "host": "b"}\n{"t_un'
    )  # a torn last line from a killed sampler is skipped
    merged = T.read_node_samples(tmp_path)
    assert len(merged) == n + 2
    assert [s["t_unix"] for s in merged] == sorted(s["t_unix"] for s in merged)
    assert {s["host"] for s in merged} == {"a", "b"}


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_node_sampler_without_gpus_lives_until_sigterm_and_writes_its_node_files(tmp_path, device):
    """What each node's sampler of a SLURM point does where there is nothing to sample (a CPU
    point, or no NVML): it still starts and stops with the point and says why, per host."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    if device == "cuda" and isinstance(T.make_sampler(visible=None, count=1), T.NvmlSampler):
        pytest.skip("NVML works here: the cuda case would sample")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.telemetry", "--out-dir", str(tmp_path), "--count", "1",
         "--device", device],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    host = socket.gethostname()
    node = tmp_path / f"{host}.node.json"
    try:
        deadline = time.monotonic() + 60
        while not node.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.is_file(), "the sampler wrote no node file"
        time.sleep(0.3)
        assert proc.poll() is None, "a null sampler must live as long as the point"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "telemetry unavailable on" in err
    status = T.read_node_status(tmp_path)[host]
    assert status["available"] is False and status["samples"] == 0
    assert status["stopped_unix"] >= status["started_unix"] + 0.3
    if device == "cpu":
        assert status["unavailable_reason"] == "cpu point: no GPU to sample"
    assert (tmp_path / f"{host}.jsonl").read_text() == ""
    assert T.read_node_samples(tmp_path) == []
