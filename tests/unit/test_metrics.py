"""Metrics math: FLOPs per token, peak table, percentiles and the summary block."""

from __future__ import annotations

import numpy as np
import pytest

from distrinews.metrics import (
    EXPLAIN_METRIC_KEYS,
    LEDGER_METRIC_KEYS,
    RECORD_METRIC_KEYS,
    RunMetrics,
    WindowCounts,
    flops_per_token,
    matmul_params,
    peak_flops,
    percentile,
    rank_spread,
    sequence_flops,
    summarize,
)
from distrinews.model import SHAPES

BASE = SHAPES["base"]


def test_matmul_params_of_distilbert_base():
    n = matmul_params(dim=BASE["dim"], hidden_dim=BASE["hidden_dim"], n_layers=BASE["n_layers"])
    assert n == 42_467_328 == 6 * 7_077_888


def test_matmul_params_counts_the_real_model_weights():
    from distrinews.model import NewsClassifier

    model = NewsClassifier.from_config("tiny")
    layers = model.hf.distilbert.transformer.layer
    counted = sum(
        m.weight.numel()
        for layer in layers
        for m in (
            layer.attention.q_lin,
            layer.attention.k_lin,
            layer.attention.v_lin,
            layer.attention.out_lin,
            layer.ffn.lin1,
            layer.ffn.lin2,
        )
    )
    t = SHAPES["tiny"]
    assert (
        matmul_params(dim=t["dim"], hidden_dim=t["hidden_dim"], n_layers=t["n_layers"]) == counted
    )


@pytest.mark.parametrize("seq_len", [1, 64, 128])
def test_flops_per_token_base(seq_len):
    got = flops_per_token(n_matmul=42_467_328, n_layers=6, dim=768, seq_len=seq_len)
    assert got == 6 * 42_467_328 + 12 * 6 * 768 * seq_len


def test_sequence_flops_sums_per_sequence_costs():
    lengths = [17, 64, 128]
    direct = sum(t * flops_per_token(n_matmul=1000, n_layers=2, dim=8, seq_len=t) for t in lengths)
    via_sums = sequence_flops(
        n_matmul=1000,
        n_layers=2,
        dim=8,
        tokens=sum(lengths),
        tokens_sq=sum(t * t for t in lengths),
    )
    assert via_sums == direct


def test_peak_table():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.4e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "tf32") == 494.7e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "fp32") == 66.9e12
    assert peak_flops("NVIDIA H200", "fp16") == 989.4e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "tf32") == 156e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12


@pytest.mark.parametrize("name", [None, "", "cpu", "NVIDIA GeForce RTX 4090", "NVIDIA H100 NVL"])
def test_unknown_device_has_no_peak(name):
    assert peak_flops(name, "bf16") is None


@pytest.mark.parametrize("q", [0, 1, 37.5, 50, 90, 99, 100])
def test_percentile_matches_numpy(q):
    values = list(np.random.default_rng(0).random(101) * 3)
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-12)
    assert percentile([5.0], q) == 5.0


def test_percentile_rejects_nonsense():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def _summary(peak):
    counts = WindowCounts(
        samples=400, real_tokens=20_000, real_tokens_sq=1e6, padded_tokens=51_200,
        padded_tokens_sq=400 * 128**2,
    )  # fmt: skip
    return summarize(
        step_times_s=[[0.1, 0.1, 0.2, 0.1], [0.1, 0.1, 0.1, 0.3]],
        measured_time_s=2.0,
        data_wait_s=0.5,
        counts=counts,
        world_size=2,
        n_matmul=42_467_328,
        n_layers=6,
        dim=768,
        peak_flops_per_device=peak,
        mem_peak_gib=None,
        loss_first=1.4,
        loss_last=1.2,
    ).to_record()


def test_summary_figures():
    m = _summary(989.4e12)
    assert m["samples_per_s"] == 200 and m["samples_per_s_per_device"] == 100
    assert m["real_tokens_per_s"] == 10_000 and m["padded_tokens_per_s"] == 25_600
    assert m["step_time_s_p50"] == pytest.approx(0.1)
    assert m["step_time_s_mean"] == pytest.approx(1.1 / 8)
    assert m["data_wait_share"] == 0.25 and m["measured_steps"] == 4
    model_flops = 6 * 42_467_328 * 20_000 + 12 * 6 * 768 * 1e6
    assert m["flops_per_step"] == pytest.approx(model_flops / 4)
    assert m["mfu"] == pytest.approx(model_flops / (989.4e12 * 2 * 2.0))
    assert m["hfu"] > m["mfu"]  # padding makes the hardware do more than the model needs


def test_summary_mfu_null_without_peak():
    m = _summary(None)
    assert m["mfu"] is None and m["hfu"] is None and m["samples_per_s"] == 200


def test_rank_spread():
    assert rank_spread([[1.0, 1.0], [2.0, 2.0]]) == 2.0
    assert rank_spread([[0.5], [0.5]]) == 1.0
    assert rank_spread([[1.0, 3.0], [2.0, 2.0, 9.0]]) == 1.0  # even count: mean of the middle


def test_rank_spread_of_an_unusable_record_is_null():
    # It reads record.json as stored: anything that is not a list of numbers per rank.
    for bad in (None, [], "x", [[]], [[0.0], [1.0]], [1.0, 2.0], [[float("nan")], [1.0]]):
        assert rank_spread(bad) is None, bad
    assert rank_spread([[1.0, float("inf"), "x", 1.0], [2.0]]) == 2.0  # non-numbers left out


def test_the_record_metrics_are_the_fields_in_order_explain_figures_null_until_given():
    m = _summary(None)
    assert tuple(m) == RECORD_METRIC_KEYS
    assert all(m[k] is None for k in EXPLAIN_METRIC_KEYS)
    assert "measured_steps" in RECORD_METRIC_KEYS and "measured_steps" not in LEDGER_METRIC_KEYS


def test_with_explain_fills_explain_fields_and_refuses_any_other_key():
    base = RunMetrics(**{k: 1.0 for k in RECORD_METRIC_KEYS if k not in EXPLAIN_METRIC_KEYS})
    full = base.with_explain({"exposed_comm_s": 0.25, "bucket_count": 3})
    assert full.exposed_comm_s == 0.25 and full.bucket_count == 3 and base.exposed_comm_s is None
    with pytest.raises(ValueError, match="samples_per_s"):
        base.with_explain({"samples_per_s": 2.0})  # a window figure, not the explain phase's
    with pytest.raises(ValueError, match="made_up_s"):
        base.with_explain({"made_up_s": 2.0})
