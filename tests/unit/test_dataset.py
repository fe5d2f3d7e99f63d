"""AG News loading, tokenization cache, padding and every bad input, all offline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from distrinews.dataset import (
    AGNEWS_LENGTH_PERCENTILES,
    CLS_ID,
    SEP_ID,
    AGNewsDataset,
    clean_text,
    collate,
    get_tokenizer,
    load_agnews,
    synthetic_agnews,
)
from distrinews.errors import DataError

ROWS = [
    ("3", "Wall St. Bears Claw Back", "Short-sellers are seeing green again."),
    ("4", "Space probe lands", "A probe reached the comet, #36;10 million\\mission."),
    ("1", "Talks resume", "Leaders met in Geneva."),
    ("2", "Late goal wins cup", "A header in extra time decided it."),
]


def write_csv(path, rows, header=True):
    lines = ["label,title,description"] if header else []
    lines += [",".join(f'"{c}"' for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- sources -----------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [True, False])
def test_csv_original_layout_maps_labels_1_to_4_onto_0_to_3(tmp_path, header):
    data = load_agnews(write_csv(tmp_path / "a.csv", ROWS, header=header))
    assert list(data.labels) == [2, 3, 0, 1]
    assert data.texts[0] == "Wall St. Bears Claw Back Short-sellers are seeing green again."
    assert "$10 million mission" in data.texts[1]  # corpus quirks undone
    assert not data.synthetic


def test_real_test_split_loads(agnews_csv):
    data = load_agnews(agnews_csv)
    assert len(data) == 7600
    assert np.bincount(data.labels).tolist() == [1900, 1900, 1900, 1900]


def test_jsonl_and_parquet_with_text_label_columns(tmp_path):
    rows = [{"text": "Stocks fall", "label": 2}, {"text": "Team wins", "label": "Sports"}]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    parquet = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["Stocks fall", "Team wins"], "label": [2, 1]}).to_parquet(parquet)
    for path in (jsonl, parquet):
        data = load_agnews(path)
        assert list(data.labels) == [2, 1]
        assert data.texts == ("Stocks fall", "Team wins")


def test_synthetic_is_labelled_and_follows_agnews_lengths():
    data = load_agnews("synthetic:20000", seed=1)
    assert data.synthetic and data.source == "synthetic:20000"
    lengths = np.array([len(s) for s in data.token_ids])
    assert abs(np.median(lengths) - AGNEWS_LENGTH_PERCENTILES[50]) <= 1
    assert abs(np.percentile(lengths, 90) - AGNEWS_LENGTH_PERCENTILES[90]) <= 2
    assert all(s[0] == CLS_ID and s[-1] == SEP_ID for s in data.token_ids[:100])
    assert np.bincount(data.labels).tolist() == [5000] * 4
    ds = AGNewsDataset.from_data(data, max_length=64)
    assert ds.source.startswith("synthetic")
    assert ds.lengths.max() == 64 and ds.ids[ds.lengths == 64][:, 63].tolist().count(SEP_ID) == int(
        (ds.lengths == 64).sum()
    )


def test_synthetic_is_deterministic_per_seed():
    a, b = synthetic_agnews(50, seed=4), synthetic_agnews(50, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.token_ids, b.token_ids, strict=True))
    c = synthetic_agnews(50, seed=5)
    assert not all(np.array_equal(x, y) for x, y in zip(a.token_ids, c.token_ids, strict=True))


def test_length_table_matches_the_real_data(agnews_csv, tokenizer):
    data = load_agnews(agnews_csv)
    ds = AGNewsDataset.from_data(data, tokenizer, max_length=512)
    measured = np.rint(np.percentile(ds.lengths, np.arange(101))).astype(int)
    assert measured.tolist() == list(AGNEWS_LENGTH_PERCENTILES)


def test_hub_source_offline_names_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match=r"offline alternatives.*csv.*synthetic"):
        load_agnews("hub")


# -- tokenizer ---------------------------------------------------------------------------------


def test_bare_vocab_builds_the_real_uncased_tokenizer(tokenizer):
    assert len(tokenizer) == 30522
    ids = tokenizer("Hello world")["input_ids"]
    assert ids == [101, 7592, 2088, 102]


def test_tokenizer_directory_round_trip(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    again = get_tokenizer(tmp_path / "tok")
    assert again("Hello world")["input_ids"] == [101, 7592, 2088, 102]


def test_unreachable_tokenizer_names_offline_alternatives():
    with pytest.raises(DataError, match="offline alternatives"):
        get_tokenizer("no-such-org/no-such-tokenizer")


def test_missing_vocab_file(tmp_path):
    with pytest.raises(DataError, match="vocab file not found"):
        get_tokenizer(tmp_path / "vocab.txt")


# -- dataset, cache, padding -------------------------------------------------------------------


def test_items_have_the_three_keys(tmp_path, tokenizer):
    ds = AGNewsDataset.from_data(load_agnews(write_csv(tmp_path / "a.csv", ROWS)), tokenizer)
    item = ds[1]
    assert set(item) == {"input_ids", "attention_mask", "labels"}
    assert item["input_ids"][0] == CLS_ID and item["input_ids"][-1] == SEP_ID
    assert item["attention_mask"].tolist() == [1] * len(item["input_ids"])
    assert item["labels"].item() == 3


def test_second_load_reads_the_cache_not_the_tokenizer(tmp_path, tokenizer, monkeypatch):
    import distrinews.dataset as dataset_module

    calls = []
    real_pretokenize = dataset_module.pretokenize

    def counting(*args, **kwargs):
        calls.append(1)
        return real_pretokenize(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "pretokenize", counting)
    data = load_agnews(write_csv(tmp_path / "a.csv", ROWS))
    first = AGNewsDataset.from_data(data, tokenizer, max_length=32, cache_dir=tmp_path / "c")
    second = AGNewsDataset.from_data(data, tokenizer, max_length=32, cache_dir=tmp_path / "c")
    assert (first.cache_hit, second.cache_hit, len(calls)) == (False, True, 1)
    assert np.array_equal(first.ids, second.ids)
    # another max_length, or other data, is another key: a miss
    AGNewsDataset.from_data(data, tokenizer, max_length=16, cache_dir=tmp_path / "c")
    other = load_agnews(write_csv(tmp_path / "b.csv", ROWS[:3]))
    AGNewsDataset.from_data(other, tokenizer, max_length=32, cache_dir=tmp_path / "c")
    assert len(calls) == 3


def test_pretokenize_equals_the_tokenizer_call(agnews_csv, tokenizer):
    from distrinews.dataset import pretokenize

    texts = load_agnews(agnews_csv).texts[:500]
    ids, lengths = pretokenize(texts, tokenizer, max_length=64)
    expected = tokenizer(list(texts), truncation=True, max_length=64)["input_ids"]
    assert lengths.tolist() == [len(e) for e in expected]
    assert all(ids[i, : lengths[i]].tolist() == e for i, e in enumerate(expected))


def test_damaged_cache_is_rebuilt(tmp_path, tokenizer):
    data = load_agnews(write_csv(tmp_path / "a.csv", ROWS))
    AGNewsDataset.from_data(data, tokenizer, cache_dir=tmp_path / "c")
    (cache_file,) = (tmp_path / "c").glob("tokens-*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:40])  # truncated
    again = AGNewsDataset.from_data(data, tokenizer, cache_dir=tmp_path / "c")
    assert not again.cache_hit and len(again) == 4


def test_truncation_keeps_sep(tmp_path, tokenizer):
    ds = AGNewsDataset.from_data(
        load_agnews(write_csv(tmp_path / "a.csv", ROWS)), tokenizer, max_length=8
    )
    assert ds.lengths.max() == 8
    assert all(ds[i]["input_ids"][-1] == SEP_ID for i in range(len(ds)))


def test_vectorised_batch_equals_generic_collate():
    ds = AGNewsDataset.from_data(synthetic_agnews(300, seed=2), max_length=128)
    idx = [5, 17, 250, 3, 99]
    for pad_to in (None, 128):
        fast = ds.batch(idx, pad_to=pad_to)
        slow = collate([ds[i] for i in idx], pad_to=pad_to)
        for key in fast:
            assert torch.equal(fast[key], slow[key]), key
    dyn = ds.batch(idx)
    assert dyn["input_ids"].shape[1] % 8 == 0
    assert dyn["input_ids"].shape[1] - int(ds.lengths[idx].max()) < 8
    assert dyn["attention_mask"].sum(1).tolist() == ds.lengths[idx].tolist()


def test_dataloader_path_uses_collate():
    ds = AGNewsDataset.from_data(synthetic_agnews(64, seed=0), max_length=64)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 16 and batch["labels"].shape == (16,)


def test_clean_text():
    assert clean_text("a\\b #36;5 #38; c") == "a b $5 & c"


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            'label,title,description\n"3","ok","fine"\n"7","bad","label"\n',
            r"bad\.csv:3: label '7' is outside 1..4",
        ),
        ('label,title,description\n"3","",""\n', r"bad\.csv:2: missing text"),
        ('"2"\n', r"bad\.csv:1: expected 3 columns"),
        ("label,title,description\n", r"bad\.csv: no data rows"),
    ],
)
def test_bad_csv_rows_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_agnews(path)


def test_bad_jsonl_rows_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n{"text": "x", "label": 9}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: label 9 is not allowed"):
        load_agnews(path)
    path.write_text('{"text": "", "label": 1}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1: missing text"):
        load_agnews(path)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: invalid JSON"):
        load_agnews(path)


def test_bad_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    pd.DataFrame({"text": ["a"]}).to_parquet(path)
    with pytest.raises(DataError, match=r"missing column.*label"):
        load_agnews(path)
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read Parquet"):
        load_agnews(path)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing.csv", "missing.csv: data file not found"),
        ("wikipedia", "unknown data source 'wikipedia'; allowed: 'hub', 'synthetic'"),
        ("synthetic:zero", "synthetic size must be a positive integer"),
    ],
)
def test_bad_sources(source, message):
    with pytest.raises(DataError, match=message):
        load_agnews(source)


def test_empty_and_unsupported_files(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match=r"e\.csv: file is empty"):
        load_agnews(tmp_path / "e.csv")
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type '.xlsx'"):
        load_agnews(tmp_path / "d.xlsx")
