"""harness.projection (the model), harness.fabrics (the table) and the ``project`` command."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from distrinews.errors import UserError
from harness import fabrics, project
from harness import projection as pj
from harness.cli import cli
from tests.helpers_projection import MIB, Plant, planted_steps, write_planted_sweep

NVL = fabrics.resolve_fabric("dgx-h100")


def net(**kw) -> pj.Network:
    return replace(pj.Network.from_fabric(NVL, 8), **kw)


# -- one all-reduce --------------------------------------------------------------------------


def test_ring_inside_a_node_is_latency_per_step_plus_the_bandwidth_term():
    b = 100e6
    times, tree = pj.allreduce_time_s(np.array([b]), np.array([1, 2, 8]), net())
    link = NVL.intra
    for j, n in enumerate((2, 8), start=1):
        expected = (
            fabrics.BASE_LATENCY_S
            + 2 * (n - 1) * link.ring_step_latency_s
            + 2 * (n - 1) / n * b / (link.busbw_gbps * 1e9)
        )
        assert times[0, j, 0] == pytest.approx(expected)
    assert times[0, 0, 0] == 0.0  # one GPU: nothing to all-reduce
    assert not tree.any()


def test_across_nodes_only_each_gpus_shard_crosses_the_network():
    b = 256e6
    times, _ = pj.allreduce_time_s(np.array([b]), np.array([8, 16]), net())
    g, bw_intra, bw_inter = 8, NVL.intra.busbw_gbps * 1e9, NVL.inter.busbw_gbps * 1e9
    # 2 nodes: ring between nodes over the b/8 shard, plus reduce-scatter/all-gather inside.
    inter = 2 * (2 - 1) / 2 * (b / g) / bw_inter + 2 * NVL.inter.ring_step_latency_s
    intra = 2 * (g - 1) / g * b / bw_intra + 2 * (g - 1) * NVL.intra.ring_step_latency_s
    assert times[0, 1, 0] == pytest.approx(fabrics.BASE_LATENCY_S + intra + inter)
    # The network is 8x slower than NVLink but carries an 8th of the bytes: about 2x, not 9x.
    assert 1.5 < times[0, 1, 0] / times[0, 0, 0] < 3


def test_tree_wins_for_small_buckets_on_many_nodes_and_ring_for_large_ones_on_few():
    sizes = np.array([64 * 1024, 512 * MIB])
    _, tree = pj.allreduce_time_s(sizes, np.array([16, 1024]), net())
    assert tree[0, 1, 0]  # 64 KiB on 128 nodes: 2 log2(128) latencies beat 254
    assert not tree[0, 0, 1]  # 512 MiB on 2 nodes: the ring's bandwidth wins


# -- overlap ---------------------------------------------------------------------------------


def test_the_last_bucket_can_never_hide():
    times = np.array([[0.002, 0.002, 0.003]])
    fr = pj.ready_fractions([10, 10, 15])
    huge = pj.exposed_comm_s(times, np.array([10.0]), fr)
    # However long backward runs, the last bucket (ready at its very end) is exposed, and so
    # is the bucket the last layers fill (also complete only when backward ends).
    assert huge[0] == pytest.approx(0.002 + 0.003)
    alone = pj.exposed_comm_s(np.array([[0.003]]), np.array([10.0]), pj.ready_fractions([15]))
    assert alone[0] == pytest.approx(0.003)
    nothing = pj.exposed_comm_s(times, np.array([0.0]), fr)
    assert nothing[0] == pytest.approx(0.007)  # no window: everything is exposed


def test_buckets_queue_behind_each_other_on_one_stream():
    # Buckets ready at 5, 10 and 10 ms of a 10 ms window, 8 ms each: the first ends at 13, the
    # second can start only then (ends 21), the third at 21 (ends 29): 19 ms exposed, not 8.
    times = np.array([[0.008, 0.008, 0.008]])
    fr = np.array([0.5, 1.0, 1.0])
    exposed = pj.exposed_comm_s(times, np.array([0.010]), fr)
    assert exposed[0] == pytest.approx(0.019)


def test_hide_share_fit_recovers_a_planted_window():
    times = np.array([[0.004, 0.006, 0.006, 0.010]])
    fr = pj.ready_fractions([4, 6, 6, 10])
    compute = np.array([0.1])
    exposed = pj.exposed_comm_s(times, compute * 0.1, fr)
    share, clamped = pj.fit_hide_share(times, compute, 1, exposed, fr)
    assert share[0] == pytest.approx(0.1, abs=1e-6)
    assert not clamped[0]
    # At the floor (only the end-of-backward buckets exposed) the measurement bounds the
    # window from below only: the prior fills in, never less than the bound.
    floor = pj.exposed_comm_s(times, compute * 0.9, fr)
    share, clamped = pj.fit_hide_share(times, compute, 1, floor, fr, prior=0.5)
    bound = share[0]
    assert not clamped[0] and bound == pytest.approx(0.5)
    share, _ = pj.fit_hide_share(times, compute, 1, floor, fr, prior=0.01)
    assert 0.01 < share[0] < 0.5
    # Less exposed than the floor: the model cannot produce it, says so, clamps.
    share, clamped = pj.fit_hide_share(times, compute, 1, np.array([0.001]), fr)
    assert clamped[0] and share[0] == 1.0


def test_latency_and_bandwidth_are_fitted_from_bucket_timings():
    alpha, busbw, n = 50e-6, 2.0, 4
    sizes = [16, 1e5, 4e5, 5e5]
    times = [2 * (n - 1) * alpha + 2 * (n - 1) / n * b / (busbw * 1e9) for b in sizes]
    fitted = pj.fit_latency_bandwidth(sizes, times, n)
    assert fitted == pytest.approx((alpha, busbw))
    assert pj.fit_latency_bandwidth([4e5, 4e5], times[2:4], n) is None  # one size: no line


def test_a_planted_sync_overhead_beyond_the_all_reduce_is_carried(tmp_path):
    # No overlap at all plus 20 ms more per step: more exposure than all the buckets give,
    # which only a per-step overhead explains (what the gloo runs on this box show).
    plant = Plant(overhead_s=0.02, hide_share=0.0, busbw_gbps=20.0)
    sweep = write_planted_sweep(tmp_path / "over", plant)
    result = project.run_project(
        sweep, gpus="8", gpus_per_node=8, fabric=None, busbw_gbps=None, pure=None
    )
    rows = {r["gpus"]: r for r in result.rows}
    # (0.3 pp: the straggler allowance for the planted 0.2% step jitter, which the planted
    # measurements do not include.)
    assert abs(rows[4]["error_pp"]) < 0.3 and abs(rows[8]["error_pp"]) < 0.3
    fit = next(f for f in result.curves[0]["fits"] if f["fed_by_gpus"] == 2)
    assert fit["sync_overhead_s"] == pytest.approx(0.02, rel=1e-3)


# -- hooks, accumulation, stragglers ----------------------------------------------------------


def step_at(gpus, **kw):
    base = {
        "compute_s": np.array([0.1]),
        "bucket_bytes": (25 * MIB, 25 * MIB, 25 * MIB, 90 * MIB),
        "wire_share": 1.0,
        "collectives_per_bucket": 1,
        "grad_accum": 1,
        "hide_share": np.array([2 / 3]),
        "jitter_share": 0.0,
        "net": net(),
    }
    return pj.predict_steps(pj.StepModel(**{**base, **kw}), gpus)


def test_fp16_compression_halves_the_bytes_and_powersgd_shrinks_them_more():
    dense = step_at([8, 64])
    half = step_at([8, 64], wire_share=pj.hook_wire_share("fp16"))
    latency_only = step_at([8, 64], wire_share=1e-15)
    share = pj.powersgd_share([(768, 768), (768,), (30522, 768)], rank=4)
    low = step_at([8, 64], wire_share=share, collectives_per_bucket=2)
    # Inside a node time is latency + bytes/bandwidth: half the bytes, half the second term.
    lat, full = latency_only.allreduce_s[0, 0], dense.allreduce_s[0, 0]
    assert half.allreduce_s[0, 0] == pytest.approx(lat + (full - lat) / 2)
    assert half.allreduce_s[0, 1] < dense.allreduce_s[0, 1]
    assert share < 0.02
    # PowerSGD's two all-reduces per bucket pay the latency twice, and latency is most of what
    # is left: it gains far less than its byte count suggests, but it still gains.
    assert low.allreduce_s[0, 0] < half.allreduce_s[0, 0]
    assert low.allreduce_s[0, 1] < half.allreduce_s[0, 1]
    assert low.step_s[0, 1] < half.step_s[0, 1] < dense.step_s[0, 1]


def test_powersgd_sends_rank_times_m_plus_n_per_matrix_and_vectors_dense():
    assert pj.powersgd_share([(100, 200)], 1) == pytest.approx(300 / 20000)
    assert pj.powersgd_share([(100,)], 1) == 1.0
    assert pj.powersgd_share([(4, 4)], 2) == 1.0  # r(m+n) = 16 saves nothing: sent dense


def test_accumulation_amortises_one_all_reduce_over_several_micro_steps():
    # Same per-micro-step compute (0.1 s): 4 micro-steps take 0.4 s and all-reduce once.
    one = step_at([256])
    four = step_at([256], compute_s=np.array([0.4]), grad_accum=4)
    eff_one = 0.1 / one.step_s[0, 0]
    eff_four = 0.4 / four.step_s[0, 0]
    assert four.allreduce_s[0, 0] == pytest.approx(one.allreduce_s[0, 0])
    assert eff_four > eff_one
    # Only the last micro-step's backward hides it: the exposure is the same, not 4x smaller.
    assert four.exposed_comm_s[0, 0] == pytest.approx(one.exposed_comm_s[0, 0], rel=1e-6)


def test_straggler_allowance_is_the_spread_of_normal_order_statistics():
    s = pj.straggler_s(np.array([0.1]), 0.02, np.array([1, 2, 8, 1024]))
    assert s[0] == 0.0
    # Exact E[max] − E[lower median] of N standard normals: 2/sqrt(pi) at N = 2, 1.576 at 8.
    assert s[1] == pytest.approx(0.1 * 0.02 * 2 / math.sqrt(math.pi), rel=0.06)
    assert s[2] == pytest.approx(0.1 * 0.02 * 1.576, rel=0.02)
    assert s[3] > s[2]  # keeps growing, like sqrt(2 ln N)


def test_jitter_comes_from_the_straggler_wait_measured_below(tmp_path):
    inp = project.CurveInputs(
        compute_step_s=(0.1,),
        bucket_bytes=(1e6,),
        jitter_share=0.0,
        measured=(project.Measured(gpus=2, nodes=1, busbw_gbps=(1.0,), straggler_wait_s=(0.004,)),),
    )
    cv = project._jitter(inp, 2)
    assert cv == pytest.approx(0.004 / float(pj.order_spread(2)) / 0.1)
    result = project.project([inp], [8], NVL, 8, n_boot=10)
    row = next(r for r in result.rows if r["gpus"] == 8)
    expected = 0.1 * cv * float(pj.order_spread(8))
    assert row["straggler_ms"] == pytest.approx(expected * 1e3)


def test_ddp_buckets_match_torchs_own_bucketing_for_the_tiny_model():
    """Against the function DDP itself buckets with, fed as DDP's rebuild feeds it (gradients
    in backward order, first-bucket and bucket caps). The real rebuilt buckets of a 2-rank run
    are checked in tests/distributed/test_projection_real.py."""
    torch = pytest.importorskip("torch")
    import torch.distributed as dist

    from distrinews.model import NewsClassifier

    params = list(NewsClassifier.from_config("tiny", seed=0).parameters())
    sizes = [p.numel() * 4 for p in params]
    cap = int(0.01 * MIB)
    ours = pj.ddp_buckets(sizes, cap)
    grads = [torch.empty_like(p) for p in reversed(params)]
    indices, _ = dist._compute_bucket_assignment_by_size(
        grads, [min(pj.FIRST_BUCKET_BYTES, cap), cap]
    )
    theirs = [sum(grads[i].numel() * 4 for i in bucket) for bucket in indices]
    assert len(ours) > 3
    assert sorted(ours) == sorted(theirs)
    # DistilBERT's word embeddings (the first parameter) get a bucket of their own, the last.
    assert ours[-1] == sizes[0]


# -- the fabric table ------------------------------------------------------------------------


def test_every_link_has_a_source_and_the_required_fabrics_exist():
    for name in (
        "nvswitch-h100",
        "nvswitch-h200",
        "nvswitch-h100-nvls",
        "pcie-gen4",
        "pcie-gen5",
        "ib-ndr400",
        "ib-hdr200",
        "roce-400",
        "eth-100g",
        "eth-25g",
    ):
        link = fabrics.LINKS[name]
        assert link.source and link.busbw_gbps > 0
    assert fabrics.LINKS["ib-ndr400"].busbw_gbps == pytest.approx(400 / 8 * 0.9)
    fab = fabrics.resolve_fabric("pcie-gen5,ib-hdr200")
    assert (fab.intra.name, fab.inter.name) == ("pcie-gen5", "ib-hdr200")
    with pytest.raises(UserError, match=r"known: dgx-h100.*ib-ndr400"):
        fabrics.resolve_fabric("infiniband-xdr")


# -- from a sweep ----------------------------------------------------------------------------


def test_projection_from_a_planted_sweep_recovers_the_measured_efficiencies(tmp_path):
    plant = Plant()
    sweep = write_planted_sweep(tmp_path / "planted", plant)
    result = project.run_project(
        sweep, gpus="16,64", gpus_per_node=8, fabric=None, busbw_gbps=None, pure=None
    )
    rows = {r["gpus"]: r for r in result.rows}
    truth = planted_steps(plant, [2, 4, 8])
    for n, step in zip((4, 8), truth["step_s"][1:], strict=True):
        r = rows[n]
        assert r["fed_by_gpus"] < n  # no peeking
        assert r["measured_efficiency"] == pytest.approx(plant.compute_s / step, rel=1e-6)
        assert abs(r["error_pp"]) < 0.1
    # N = 2 had nothing below it but N = 1: fed by the fabric table, and says so.
    assert rows[2]["fed_by_gpus"] is None
    assert {16, 64} <= set(rows)
    info = result.curves[0]
    fits = {f["fed_by_gpus"]: f for f in info["fits"]}
    assert fits[4]["hide_share"] == pytest.approx(plant.hide_share, abs=1e-3)
    assert info["bucket_bytes"][-1] == 40 * MIB
    assert "recorded by the worker" in info["sources"]["buckets"]


def test_a_prediction_never_sees_the_point_it_predicts(tmp_path):
    """Changing what N = 8 measured changes predictions past 8, never the one at 8."""
    a = write_planted_sweep(tmp_path / "a", Plant())
    b = write_planted_sweep(tmp_path / "b", Plant())
    # b: rewrite N = 8's bandwidth to a wildly different value.
    ledger = (b / "ledger.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in ledger]
    for r in rows:
        if r["world_size"] == 8:
            r["allreduce_busbw_gbps"] = 0.2
    (b / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kw = {"gpus": "8,16", "gpus_per_node": 8, "fabric": None, "busbw_gbps": None, "pure": None}
    ra = {r["gpus"]: r for r in project.run_project(a, **kw).rows}
    rb = {r["gpus"]: r for r in project.run_project(b, **kw).rows}
    assert rb[8]["efficiency"] == ra[8]["efficiency"]
    assert rb[16]["efficiency"] < ra[16]["efficiency"] - 0.01


def test_intervals_come_from_the_spread_of_the_measured_inputs(tmp_path):
    noisy = write_planted_sweep(tmp_path / "n", Plant(noise_cv=0.05, repeats=5))
    result = project.run_project(
        noisy, gpus="64", gpus_per_node=8, fabric=None, busbw_gbps=None, pure=None
    )
    r = next(r for r in result.rows if r["gpus"] == 64)
    lo, hi = r["efficiency_ci"]
    assert lo < r["efficiency"] < hi
    assert hi - lo > 0.002
    lo, hi = r["step_time_ms_ci"]
    assert lo < r["step_time_ms"] < hi


def test_a_sweep_without_one_gpu_is_refused(tmp_path):
    sweep = write_planted_sweep(tmp_path / "no1", Plant(world_sizes=(2, 4)))
    with pytest.raises(UserError, match="N = 1"):
        project.run_project(
            sweep, gpus="8", gpus_per_node=8, fabric=None, busbw_gbps=None, pure=None
        )


# -- pure inputs and the command -------------------------------------------------------------


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
    assert set(body) >= {"inputs", "predictions"}
    rows = body["predictions"]
    assert [r["gpus"] for r in rows] == [8, 16, 32, 64, 128, 256, 512, 1024]
    for r in rows:
        assert set(r) >= {"gpus", "step_time_ms", "samples_per_s", "efficiency", "efficiency_ci"}
        assert "curve" not in r  # no configuration columns in pure-input mode
        assert 0 < r["efficiency"] <= 1
        lo, hi = r["efficiency_ci"]
        assert lo <= r["efficiency"] <= hi
    effs = [r["efficiency"] for r in rows]
    assert effs == sorted(effs, reverse=True)


def test_text_and_markdown_list_the_inputs_and_a_table():
    args = ["--step-time-ms", "100", "--grad-mb", "100", "--gpus", "8,16"]
    text = run(*args).output
    assert "compute-only step 100.00 ms" in text and "efficiency" in text
    md = run(*args, "--format", "markdown").output
    assert "| GPUs |" in md and "|---|" in md


def test_faster_network_and_hooks_move_the_prediction_the_right_way():
    def eff(*extra):
        res = run(
            "--step-time-ms", "50", "--grad-mb", "255", "--gpus", "256",
            "--format", "json", *extra,
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        return json.loads(res.output)["predictions"][0]["efficiency"]

    slow = eff("--fabric", "nvswitch-h100,eth-25g")
    fast = eff("--fabric", "nvswitch-h100,ib-ndr400")
    fp16 = eff("--fabric", "nvswitch-h100,eth-25g", "--comm-hook", "fp16")
    flag = eff("--busbw-gbps", "360,2.8")
    assert slow < fp16 < fast
    assert flag == pytest.approx(slow, abs=0.01)  # 25 GbE at 0.9 of line rate = 2.8 GB/s


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--fabric", "myrinet"], "unknown fabric 'myrinet'; known: dgx-h100"),
        (["--gpus", "8,12"], "12 GPUs is more than one node of 8"),
        (["--gpus", "8,x"], "'x' is not a GPU count"),
        (["--step-time-ms", "nan"], "--step-time-ms = nan is not allowed"),
        (["--step-time-ms", "-5"], "expected a number > 0"),
        (["--busbw-gbps", "inf"], "--busbw-gbps = inf is not allowed"),
        (["--overlap", "1.5"], "--overlap = 1.5 is not allowed"),
        (["--bucket-mb", "10,10"], "sums to 20 MiB but --grad-mb is 100"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle):
    base = {"--step-time-ms": "100", "--grad-mb": "100", "--gpus": "8,16"}
    flags = dict(base)
    for k, v in zip(args[::2], args[1::2], strict=True):
        flags[k] = v
    res = run(*(x for kv in flags.items() for x in kv))
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert "Traceback" not in res.output


def test_sweep_without_n1_is_one_line_exit_2_and_output_is_untouched(tmp_path):
    sweep = write_planted_sweep(tmp_path / "no1", Plant(world_sizes=(2, 4), repeats=1))
    out = tmp_path / "keep.json"  # (an existing file that is not a projection: refused by -o)
    res = run(str(sweep), "-o", str(out))
    assert res.exit_code == 2
    assert "N = 1" in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()
    res = run(str(tmp_path / "missing"))
    assert res.exit_code == 2 and "no such results folder" in res.output


# -- the report ------------------------------------------------------------------------------


def test_report_has_a_projection_section_with_band_measured_points_and_inputs(tmp_path):
    from harness import report

    sweep = write_planted_sweep(tmp_path / "rep", Plant(noise_cv=0.03))
    rep = report.load_report(sweep)
    ids = [s.id for s in rep.sections]
    # Right after the scaling curves and what explains them.
    assert ids.index("projection") == max(ids.index("scaling"), ids.index("why")) + 1
    section = next(s for s in rep.sections if s.id == "projection")
    fig = section.figures[0]
    names = [t.name for t in fig.data]
    assert any(n.startswith("predicted:") for n in names)
    measured = next(t for t in fig.data if (t.name or "").startswith("measured:"))
    assert list(measured.x) == [2, 4, 8]
    predicted = next(t for t in fig.data if (t.name or "").startswith("predicted:"))
    assert max(predicted.x) == 1024
    assert any(t.fill == "toself" for t in fig.data)  # the band
    inputs = " ".join(cell for t in section.tables for row in t.rows for cell in row)
    assert "compute-only step" in inputs and "measured at N = 4" in inputs
    html = report.render_html(rep)
    assert 'id="projection"' in html
