"""The cost side through real launches: the largest-batch search hitting real out-of-memory,
and the energy columns of a real point read from NVML's energy counter.

No GPU here, so out-of-memory is made real on CPU: DISTRINEWS_RANK_MEMORY_LIMIT_GIB caps each
rank's address space (RLIMIT_AS), and a trial whose activations do not fit fails in the real
allocator. NVML is the telemetry tests' fake module with an energy counter that rises at a
known 250 W on the wall clock, driven by the real sampler beside the real point.
"""

from __future__ import annotations

import json
import time

import pytest

from distrinews import layout
from harness import max_batch, spec, store, telemetry
from harness import sweep as sw
from harness.report import load_report
from tests.unit.test_telemetry import fake_nvml

WATTS = 250.0
SWEEP = """
name = "cost"
timeout_s = 180
[run]
device = "cpu"
model = "tiny"
data = "synthetic:1024"
max_length = 64
precision = "fp32"
warmup_steps = 1
measured_steps = 2
[axes]
per_device_batch = [256]
[max_batch]
search = true
max_trials = 2
trial_steps = 1
"""


def sampler_for(_spec, _env):
    nvml = fake_nvml(1)
    nvml.nvmlDeviceGetTotalEnergyConsumption = lambda h: round(WATTS * time.time() * 1000)
    return telemetry.make_sampler(visible="0", count=1, interval_s=0.01, nvml=nvml)


@pytest.mark.scenario
@pytest.mark.slow(seconds=40)
def test_max_batch_search_hits_real_oom_and_the_point_gets_its_energy(tmp_path, monkeypatch):
    # Each rank may map 0.45 GiB beyond its start-up size: about 360 samples of the tiny
    # model at 64 tokens (0.25 GiB fixed + 0.6 MiB per sample, measured): 256 fits, 512 not.
    monkeypatch.setenv("DISTRINEWS_RANK_MEMORY_LIMIT_GIB", "0.45")
    # One malloc arena per rank: glibc reserves 64 MiB of address space for each extra arena,
    # and how many a rank has made before the limit is taken depends on thread timing. Under
    # load they once moved the cap enough for 512 to fit (twice in about five loaded suites).
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    path = tmp_path / "cost.toml"
    path.write_text(SWEEP)
    options = sw.SweepOptions(results=tmp_path / "r", progress=False)
    messages: list[str] = []
    result = sw.run_sweep(
        spec.load_sweep(path), options, echo=messages.append, sampler_for=sampler_for
    )
    sweep_dir = result.sweep_dir

    (search,) = max_batch.read_results(sweep_dir)
    trials = store.read_ledger(sweep_dir / layout.MAX_BATCH_DIR)
    statuses = {int(t["per_device_batch"]): t["status"] for t in trials}
    assert search["trials"] == len(trials) == 2 and search["stopped"] == "max_trials"
    assert statuses[256] == "ok" and statuses[512] == "oom"
    # Monotone: everything that ran is below everything that ran out of memory.
    assert max(b for b, s in statuses.items() if s == "ok") == search["largest_batch_ok"]
    assert min(b for b, s in statuses.items() if s == "oom") == search["smallest_batch_oom"]
    assert search["largest_batch_ok"] < search["smallest_batch_oom"] <= 512
    assert search["search_s"] > 0 and search["trial_log"] == "256:ok 512:oom"
    oom = next(t for t in trials if t["status"] == "oom")
    error = json.loads(
        (sweep_dir / layout.MAX_BATCH_DIR / oom["point_dir"] / "error.json").read_text()
    )
    assert error["failure"] == "oom" and "can't allocate memory" in error["message"]

    (row,) = store.read_ledger(sweep_dir)
    assert row["status"] == "ok" and row["energy_method"] == "counter"
    record = json.loads((sweep_dir / row["point_dir"] / "record.json").read_text())
    win = record["measured_window"]
    window_s = win["end_unix"] - win["start_unix"]
    n = record["metrics"]["samples_per_s"] * record["metrics"]["measured_time_s"]
    # The counter is integer mJ and interpolated between samples: exact to well under 1%.
    assert row["energy_j"] == pytest.approx(WATTS * window_s, rel=0.01, abs=0.01)
    assert row["power_w_mean_per_gpu"] == pytest.approx(WATTS, rel=0.01)
    assert row["energy_j_per_sample"] == pytest.approx(WATTS * window_s / n, rel=0.01)
    assert row["samples_per_kwh"] == pytest.approx(3.6e6 / row["energy_j_per_sample"], rel=1e-9)

    report = load_report(sweep_dir)  # the report reads the searches and trials from disk
    section = next(s for s in report.sections if s.id == "max-batch")
    assert section.tables[0].rows[0][1:3] == ("256", "512")
    assert "energy" in [s.id for s in report.sections]

    # Searching again reuses every trial's result instead of launching it.
    again = sw.SweepOptions(results=tmp_path / "r", progress=False, retry_failed=True)
    sw.run_sweep(spec.load_sweep(path), again, echo=messages.append, sampler_for=sampler_for)
    assert len(store.read_ledger(sweep_dir / layout.MAX_BATCH_DIR)) == 2
    rows = store.read_jsonl(sweep_dir / layout.MAX_BATCH_LEDGER)
    assert len(rows) == 2 and rows[1]["trial_log"] == rows[0]["trial_log"]
