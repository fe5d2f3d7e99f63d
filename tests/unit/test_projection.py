"""harness.projection: NCCL's cost model, the fabric table, the step model, the fits, the command.

Three kinds of evidence, kept apart:

- checks of the transcription against NCCL's own source and its maintainers' published
  figures (the cost model alone);
- fits of sweeps *planted* from the model itself (tests/helpers_projection.py): they check the
  fitting and the no-peeking rule, and are true by construction where they recover a plant;
- measurements that do not come from the model: a simulation of order statistics (the jitter
  estimator), the published scaling tables (``validate``), and the real-process runs in
  tests/distributed/test_projection_real.py.

Where a check could pass for a wrong reason, a planted wrong answer beside it must fail it.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from distrinews.errors import UserError
from harness import projection
from harness.cli import cli
from harness.projection import fabrics, model_error, nccl, validate
from harness.projection import model as mdl
from harness.projection.inputs import HOST_DEFAULT, pure_inputs
from harness.projection.project import bandwidth_draws, location_draws, project
from tests.helpers_projection import MIB, Plant, planted_steps, write_planted_sweep

H100 = fabrics.resolve_fabric("dgx-h100")
A100 = fabrics.resolve_fabric("dgx-a100")
GIB = 1 << 30


def busbw(fab, n: int, size: float = 4 * GIB) -> tuple[float, str]:
    plan = nccl.allreduce_plan(fab.system(ranks=n), n, np.array([size]))
    return float(plan.busbw_gbps(np.array([size]), n)[0]), nccl.plan_label(plan)


# -- NCCL's cost model -----------------------------------------------------------------------


def test_the_model_reproduces_the_bus_bandwidths_nccls_maintainers_quote():
    # "NCCL can get an effective NVLink bandwidth of 370GB/s ... with NCCL_ALGO=RING" (8x H100,
    # nccl-tests#212); "8x200Gbit/s IB cards and we measure 192GB/s AllReduce BusBW" (DGX A100,
    # nccl#812). NCCL's model, before any efficiency: 12 channels x 30 and 8 x 24 GB/s.
    ring, label = busbw(replace(H100, nvls=False), 8)
    assert label == "ring/Simple" and 350 <= ring <= 371
    multi, label = busbw(A100, 32)
    assert label == "ring/Simple" and 180 <= multi <= 192
    # The planted wrong answer the issue found in the old tool: an intra-node phase *added* to
    # an inter-node phase instead of one ring bounded by its slowest link, which implied 104-142
    # GB/s on DGX A100. It must fail the same check.
    size, n, g = 4 * GIB, 32, 8
    intra = 2 * (g - 1) / g * size / 240e9
    inter = 2 * (n // g - 1) / (n // g) * (size / g) / 22.5e9
    added = size / (intra + inter) / 1e9 * 2 * (n - 1) / n
    assert not 180 <= added <= 192


def test_ring_latency_and_bandwidth_follow_tuning_cc():
    # One node of 8 H100 without NVLS, ring/Simple: base 8.4 µs + 2(N-1) x 3.4 µs (NVLink ring
    # Simple), bandwidth 12 channels x 30 GB/s x N / 2(N-1) (tuning.cc lines 376-412).
    t = nccl.tune(replace(H100, nvls=False).system(ranks=8), 8)
    assert t.latency[nccl.RING][nccl.SIMPLE] == pytest.approx(8.4 + 14 * 3.4)
    assert t.bandwidth[nccl.RING][nccl.SIMPLE] == pytest.approx(360 * 8 / 14)
    # LL: min(llMaxBw 141 (Hopper, one node), busBw / 2) and 0.6 µs per step.
    assert t.bandwidth[nccl.RING][nccl.LL] == pytest.approx(141 * 8 / 14)
    assert t.latency[nccl.RING][nccl.LL] == pytest.approx(6.6 + 14 * 0.6)


def test_nccl_picks_ll_for_small_messages_simple_for_large_and_tree_across_many_nodes():
    sizes = np.array([4e3, 1e9])
    single = nccl.allreduce_plan(replace(H100, nvls=False).system(ranks=8), 8, sizes)
    assert [nccl.PROTOS[p] for p in single.proto] == ["LL", "Simple"]
    many = nccl.allreduce_plan(A100.system(), 512, np.array([64e3]))
    assert nccl.ALGOS[int(many.algo[0])] == "tree"  # log-depth latency wins on 64 nodes
    # NVLS only where the fabric has it (Hopper + NVSwitch); LL128 never over PCIe.
    assert busbw(H100, 8)[1] == "nvls/Simple"
    assert busbw(A100, 8)[1] == "ring/Simple"
    pcie = fabrics.resolve_fabric("pcie8-100gbe")
    t = nccl.tune(pcie.system(ranks=8), 8)
    assert t.bandwidth[nccl.RING][nccl.LL128] == 0.0


def test_the_bottleneck_across_nodes_is_the_nodes_nics():
    # One 25 GbE NIC for 8 GPUs: the ring leaves each node through it, so the bus bandwidth is
    # NCCL's 3 GB/s for that NIC (25000 / 8000 = 3.125 -> speed 3.0), not 8x more.
    slow = fabrics.resolve_fabric("pcie8-25gbe")
    bw, _ = busbw(slow, 16)
    assert 2.5 < bw <= 3.0
    # Four NICs carry four times one NIC's ring bandwidth.
    one = fabrics.with_options(A100, nics_per_node=1)
    four = fabrics.with_options(A100, nics_per_node=4)
    assert busbw(four, 32)[0] == pytest.approx(4 * busbw(one, 32)[0], rel=0.05)


def test_a_mesh_ring_uses_the_links_between_the_gpus_it_spans():
    # DGX-1: GPUs 0-1 share one 20 GB/s NVLink (nccl#671's topology), eight GPUs six links each.
    dgx1 = fabrics.resolve_fabric("dgx-1")
    assert busbw(dgx1, 2)[0] == pytest.approx(20, rel=0.02)
    assert busbw(dgx1, 8)[0] == pytest.approx(120, rel=0.02)


# -- the fabric table and its flags ------------------------------------------------------------


def test_every_preset_resolves_and_says_where_its_values_come_from():
    for name in (*fabrics.PRESETS, *fabrics.ALIASES):
        fab = fabrics.resolve_fabric(name)
        assert fab.sources["gpu"] and fab.intra.source
        assert all(line for line in fab.describe())
    for kind, r in fabrics.EFFICIENCY.items():
        assert r.lo <= r.nominal <= r.hi and r.source, kind
    with pytest.raises(UserError, match=r"unknown fabric 'infiniband-xdr'; known: dgx-1"):
        fabrics.resolve_fabric("infiniband-xdr")
    with pytest.raises(UserError, match="empty"):
        fabrics.resolve_fabric("")


def test_new_fabric_flags_change_one_property_each():
    base = fabrics.resolve_fabric("dgx-h100")
    tcp = fabrics.with_options(base, transport="tcp")
    assert tcp.efficiency_for("inter") == fabrics.EFFICIENCY["tcp"]
    v100 = fabrics.with_options(base, nvlink="V100")
    assert v100.system().intra_total_bw == pytest.approx(6 * 20.0)
    assert fabrics.with_options(base, pcie_gen=3).system().intra_total_bw == pytest.approx(12.0)
    assert fabrics.with_options(base, nic_gbps=100).net.gbit == 100
    with pytest.raises(UserError, match="NVLS needs NVSwitch"):
        fabrics.with_options(fabrics.resolve_fabric("dgx-1"), nvls=True)


# -- order statistics and the straggler (issue 27, item 3) -------------------------------------


def test_gap_statistics_match_their_closed_forms_at_two_ranks():
    # N = 2: max - lower median = |Z1 - Z2| ~ |N(0, 2)|: mean 2/sqrt(pi), median sqrt(2) x 0.6745.
    assert mdl.gap_mean(2) == pytest.approx(2 / math.sqrt(math.pi), rel=1e-4)
    assert mdl.gap_median(2) == pytest.approx(math.sqrt(2) * 0.67449, rel=0.01)
    assert mdl.gap_mean(1024) > mdl.gap_mean(64) > mdl.gap_mean(8)


def _simulated_gaps(n: int, sigma: float, steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    times = 1.0 + sigma * rng.standard_normal((steps, n))  # compute step 1 s, CV sigma
    times.sort(axis=1)
    return times[:, -1] - times[:, (n - 1) // 2]


@pytest.mark.parametrize("feed", [2, 4])
def test_jitter_from_simulated_step_times_recovers_the_known_allowance(feed):
    """Draw per-rank step times with a known σ, measure the worker's statistic (per step,
    slowest - typical rank), estimate σ from it and project the allowance to N = 256: the known
    allowance σ · gap_mean(256) must lie in the estimate's interval. The mean-over-median
    estimator the issue found (median gap / mean gap) must miss it: the planted twin."""
    sigma, target = 0.02, 256
    truth = sigma * mdl.gap_mean(target)
    gaps = _simulated_gaps(feed, sigma, steps=4000, seed=feed)
    draws = location_draws(gaps, 400, np.random.default_rng(0))
    estimate = mdl.jitter_from_wait(draws, 1.0, feed) * mdl.gap_mean(target)
    lo, hi = np.percentile(estimate[1:], [2.5, 97.5])
    assert lo <= truth <= hi, (lo, truth, hi)
    mixed = draws / mdl.gap_mean(feed) * mdl.gap_mean(target)  # the old, inconsistent statistic
    lo, hi = np.percentile(mixed[1:], [2.5, 97.5])
    assert not lo <= truth <= hi
    assert hi < truth  # biased low, as the issue said (about 19% at N = 2)


def test_a_sweeps_straggler_gaps_feed_the_allowance(tmp_path):
    inp = pure_inputs(step_time_ms="100", grad_mb=1)
    gaps = tuple(_simulated_gaps(2, 0.02, 400, seed=1) * 0.1)  # seconds, compute 0.1 s
    from harness.projection.inputs import Measured

    measured = Measured(gpus=2, nodes=1, busbw_gbps=(300.0,), straggler_gaps_s=gaps,
                        gaps_are_steps=True)  # fmt: skip
    inp = replace(inp, measured=(measured,), device="cuda")
    result = project([inp], [256], A100, 8, n_draws=200, model_error_sigma=0.0)
    row = next(r for r in result.rows if r["gpus"] == 256)
    expected = 100 * float(np.median(gaps)) / (0.1 * mdl.gap_median(2)) * mdl.gap_mean(256)
    assert row["straggler_ms"] == pytest.approx(expected, rel=1e-6)


# -- readiness and overlap ---------------------------------------------------------------------


def test_overlap_acts_with_two_buckets_and_readiness_moves_the_exposure():
    def eff(**kw):
        args = {"step_time_ms": "1000", "grad_mb": 400, "bucket_mb": "200,200", **kw}
        result = project([pure_inputs(**args)], [16], fabrics.resolve_fabric("pcie8-25gbe"), 8,
                         n_draws=10)  # fmt: skip
        return result.rows[0]["efficiency"]

    # The first of two buckets is ready half-way through backward (compute in proportion to
    # parameters), so a longer hide window hides more of it.
    assert eff(overlap="0.9") > eff(overlap="0.1") + 0.01
    # A VGG-like layout: the big bucket's layers (fully connected) cost little compute, so it
    # is ready almost first; stating that hides it sooner than the default assumption.
    assert eff(ready_share="0.05,1", overlap="0.3") > eff(overlap="0.3") + 0.01


def test_the_last_bucket_can_never_hide_and_buckets_queue_on_one_stream():
    times = np.array([[0.008, 0.008, 0.008]])
    # Ready at 5, 10 and 10 ms of a 10 ms window, 8 ms each: 13, 21, 29 -> 19 ms exposed.
    assert mdl.exposed_comm_s(times, np.array([0.010]), np.array([0.5, 1, 1]))[0] == (
        pytest.approx(0.019)
    )
    huge = mdl.exposed_comm_s(times, np.array([10.0]), mdl.ready_embedding_last([1, 1, 1]))
    assert huge[0] == pytest.approx(0.016)  # the two buckets ready at the end stay exposed


# -- SM contention -----------------------------------------------------------------------------


def test_nccl_launches_the_ctas_its_source_says():
    big = np.array([256 * MIB])
    # Across DGX A100 nodes: 8 graph channels x 24 GB/s, doubled by ncclTopoPostset: "If you
    # are on DGX with 8 NICs and a top speed of 190 GB/s, then it would use 16 SMs" (nccl#689).
    assert nccl.allreduce_plan(A100.system(ranks=32), 32, big).channels[0] == 16
    # One DGX A100: 12 graph channels (6 x 40 GB/s split in two by ncclTopoDupChannels), doubled.
    one = nccl.allreduce_plan(A100.system(ranks=8), 8, big)
    assert nccl.ALGOS[one.algo[0]] == "ring" and one.channels[0] == 24
    # NVLS on one H100 node: nvlsChannels = 16 (NVLS_NCHANNELS_SM90).
    nvls = nccl.allreduce_plan(H100.system(ranks=8), 8, big)
    assert nccl.ALGOS[nvls.algo[0]] == "nvls" and nvls.channels[0] == 16
    # A small ring/Simple call drops channels while nBytes < nc x 512 threads x 64 bytes.
    t = nccl.tune(A100.system(ranks=8), 8)
    ctas = nccl.launched_ctas(t, np.array([nccl.RING]), np.array([nccl.SIMPLE]),
                              np.array([5 * 512 * 64 + 1.0]))  # fmt: skip
    assert ctas[0] == 5


def test_sm_contention_stretches_the_overlapped_compute_by_the_sm_share():
    # One bucket, ready at the start of a long backward: while its all-reduce runs (T), backward
    # computes at (1 - s), so the compute overlapped with it, T (1 - s), takes T: stretched by
    # SMs / (SMs - s SMs). Backward ends T s later; nothing is exposed.
    link = mdl.NcclLink(A100, 8, {k: np.array([1.0]) for k in ("intra", "inter", "nvls")})
    wire = np.array([100.0 * MIB])
    t = float(mdl.allreduce_times(link, 8, wire, 1)[0][0, 0])
    ctas = int(mdl.allreduce_ctas(link, 8, wire)[0])
    assert ctas == 24
    s = 0.75 * ctas / 108
    compute = 10 * t / (2 / 3)  # backward (2/3 of it) is 10x the all-reduce
    hand = compute + t * s  # no host, no jitter: the step is compute + contention

    def step(sm_count: int) -> mdl.StepPrediction:
        return mdl.predict_steps(
            mdl.StepModel(
                compute_s=np.array([compute]), bucket_bytes=(100.0 * MIB,), ready=np.array([0.0]),
                hide_share=np.array([2 / 3]), jitter=np.array([0.0]), link=link,
                sm_count=sm_count, sm_contention=np.array([0.75]),
            ),
            [8],
        )  # fmt: skip

    pred = step(108)
    assert pred.contention_s[0, 0] == pytest.approx(t * s, rel=1e-9)
    assert pred.exposed_comm_s[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert pred.step_s[0, 0] == pytest.approx(hand, rel=1e-9)
    # The planted twin: the same model without the term misses the hand-computed step.
    twin = step(0)
    assert twin.contention_s[0, 0] == 0.0
    assert abs(twin.step_s[0, 0] - hand) > 0.5 * t * s


def test_sm_contention_is_zero_on_cpus_and_without_overlap_and_grows_with_ctas():
    times = np.array([[0.004, 0.004, 0.004]])
    ready = np.array([0.2, 0.6, 1.0])
    # No SMs (share 0): the event walk is the plain schedule, backward ends on time.
    rng = np.random.default_rng(7)
    for _ in range(50):
        k = int(rng.integers(1, 8))
        tt, w, r = rng.uniform(0, 2, (3, k)), rng.uniform(0, 5, 3), rng.uniform(0, 1, k)
        back, last = mdl.contended_backward(tt, w, r, np.zeros((3, k)))
        assert back == pytest.approx(w)
        assert np.maximum(last - back, 0) == pytest.approx(mdl.exposed_comm_s(tt, w, r))
    # No overlap (a window of 0): nothing computes beside the all-reduce, nothing stretches.
    exposed, contention = mdl.exposure(times, np.array([0.0]), ready, np.full((1, 3), 0.2))
    assert contention[0] == 0.0 and exposed[0] == pytest.approx(0.012)
    # More CTAs, more contention (a share of 0.1, 0.2, 0.4 of the SMs).
    grown = [mdl.exposure(times, np.array([0.02]), ready, np.full((1, 3), s))[1][0]
             for s in (0.1, 0.2, 0.4)]  # fmt: skip
    assert 0 < grown[0] < grown[1] < grown[2]
    assert mdl.sm_share(np.array([24, 200]), 108) == pytest.approx([24 / 108, 0.9])
    assert mdl.sm_share(np.array([24]), 0) == pytest.approx([0.0])
    # A measured gloo ring (a CPU sweep) launches no CTAs.
    ring = mdl.MeasuredLink(0.0, 1.0, 8)
    assert mdl.allreduce_ctas(ring, 8, np.array([25.0 * MIB])).tolist() == [0]


def test_a_cpu_projection_has_no_sm_contention_and_a_gpu_one_names_it(tmp_path):
    cpu = run_sweep(write_planted_sweep(tmp_path / "cpu", Plant(hide_share=0.6)), gpus="8")
    assert all(r["sm_contention_ms"] == 0.0 and r["nccl_ctas"] == 0 for r in cpu.rows)
    assert all(f["sm_count"] == 0 for f in cpu.curves[0]["fits"])
    args = {"step_time_ms": "100", "grad_mb": 255, "bucket_mb": "25", "overlap": "0.9"}
    gpu = project([pure_inputs(**args)], [8, 64], A100, 8, n_draws=50)
    assert all(r["sm_contention_ms"] > 0 and r["nccl_ctas"] > 0 for r in gpu.rows)
    body = json.loads(projection.render(gpu, "json"))
    assert body["inputs"]["sm_count"]["value"] == 108
    assert body["inputs"]["sm_contention"]["lo"] == 0.5
    assert body["predictions"][0]["sm_contention_ms"] > 0
    text = projection.render(gpu, "text")
    assert "SM+HBM contention ms" in text and "of NCCL's CTAs / 108 SMs" in text


def test_the_feed_takes_sm_contention_out_of_the_measured_backward(tmp_path):
    # A GPU's measured backward holds the contention; the hide window is the compute alone.
    plant = Plant(device="cuda", readiness=True, ready=(0.1, 0.5, 0.9, 1.0), efficiency=0.05)
    truth = planted_steps(plant, [4])
    assert truth["contention_s"][0] > 0.01 * plant.hide_share * plant.compute_s  # not a sliver
    result = run_sweep(write_planted_sweep(tmp_path / "c", plant))
    fit = next(f for f in result.curves[0]["fits"] if f["fed_by_gpus"] == 4)
    assert fit["hide_share"] == pytest.approx(plant.hide_share, rel=1e-6)
    # The planted twin: the measured backward taken as the window is a different, wrong one.
    measured = plant.hide_share + truth["contention_s"][0] / plant.compute_s
    assert abs(measured - fit["hide_share"]) > 0.01 * plant.hide_share


def test_ddp_buckets_match_torchs_own_bucketing_in_ddps_order():
    """Against the function DDP itself buckets with, fed as DDP's rebuild feeds it; the order
    is compared as it is (overlap depends on it), and the reversed list must not pass."""
    torch = pytest.importorskip("torch")
    import torch.distributed as dist

    from distrinews.model import NewsClassifier

    params = list(NewsClassifier.from_config("tiny", seed=0).parameters())
    sizes = [p.numel() * 4 for p in params]
    cap = int(0.01 * MIB)
    ours = mdl.ddp_buckets(sizes, cap)
    grads = [torch.empty_like(p) for p in reversed(params)]
    indices, _ = dist._compute_bucket_assignment_by_size(
        grads, [min(mdl.FIRST_BUCKET_BYTES, cap), cap]
    )
    theirs = [sum(grads[i].numel() * 4 for i in bucket) for bucket in indices]
    assert len(ours) > 3
    assert ours == theirs
    assert list(reversed(ours)) != theirs  # the twin: order is checked
    assert ours[-1] == sizes[0] + sum(sizes[1:2]) or ours[-1] >= sizes[0]


# -- pure inputs: intervals, host, loader, strong scaling --------------------------------------


def test_pure_input_mode_always_gives_an_interval_and_names_what_drives_it():
    one = pure_inputs(step_time_ms="120", grad_mb=255)
    result = project([one], [8, 256], H100, 8, n_draws=400)
    for row in result.rows:
        lo, hi = row["efficiency_ci"]
        assert lo < row["efficiency"] <= hi + 1e-12
    wide_net = fabrics.with_efficiency(fabrics.resolve_fabric("pcie8-25gbe"), "tcp",
                                       fabrics.Range(0.5, 0.1, 0.9, "stated"))  # fmt: skip
    slow = pure_inputs(step_time_ms="120", grad_mb=255, jitter="0.001")
    row = project([slow], [64], wide_net, 8, n_draws=400).rows[0]
    assert row["interval_drivers"][0][0] == "network efficiency"
    jittery = pure_inputs(step_time_ms="120", grad_mb=1, jitter="0:0.1", host_overhead_ms="0")
    row = project([jittery], [1024], H100, 8, n_draws=400).rows[0]
    assert row["interval_drivers"][0][0] == "jitter"


def test_a_loader_ceiling_represents_a_single_node_loss_that_is_not_communication():
    # 32 samples per GPU step of 100 ms; a node's loader delivers 1,600 samples/s: 8 GPUs need
    # 2,560, so a step takes at least 8 x 32 / 1600 = 160 ms: efficiency 62.5%.
    inp = pure_inputs(step_time_ms="100", grad_mb=1, per_device_batch=32,
                      loader_samples_per_s="1600", jitter="0", host_overhead_ms="0")  # fmt: skip
    row = project([inp], [8], H100, 8, n_draws=20, model_error_sigma=0.0).rows[0]
    assert row["loader_bound"]
    assert row["efficiency"] == pytest.approx(100 / 160, rel=1e-3)


def test_strong_scaling_divides_the_per_sample_work_and_keeps_the_fixed_part():
    inp = pure_inputs(step_time_ms="1000", grad_mb=0.001, scaling="strong", fixed_step_ms="10",
                      jitter="0", host_overhead_ms="0")  # fmt: skip
    rows = {r["gpus"]: r for r in project([inp], [8, 64], H100, 8, n_draws=20).rows}
    for n in (8, 64):
        expected = 1.0 / (n * (0.010 + 0.990 / n))
        assert rows[n]["efficiency"] == pytest.approx(expected, rel=2e-3)
    assert rows[64]["efficiency"] < rows[8]["efficiency"]


# -- from a sweep: fits of planted sweeps (true by construction) -------------------------------


def run_sweep(sweep, **kw):
    """The projection of a planted sweep with the model's own error off: the planted truth is
    the model's, so its fit must recover it exactly (the point estimate would otherwise take the
    error's mean, exp(σ²/2), on the overhead)."""
    args = {"gpus": "8", "gpus_per_node": None, "fabric": "dgx-a100", "busbw_gbps": None,
            "pure": None, "model_error_sigma": 0.0, **kw}  # fmt: skip
    return projection.run_project(sweep, **args)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_projection_from_a_planted_sweep_recovers_the_measured_efficiencies(tmp_path, device):
    plant = Plant(device=device)
    result = run_sweep(write_planted_sweep(tmp_path / "p", plant), gpus="8,16")
    rows = {r["gpus"]: r for r in result.rows}
    truth = planted_steps(plant, [2, 4, 8])
    for n, step in zip((4, 8), truth["step_s"][1:], strict=True):
        assert rows[n]["fed_by_gpus"] < n  # no peeking
        assert rows[n]["measured_efficiency"] == pytest.approx(plant.compute_s / step, rel=1e-6)
        assert abs(rows[n]["error_pp"]) < 1e-3  # (the hide window is bisected to 2^-24)
    info = result.curves[0]
    assert info["bucket_bytes"][-1] == 40 * MIB
    assert "recorded by the worker" in info["sources"]["buckets"]


def test_a_strong_scaling_sweep_is_projected_too(tmp_path):
    plant = Plant(device="cuda", scaling="strong", efficiency=0.01)  # N = 2 above its floor
    result = run_sweep(write_planted_sweep(tmp_path / "strong", plant), gpus="8,16")
    rows = {r["gpus"]: r for r in result.rows}
    truth = planted_steps(plant, [4, 8])
    for n, step in zip((4, 8), truth["step_s"], strict=True):
        assert rows[n]["scaling_mode"] == "strong"
        assert rows[n]["measured_efficiency"] == pytest.approx(plant.compute_s / (n * step))
        assert abs(rows[n]["error_pp"]) < 1e-3
    assert "fitted: compute(N) = 0.00 ms" in result.curves[0]["sources"]["fixed"]
    assert rows[16]["efficiency"] < rows[8]["efficiency"]


def test_measured_readiness_replaces_the_assumption_and_the_hide_window(tmp_path):
    plant = Plant(device="cuda", readiness=True, ready=(0.1, 0.5, 0.9, 1.0), efficiency=0.05)
    result = run_sweep(write_planted_sweep(tmp_path / "r", plant))
    info = result.curves[0]
    assert "measured by the worker" in info["sources"]["ready"]
    assert info["ready_share"] == pytest.approx([0.1, 0.5, 0.9, 1.0])
    fit = next(f for f in info["fits"] if f["fed_by_gpus"] == 4)
    assert fit["hide_share"] == pytest.approx(plant.hide_share)
    assert "backward measured" in fit["hide_source"]
    rows = {r["gpus"]: r for r in result.rows}
    assert abs(rows[8]["error_pp"]) < 1e-6


def test_a_planted_sync_overhead_beyond_the_all_reduce_is_carried(tmp_path):
    plant = Plant(overhead_s=0.02, hide_share=0.0, busbw_gbps=20.0)
    result = run_sweep(write_planted_sweep(tmp_path / "over", plant))
    rows = {r["gpus"]: r for r in result.rows}
    assert abs(rows[4]["error_pp"]) < 1e-6 and abs(rows[8]["error_pp"]) < 1e-6
    fit = next(f for f in result.curves[0]["fits"] if f["fed_by_gpus"] == 2)
    assert fit["host_ms"] == pytest.approx(20.0, rel=1e-3)


def test_a_measured_ring_of_equal_buckets_gets_its_latency_from_the_whole_gradient():
    """Buckets of one size leave no line to fit: the latency comes from what K messages cost
    beyond one message of the same bytes (the worker's two ceilings of a run)."""
    alpha, bw, n = 400e-6, 0.7, 2  # gloo on loopback: about half a millisecond a hop

    def ring(b, ranks=n):
        return 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * b / (bw * 1e9)

    sizes = [131072.0] * 6
    times = [ring(b) for b in sizes]
    whole = sum(sizes)
    assert mdl.fit_latency_bandwidth(sizes, times, n) is None  # one size: no line
    fit = mdl.fit_latency_from_whole(len(sizes), sum(times), whole, ring(whole), n)
    assert fit == pytest.approx((alpha, bw), rel=1e-9)
    # At 8 ranks the fitted ring pays 14 latencies a bucket: what the bandwidth alone, with the
    # latency folded into it, under-states several-fold.
    link = mdl.MeasuredLink(fit[0], fit[1], 8)
    t8, _, _ = mdl.allreduce_times(link, 8, np.array(sizes), 1)
    assert t8.sum() == pytest.approx(sum(ring(b, 8) for b in sizes), rel=1e-9)
    folded = 2 * (n - 1) / n * whole / ring(whole) / 1e9  # GB/s, latency included
    naive, _, _ = mdl.allreduce_times(mdl.MeasuredLink(0.0, folded, 8), 8, np.array(sizes), 1)
    assert t8.sum() > 5 * naive.sum()
    # No latency to see (the buckets took no longer than the whole), one bucket, a missing or
    # non-finite time, or a latency longer than the whole: no fit.
    bytes_only = whole / (bw * 1e9)
    assert mdl.fit_latency_from_whole(6, bytes_only, whole, bytes_only, n) is None
    assert mdl.fit_latency_from_whole(1, sum(times), whole, ring(whole), n) is None
    assert mdl.fit_latency_from_whole(6, sum(times), whole, math.nan, n) is None
    assert mdl.fit_latency_from_whole(6, math.inf, whole, ring(whole), n) is None
    assert mdl.fit_latency_from_whole(6, 100.0, whole, ring(whole), n) is None


def test_measured_bandwidth_draws_stay_positive_at_two_repeats():
    """Two repeats give Student-t(1) draws of the median, which reach below zero; a bandwidth
    cannot, so both link paths (a CPU ring, a GPU link's calibrated efficiency) floor them at a
    tenth of the median and leave every other draw as it was."""
    raw = location_draws([1.0, 3.0], 2000, np.random.default_rng(0))
    floored = bandwidth_draws([1.0, 3.0], 2000, np.random.default_rng(0))
    assert raw.min() < 0 and floored.min() == pytest.approx(0.2)
    keep = raw >= 0.2
    assert floored[0] == 2.0 and np.array_equal(floored[keep], raw[keep])


def test_a_cpu_rings_hops_take_turns_once_the_ranks_outnumber_the_cores():
    """gloo on one host is CPU work at every hop on every rank: 8 ranks on 2 cores take 4 turns
    a hop where 2 ranks took one (measured: a 6-bucket ring's ceiling 5.4 ms at N = 2, 107 ms at
    N = 8 on this 2-core box; the ring alone predicts 34 ms, with the turns 136 ms)."""
    assert mdl.oversubscription(8, 2, 2) == 4.0
    assert mdl.oversubscription(8, 2, 4) == 2.0  # measured at 4 ranks already 2 per core
    assert mdl.oversubscription(2, 16, 2) == 1.0  # cores to spare
    assert mdl.oversubscription(8, 0, 2) == 1.0  # cores unknown
    sizes = np.array([131072.0] * 6)
    plain, _, _ = mdl.allreduce_times(mdl.MeasuredLink(4e-4, 0.7, 8), 8, sizes, 1)
    host, _, _ = mdl.allreduce_times(mdl.MeasuredLink(4e-4, 0.7, 8, 2, 2), 8, sizes, 1)
    assert host.sum() == pytest.approx(4 * plain.sum())
    two, _, _ = mdl.allreduce_times(mdl.MeasuredLink(4e-4, 0.7, 8, 2, 2), 2, sizes, 1)
    ring2 = 6 * (2 * 4e-4 + 131072 / 0.7e9)
    assert two.sum() == pytest.approx(ring2)  # at the measured count, the measurement


def test_a_stated_bus_bandwidth_replaces_the_measured_one_and_the_fits_stay(tmp_path):
    sweep = write_planted_sweep(tmp_path / "b", Plant(device="cuda"))
    result = run_sweep(sweep, gpus="8,16", busbw_gbps="50,20")
    fit = next(f for f in result.curves[0]["fits"] if f["fed_by_gpus"] == 2)
    assert "stated by --busbw-gbps" in fit["link_source"]
    assert fit["hide_source"].startswith("fitted to the exposed")
    assert any("replaces the measured" in n for n in result.notes)


def test_a_prediction_never_sees_the_point_it_predicts(tmp_path):
    """Changing what N = 8 measured changes predictions past 8, never the one at 8."""
    a = write_planted_sweep(tmp_path / "a", Plant(device="cuda"))
    b = write_planted_sweep(tmp_path / "b", Plant(device="cuda"))
    lines = [json.loads(x) for x in (b / "ledger.jsonl").read_text().splitlines()]
    for r in lines:
        if r["world_size"] == 8:
            r["allreduce_busbw_gbps"] = 0.2
    (b / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    ra = {r["gpus"]: r for r in run_sweep(a, gpus="8,16").rows}
    rb = {r["gpus"]: r for r in run_sweep(b, gpus="8,16").rows}
    assert rb[8]["efficiency"] == ra[8]["efficiency"]
    assert rb[16]["efficiency"] < ra[16]["efficiency"] - 0.01


def test_intervals_widen_with_the_spread_of_the_measured_inputs(tmp_path):
    quiet = run_sweep(write_planted_sweep(tmp_path / "q", Plant(device="cuda")), gpus="64")
    noisy = run_sweep(
        write_planted_sweep(tmp_path / "n", Plant(device="cuda", noise_cv=0.05, repeats=5)),
        gpus="64",
    )
    q = next(r for r in quiet.rows if r["gpus"] == 64)["efficiency_ci"] or [0.0, 0.0]
    n = next(r for r in noisy.rows if r["gpus"] == 64)["efficiency_ci"]
    assert n[1] - n[0] > q[1] - q[0] + 0.001


def test_a_miss_is_called_a_miss(tmp_path):
    # N = 2 is fed by the fabric alone (nothing below it): a plant with a link 20x slower than
    # the fabric's makes that prediction miss, and the words must say so.
    plant = Plant(device="cuda", efficiency=0.02, hide_share=0.0)
    result = run_sweep(write_planted_sweep(tmp_path / "m", plant))
    row = next(r for r in result.rows if r["gpus"] == 2)
    assert row["fed_by_gpus"] is None
    assert row["verdict"].startswith("misses its own measurement")
    text = projection.render(result, "text")
    assert "misses its own measurement" in text and "sits on the curve" not in text
    hit = next(r for r in result.rows if r["gpus"] == 4)  # fed by N = 2: recovered
    assert hit["verdict"].startswith("within")


def test_a_cpu_sweep_is_not_projected_onto_a_gpu_fabric_unless_asked(tmp_path):
    sweep = write_planted_sweep(tmp_path / "cpu", Plant(device="cpu"))
    result = run_sweep(sweep, gpus="8,16,64")
    assert {r["gpus"] for r in result.rows} == {4, 8}
    assert any("would be a what-if" in n for n in result.notes)
    what_if = run_sweep(sweep, gpus="8,16,64", what_if=True)
    past = [r for r in what_if.rows if r["gpus"] > 8 or r["gpus"] == 2]
    assert past and all(r["what_if"] and r["curve"].startswith("what-if") for r in past)
    assert "(what-if)" in projection.render(what_if, "text")


@pytest.mark.parametrize(
    ("buckets", "said"),
    [
        ((8 * MIB,) * 4, "ceilings at N = 2 (3 run(s))"),
        ((1 * MIB, 8 * MIB, 24 * MIB), "bucket all"),
    ],
)
def test_a_planted_cpu_rings_latency_is_recovered_from_the_ceilings(tmp_path, buckets, said):
    """A ring with a latency per hop, measured as the worker measures it (each bucket alone,
    the whole gradient, their sum): equal buckets are fitted from the two ceilings of each
    repeat, unequal ones by the line through the buckets; either way N = 4 and 8 are exact."""
    plant = Plant(device="cpu", alpha_s=4e-4, busbw_gbps=2.0, buckets=buckets, hide_share=0.1)
    result = run_sweep(write_planted_sweep(tmp_path / "ring", plant), gpus="8")
    rows = {r["gpus"]: r for r in result.rows}
    truth = planted_steps(plant, [2, 4, 8])
    for n, step in zip((4, 8), truth["step_s"][1:], strict=True):
        assert rows[n]["fed_by_gpus"] == n // 2
        assert rows[n]["measured_efficiency"] == pytest.approx(plant.compute_s / step, rel=1e-6)
        assert abs(rows[n]["error_pp"]) < 1e-3
    source = result.curves[0]["fits"][0]["link_source"]
    assert said in source and "400 µs per ring step" in source, source


def test_a_cpu_sweep_past_its_cores_scales_the_rings_hops_and_says_the_compute_is_not(tmp_path):
    def rows(plant):
        result = run_sweep(write_planted_sweep(tmp_path / str(plant.cpu_cores), plant), gpus="8")
        return {r["gpus"]: r for r in result.rows}, result.notes

    free, free_notes = rows(Plant(device="cpu"))
    busy, notes = rows(Plant(device="cpu", cpu_cores=2))
    # N = 8 is fed by N = 4, already 2 ranks a core: each hop takes 2 turns more there.
    assert busy[8]["allreduce_ms"] == pytest.approx(2 * free[8]["allreduce_ms"], rel=1e-9)
    assert busy[4]["allreduce_ms"] == pytest.approx(2 * free[4]["allreduce_ms"], rel=1e-9)
    said = [n for n in notes if "exceed this host's 2 cores" in n]
    assert said and "the compute step is not" in said[0] and "at most 2 / N" in said[0]
    assert not any("exceed this host" in n for n in free_notes)
    assert any("N = 2 not projected: no smaller N" in n for n in notes)


def test_a_gpu_sweep_on_another_gpus_fabric_is_labelled_what_if(tmp_path):
    sweep = write_planted_sweep(tmp_path / "g", Plant(device="cuda"))
    (sweep / "env.json").write_text(json.dumps({"gpu_names": ["NVIDIA H100 80GB HBM3"]}))
    result = run_sweep(sweep, gpus="64", fabric="dgx-a100")
    assert next(r for r in result.rows if r["gpus"] == 64)["what_if"]
    same = run_sweep(sweep, gpus="64", fabric="dgx-h100")
    assert not next(r for r in same.rows if r["gpus"] == 64)["what_if"]


def test_a_sweep_without_one_gpu_is_refused(tmp_path):
    sweep = write_planted_sweep(tmp_path / "no1", Plant(world_sizes=(2, 4)))
    with pytest.raises(UserError, match="N = 1"):
        run_sweep(sweep)


# -- the published tables (measurements that do not come from the model) ----------------------


def test_every_published_row_cites_quotes_and_lists_its_estimates():
    data = validate.load()
    for case in data["case"]:
        assert case["source"] in data["sources"] and case["section"] and case["quoted"]
        assert "estimated" in case
        layout = data["layouts"][case["layout"]]
        assert len(layout["bucket_mib"]) == len(layout["ready_share"])
        assert len(case["gpus"]) == len(case["throughput"])
        for value in case["throughput"]:  # each throughput is quoted verbatim
            assert f"{value:,}" in case["quoted"] or str(value) in case["quoted"]
    for row in data["busbw"]:
        assert row["source"].startswith("https://github.com/NVIDIA/") and row["quoted"]


def test_nccls_model_holds_the_maintainers_bus_bandwidths():
    """The cost model alone, against nccl-tests figures from NCCL's own issue tracker: the
    healthy systems within 10% at the stated nominal efficiency, inside the stated range."""
    rows = {r["id"]: validate.run_busbw(r) for r in validate.load()["busbw"]}
    for key in ("h100x8-ring", "h100x8-nvls", "h200x8-nvls", "dgxa100-multinode",
                "hgxa100-4hdr-2nodes"):  # fmt: skip
        assert abs(rows[key]["error_pct"]) <= 10, rows[key]


def test_model_error_sigma_is_the_tables_own_and_validation_scores_out_of_sample():
    """The model's own error (model_error.SIGMA) is what the published table measures, and each
    case is scored with σ measured on the other cases only: a case that the model misses badly
    widens everyone's interval but its own."""
    v = validate.validate(n_draws=20)
    assert abs(model_error.SIGMA - v.model_error_sigma) < 0.01, v.model_error_sigma
    data = validate.load()
    raws = {c["id"]: validate.project_case(c, data["layouts"], n_draws=4) for c in data["case"]}
    for case in v.cases:
        others = [x for k, r in raws.items() if k != case.id for x in r.log_ratios()]
        assert case.points[0]["model_error_sigma"] == pytest.approx(model_error.estimate(others))
    worst = max(v.cases, key=lambda c: max(abs(p["error_pp"]) for p in c.points))
    assert worst.points[0]["model_error_sigma"] < v.model_error_sigma


def test_model_error_widens_the_interval_and_moves_the_point_estimate_by_its_mean():
    inp = pure_inputs(step_time_ms="100", grad_mb=255.0)
    fab = fabrics.resolve_fabric("dgx-h100")

    def rows(sigma):
        return project([inp], [16, 256], fab, 8, n_draws=200, model_error_sigma=sigma).rows

    off, on = rows(0.0), rows(model_error.SIGMA)
    for a, b in zip(off, on, strict=True):
        # The point estimate's overhead beyond compute grows by the factor's mean, exp(σ²/2),
        # and so do its parts, which still add up to the step.
        grow = math.exp(model_error.SIGMA**2 / 2)
        over = [r["step_time_ms"] - 100.0 for r in (a, b)]
        assert over[1] == pytest.approx(over[0] * grow, rel=1e-9), (over, grow)
        parts = ("exposed_comm_ms", "straggler_ms", "host_ms", "sm_contention_ms")
        assert b["exposed_comm_ms"] == pytest.approx(a["exposed_comm_ms"] * grow, rel=1e-9)
        assert sum(b[p] for p in parts) == pytest.approx(over[1], rel=1e-9)
        assert b["efficiency"] < a["efficiency"]
        assert b["efficiency_ci"][0] < b["efficiency"] < b["efficiency_ci"][1]
        assert b["efficiency_ci"][0] < a["efficiency_ci"][0]
        assert b["efficiency_ci"][1] - b["efficiency_ci"][0] > a["efficiency_ci"][1] - a[
            "efficiency_ci"][0]  # fmt: skip
    named = [name for name, _ in on[-1]["interval_drivers"]]
    assert "model error" in named and "model error" not in [n for n, _ in off[-1][
        "interval_drivers"]]  # fmt: skip


def test_model_error_counts_a_bias_and_floors_tiny_losses():
    # A model that always misses by the same factor has σ = that factor's logarithm.
    assert model_error.estimate([math.log(1.5)] * 5) == pytest.approx(math.log(1.5))
    assert model_error.estimate([]) == 0.0
    # 100.9% published (a measurement's noise) against 99.4% predicted: both under a point.
    assert model_error.log_ratio(1.009, 0.994) == 0.0
    assert model_error.log_ratio(0.80, 0.90) == pytest.approx(math.log(2.0))
    step, compute = np.array([[1.2, 1.5]]), np.array([[1.0, 1.0]])
    assert model_error.apply(step, compute, np.array([[2.0]])).tolist() == [[1.4, 2.0]]


# -- the command ---------------------------------------------------------------------------------


def run(*args: str):
    return CliRunner().invoke(cli, ["project", *args])


def test_pure_input_json_has_inputs_and_one_row_per_gpu_count(tmp_path):
    out = tmp_path / "p.json"
    res = run(
        "--step-time-ms", "120,118,125", "--grad-mb", "255", "--bucket-mb", "25",
        "--overlap", "0.6", "--fabric", "dgx-h100", "--gpus", "8,16,...,1024",
        "--per-device-batch", "64", "--format", "json", "-o", str(out),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    body = json.loads(out.read_text())
    assert body["kind"] == projection.HEADER and set(body) >= {"inputs", "predictions"}
    rows = body["predictions"]
    assert [r["gpus"] for r in rows] == [8, 16, 32, 64, 128, 256, 512, 1024]
    for r in rows:
        assert 0 < r["efficiency"] <= 1
        lo, hi = r["efficiency_ci"]
        assert lo <= r["efficiency"] <= hi
        assert r["algorithm"]
    effs = [r["efficiency"] for r in rows]
    assert effs == sorted(effs, reverse=True)
    # Replacing its own earlier output is allowed; the interval's method is stated.
    assert run("--step-time-ms", "1", "--grad-mb", "1", "-o", str(out)).exit_code == 0
    assert "Monte Carlo" in body["inputs"]["interval"]


def test_text_and_markdown_list_the_inputs_the_fabric_and_a_table():
    args = ["--step-time-ms", "100", "--grad-mb", "100", "--gpus", "8,16"]
    text = run(*args).output
    assert "compute-only step 100.00 ms" in text and "NCCL's own model" in text
    assert "bucket readiness: assumed" in text and "dominated by" in text
    md = run(*args, "--format", "markdown").output
    assert "| GPUs |" in md and "|---|" in md


def test_one_busbw_value_sets_the_intra_node_link_and_says_so():
    res = run("--step-time-ms", "50", "--grad-mb", "255", "--gpus", "8,16",
              "--busbw-gbps", "100", "--format", "json")  # fmt: skip
    body = json.loads(res.output)
    assert any("intra-node bus bandwidth only" in n for n in body["notes"])
    assert any("set to 100 GB/s" in line for line in body["inputs"]["fabric_lines"])


def test_faster_network_and_hooks_move_the_prediction_the_right_way():
    def eff(*extra):
        res = run("--step-time-ms", "50", "--grad-mb", "255", "--gpus", "256",
                  "--format", "json", *extra)  # fmt: skip
        assert res.exit_code == 0, res.output
        return json.loads(res.output)["predictions"][0]["efficiency"]

    slow = eff("--fabric", "nvswitch-h100,eth-25g")
    fast = eff("--fabric", "nvswitch-h100,ib-ndr400")
    fp16 = eff("--fabric", "nvswitch-h100,eth-25g", "--comm-hook", "fp16")
    assert slow < fp16 < fast
    assert eff("--fabric", "dgx-h100", "--nics-per-node", "1") < eff("--fabric", "dgx-h100")


def test_validate_prints_every_row_and_the_summary():
    res = run("--validate", "--draws", "40")
    assert res.exit_code == 0, res.output
    assert "txl-base-dgxa100-tf32-b32" in res.output and "bert-large-p1-dgxa100-amp" in res.output
    assert "interval holds the published value" in res.output
    assert "median signed error" in res.output


def test_report_has_a_projection_section_with_band_measured_points_and_verdicts(tmp_path):
    from harness import report

    sweep = write_planted_sweep(tmp_path / "rep", Plant(device="cuda", noise_cv=0.03))
    rep = report.load_report(sweep)
    ids = [s.id for s in rep.sections]
    assert ids.index("projection") == max(ids.index("scaling"), ids.index("why")) + 1
    section = next(s for s in rep.sections if s.id == "projection")
    fig = section.figures[0]
    measured = next(t for t in fig.data if (t.name or "").startswith("measured:"))
    assert list(measured.x) == [2, 4, 8]
    predicted = next(t for t in fig.data if (t.name or "").startswith("predicted:"))
    assert max(predicted.x) == 1024
    bands = [t for t in fig.data if t.fill == "toself"]
    assert bands and all(b.mode == "lines" for b in bands)  # an outline: no dots at its corners
    cells = " ".join(cell for t in section.tables for row in t.rows for cell in row)
    assert "compute-only step" in cells and "measured at N = 4" in cells
    assert "within the" in cells or "misses its own" in cells
    assert "sits on the curve" not in section.intro
    html = report.render_html(rep)
    assert 'id="projection"' in html


def test_sm_and_hbm_contention_hold_the_published_slowdowns_beside_nccl():
    # Independent numbers: compute kernels timed with and without an NCCL collective beside
    # them. NVIDIA/nccl#1428 (A100-SXM4-80GB, 2,039 GB/s HBM, an 8-GPU NVSwitch collective):
    # GEMM 1.18 -> 2.08 ms, attention 0.18 -> 0.33 ms. parasailteam/coconet#6 (8x V100, a ring
    # all-reduce with NCCL_MIN_NCHANNELS=24): a CUTLASS GEMM 48.98 -> 109.83 ms.
    def share_range(fabric, n, ctas, sm_count, hbm_gbps):
        size = np.array([256.0 * MIB])
        ends = []
        for e, k_sm, k_hbm in (
            (fabrics.EFFICIENCY["nvlink"].lo, fabrics.SM_CONTENTION.lo, fabrics.HBM_CONTENTION.lo),
            (fabrics.EFFICIENCY["nvlink"].hi, fabrics.SM_CONTENTION.hi, fabrics.HBM_CONTENTION.hi),
        ):
            link = mdl.NcclLink(fabric, 8, {"intra": np.array([e])})
            t, _, _ = mdl.allreduce_times(link, n, size, 1)
            busbw = size[0] * 2 * (n - 1) / n / t[0, 0]
            ends.append(k_sm * ctas / sm_count + k_hbm * busbw / (hbm_gbps * 1e9))
        return ends

    a100_ctas = int(mdl.allreduce_ctas(mdl.NcclLink(A100, 8, {}), 8, np.array([256.0 * MIB]))[0])
    lo, hi = share_range(A100, 8, a100_ctas, 108, 2039.0)
    for before, after in ((1.18, 2.08), (0.18, 0.33)):
        assert lo <= 1 - before / after <= hi, (lo, 1 - before / after, hi)
    lo, hi = share_range(fabrics.resolve_fabric("dgx-1"), 8, 24, 80, 900.0)
    assert lo <= 1 - 48.98 / 109.83 <= hi, (lo, hi)
    # The SM share alone (the model before the HBM term) could not reach either measurement.
    assert fabrics.SM_CONTENTION.hi * a100_ctas / 108 < 1 - 1.18 / 2.08
    assert fabrics.SM_CONTENTION.hi * 24 / 80 < 1 - 48.98 / 109.83


def test_ddp_bucket_copies_are_four_gradients_through_hbm_and_only_on_gpus():
    # 768 MB of fp32 gradients on an A100 (1,555 GB/s) at the nominal copy efficiency.
    copy = mdl.ddp_copy_s(768e6, 1555.0, np.array([fabrics.COPY_EFFICIENCY.nominal]))
    assert copy[0] == pytest.approx(4 * 768e6 / (1555e9 * fabrics.COPY_EFFICIENCY.nominal))
    args = {"step_time_ms": "100", "grad_mb": 768e6 / MIB, "bucket_mb": "25"}
    gpu = project([pure_inputs(**args)], [2], A100, 8, n_draws=50, model_error_sigma=0.0)
    fit = gpu.curves[0]["fits"][0]
    assert fit["ddp_copy_ms"] == pytest.approx(1e3 * copy[0])
    assert "DDP's bucket copies" in fit["host_source"]
    assert gpu.rows[0]["host_ms"] == pytest.approx(fit["host_ms"])
    assert fit["host_ms"] == pytest.approx(1e3 * (copy[0] + HOST_DEFAULT.nominal))
    # A CPU sweep's measured ring has no HBM and no bucket-copy term.
    assert mdl.ddp_copy_s(768e6, 0.0, np.array([1.0])).tolist() == [0.0]
