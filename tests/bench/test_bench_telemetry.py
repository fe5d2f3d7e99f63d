"""Telemetry overhead: the cost of one NVML sample round, against a fake pynvml module.

The sampler runs in the sweep process, not in the ranks, so its cost is CPU time on the host
while the GPUs train. This measures the harness's own share (Python calls, dict building) of
one round over 8 GPUs; real NVML calls add the driver's cost on top (roughly tens of
microseconds per query on current drivers).
"""

from __future__ import annotations

from harness import telemetry as T
from tests.unit.test_telemetry import fake_nvml


def test_bench_sample_round_8_gpus(benchmark, bench_report):
    sampler = T.make_sampler(visible=None, count=8, interval_s=1, nvml=fake_nvml(8))
    assert isinstance(sampler, T.NvmlSampler)
    samples = benchmark(sampler.sample_once)
    assert len(samples) == 8
    if benchmark.stats:  # None when benchmarks are disabled (the default test run)
        per_sample_us = benchmark.stats.stats.median / 8 * 1e6
        bench_report(benchmark, "telemetry_us_per_gpu_sample", per_sample_us, "us")
        # At the default 0.2 s interval, the share of one host core the sampler takes.
        share_ppm = benchmark.stats.stats.median / 0.2 * 1e6
        bench_report(benchmark, "telemetry_core_share_ppm_8gpu", share_ppm, "ppm of one core")


def test_bench_summarise_one_hour(benchmark, bench_report):
    """Summarising an hour of 8-GPU samples at 5 Hz (144,000 samples)."""
    one = T.make_sampler(visible=None, count=8, interval_s=1, nvml=fake_nvml(8)).sample_once()
    samples = [dict(s, t_unix=float(i)) for i in range(18_000) for s in one]
    summary = benchmark(T.window_columns, samples, (100.0, 3000.0))
    assert summary["telemetry_samples"] == 2901 * 8
    if benchmark.stats:
        ms = benchmark.stats.stats.median * 1e3
        bench_report(benchmark, "summarise_ms_per_hour_8gpu", ms, "ms")
