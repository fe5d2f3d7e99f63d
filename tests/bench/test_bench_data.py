"""Data path benchmarks: pre-tokenization and padded-batch assembly on one core.

Targets (issue 2): pre-tokenizing the 7,600 real test rows with the real vocab at max length
128 takes a median under 1 s; assembling padded batches of 256 from the cache runs at >= 200,000
samples/s (an H100 consumes up to ~35,000 samples/s of DistilBERT, so the data path must never
be what a sweep measures). Tokenizer parallelism is off in tests (TOKENIZERS_PARALLELISM=false),
so both run on one core.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distrinews.dataset import AGNewsDataset, LengthGroupedBatchSampler, load_agnews, pretokenize

BATCH = 256


@pytest.fixture(scope="module")
def real(agnews_csv, tokenizer):
    data = load_agnews(agnews_csv)
    return data, AGNewsDataset.from_data(data, tokenizer, max_length=128, cache_dir=False)


def test_pretokenize_real_test_split(benchmark, bench_report, real, tokenizer):
    data, _ = real
    ids, lengths = benchmark(pretokenize, data.texts, tokenizer, max_length=128)
    assert ids.shape[0] == 7600 and lengths.max() == 128
    if benchmark.stats:
        bench_report(benchmark, "pretokenize_7600_rows_median_s", benchmark.stats["median"], "s")


@pytest.mark.parametrize("policy", ["dynamic", "fixed"])
def test_batch_assembly(benchmark, bench_report, real, policy):
    torch.set_num_threads(1)
    _, ds = real
    batches = list(LengthGroupedBatchSampler(ds.lengths, BATCH, drop_last=True))
    pad_to = 128 if policy == "fixed" else None

    def assemble_epoch():
        for b in batches:
            ds.batch(b, pad_to=pad_to)

    benchmark(assemble_epoch)
    stats = ds.padding_stats(batches, pad_to=pad_to)
    assert 0 <= stats["padding_waste"] < 1
    if benchmark.stats:
        rate = len(batches) * BATCH / benchmark.stats["median"]
        bench_report(benchmark, f"batch_assembly_{policy}_samples_per_s", rate, "samples/s")
        bench_report(benchmark, f"padding_waste_{policy}_pct", 100 * stats["padding_waste"], "%")


def test_length_grouping_cuts_padding_waste(real):
    """Report (and check) the padding waste of length grouping vs fixed 128 on the real data."""
    _, ds = real
    batches = list(LengthGroupedBatchSampler(ds.lengths, BATCH, drop_last=True))
    grouped = ds.padding_stats(batches)
    fixed = ds.padding_stats(batches, pad_to=128)
    order = np.random.default_rng(0).permutation(len(ds))
    random_dynamic = ds.padding_stats(
        [order[i : i + BATCH] for i in range(0, len(batches) * BATCH, BATCH)]
    )
    print(
        f"\n[bench] padding waste at batch {BATCH} on the real test split: "
        f"length-grouped dynamic {100 * grouped['padding_waste']:.1f}%, "
        f"random dynamic {100 * random_dynamic['padding_waste']:.1f}%, "
        f"fixed 128 {100 * fixed['padding_waste']:.1f}%"
    )
    assert grouped["padding_waste"] < random_dynamic["padding_waste"] < fixed["padding_waste"]
