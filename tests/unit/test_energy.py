"""Energy per sample against a fake NVML whose energy counter and power are known exactly.

The real NvmlSampler reads the fake module (the telemetry tests' pattern) on a controlled
clock, so the joules of a window are known in closed form and the math is checked exactly.
"""

from __future__ import annotations

import pytest

from harness import energy as E
from harness import telemetry as T
from tests.unit.test_telemetry import FakeNVMLError, fake_nvml


class Clock:
    """A clock the test moves by hand (the sampler stamps each sample with it)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def nvml_with_energy(clock: Clock, watts: dict[int, float], *, counter: set[int]):
    """The telemetry tests' fake NVML plus an energy counter: GPU h draws watts[h] steadily.

    Only GPUs in ``counter`` have the counter (mJ since t = 0); the others raise NVMLError
    like a board without one. Power readings follow ``watts`` too (milliwatts).
    """
    nvml = fake_nvml(len(watts))

    def total_energy(h):
        if h not in counter:
            raise FakeNVMLError("Not Supported")
        return round(watts[h] * clock.t * 1000)

    nvml.nvmlDeviceGetTotalEnergyConsumption = total_energy
    nvml.nvmlDeviceGetPowerUsage = lambda h: int(watts[h] * 1000)
    return nvml


def sample_run(nvml, clock: Clock, *, t0: float, t1: float, step: float) -> list[dict]:
    sampler = T.NvmlSampler(nvml, range(nvml.nvmlDeviceGetCount()), clock=clock)
    samples = []
    clock.t = t0
    while clock.t <= t1 + 1e-9:
        samples.extend(sampler.sample_once())
        clock.t += step
    return samples


def test_counter_gives_joules_per_sample_kwh_and_power_at_the_window_edges():
    clock = Clock()
    nvml = nvml_with_energy(clock, {0: 300.0, 1: 400.0}, counter={0, 1})
    samples = sample_run(nvml, clock, t0=1000.0, t1=1010.0, step=0.2)
    assert all(s["energy_mj"] is not None for s in samples)
    # Window edges fall between samples: the counter is interpolated there.
    row = E.summarise_energy(samples, (1002.05, 1004.55), n_samples=1000)
    assert row["energy_method"] == "counter" and row["energy_unavailable_reason"] is None
    assert row["energy_j"] == pytest.approx(700.0 * 2.5, rel=1e-6)
    assert row["energy_j_per_sample"] == pytest.approx(1.75, rel=1e-6)
    assert row["samples_per_kwh"] == pytest.approx(1000 * 3.6e6 / 1750.0, rel=1e-6)
    assert row["power_w_mean_per_gpu"] == pytest.approx(350.0, rel=1e-6)


def test_a_board_without_counter_integrates_its_power_and_says_so():
    clock = Clock()
    nvml = nvml_with_energy(clock, {0: 300.0, 1: 400.0}, counter={0})
    samples = sample_run(nvml, clock, t0=1000.0, t1=1010.0, step=0.2)
    row = E.summarise_energy(samples, (1001.1, 1003.1), n_samples=500)
    assert row["energy_method"] == "counter+power_integral"
    assert row["energy_j"] == pytest.approx(700.0 * 2.0, rel=1e-6)
    nvml = nvml_with_energy(clock, {0: 300.0}, counter=set())
    samples = sample_run(nvml, clock, t0=1000.0, t1=1010.0, step=0.2)
    row = E.summarise_energy(samples, (1001.1, 1003.1), n_samples=500)
    assert row["energy_method"] == "power_integral"
    assert row["energy_j_per_sample"] == pytest.approx(600.0 / 500, rel=1e-6)


def test_power_integral_is_the_trapezoid_with_interpolated_edges():
    # Power ramps 100 W -> 200 W over 10 s: a linear ramp is integrated exactly.
    points = [(float(t), 100.0 + 10.0 * t) for t in range(11)]
    assert E.power_energy_j(points, 2.5, 7.5) == pytest.approx(5 * 150.0)
    assert E.power_energy_j(points, -1.0, 5.0) is None  # window starts before the samples


def test_a_counter_that_went_backwards_falls_back_to_power():
    samples = [
        {"t_unix": t, "gpu_uuid": "GPU-a", "energy_mj": mj, "power_w": 250.0}
        for t, mj in ((0.0, 5e6), (1.0, 5.25e6), (2.0, 10.0), (3.0, 250_010.0))
    ]
    row = E.summarise_energy(samples, (0.5, 2.5), n_samples=10)
    assert row["energy_method"] == "power_integral"
    assert row["energy_j"] == pytest.approx(500.0)


def test_no_energy_is_null_with_the_reason():
    nulls = dict.fromkeys(E.NUMERIC_KEYS)
    row = E.summarise_energy(
        [],
        (0.0, 1.0),
        n_samples=10,
        available=False,
        unavailable_reason="nvidia-ml-py is not installed",
    )
    assert {k: row[k] for k in E.NUMERIC_KEYS} == nulls and row["energy_method"] is None
    assert row["energy_unavailable_reason"] == "nvidia-ml-py is not installed"
    failed = E.summarise_energy([{"t_unix": 0.0, "energy_mj": 1.0}], None, n_samples=10)
    assert "did not finish ok" in failed["energy_unavailable_reason"]
    late = [{"t_unix": 5.0, "gpu_uuid": "GPU-a", "energy_mj": 1.0, "power_w": 1.0}]
    uncovered = E.summarise_energy(late, (0.0, 1.0), n_samples=10)
    assert "GPU-a" in uncovered["energy_unavailable_reason"]
    assert uncovered["energy_j_per_sample"] is None


def test_an_nvml_binding_without_the_energy_call_reads_none():
    nvml = fake_nvml(1)  # the telemetry tests' module has no nvmlDeviceGetTotalEnergyConsumption
    (sample,) = T.NvmlSampler(nvml, [0]).sample_once()
    assert sample["energy_mj"] is None and sample["power_w"] == pytest.approx(300.0)


def test_window_samples_come_from_the_record_metrics():
    record = {"metrics": {"samples_per_s": 250.0, "measured_time_s": 4.0}}
    assert E.window_samples(record) == pytest.approx(1000.0)
    assert E.window_samples({"metrics": {"samples_per_s": None}}) is None
    assert E.window_samples(None) is None
