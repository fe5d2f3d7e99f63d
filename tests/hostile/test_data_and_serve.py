"""Issue 12, items 8, 12, 13 and 14: data files, vocabularies, the token cache, and serve."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from distrinews import dataset
from distrinews.checkpoint import CheckpointError, check_inference
from distrinews.dataset import AGNewsDataset, get_tokenizer, load_agnews
from distrinews.errors import DataError
from distrinews.serve import ServeLimits, create_app
from tests.hostile.conftest import assert_refused, invoke, snapshot
from tests.unit.test_serve import build_tiny_checkpoint, write_vocab

ROWS = ['3,"Wall St. Bears","Short-sellers see green."', '2,"Cup","Team wins."', "4,AI,Chips"]

# -- item 8: a UTF-8 BOM -------------------------------------------------------------------------


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("bom", [b"\xef\xbb\xbf", b""])
def test_csv_with_or_without_bom_and_header_loads_every_row(tmp_path, bom, header):
    path = tmp_path / "news.csv"
    lines = (["label,title,description"] if header else []) + ROWS
    path.write_bytes(bom + "\r\n".join(lines).encode() + b"\r\n")
    data = load_agnews(path)
    assert list(data.labels) == [2, 1, 3]
    assert data.texts[0] == "Wall St. Bears Short-sellers see green."


def test_jsonl_with_a_bom_loads_every_row(tmp_path):
    path = tmp_path / "news.jsonl"
    rows = [{"text": "a b", "label": 1}, {"text": "c", "label": "Sports"}]
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    assert list(load_agnews(path).labels) == [1, 1]


# -- item 12: hostile data and vocabularies ------------------------------------------------------

BIG = "x" * 10_000_000


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        (b'1,"ok","fine"\n2,"caf\xe9","latin-1"\n', 2, "not UTF-8"),
        (b'1,"ok","fine"\n1,"a","b"\n\xff\xfe\n', 3, "not UTF-8"),
        (f'1,"ok","fine"\n1,"{BIG}","b"\n'.encode(), 2, "field larger than field limit"),
        (b'1,"a","price #99999999; up"\n', 1, "names no Unicode character"),
        (b'1,"a","#1114112;"\n', 1, "names no Unicode character"),
        (b'1,"a","#55296; surrogate"\n', 1, "names no Unicode character"),
        (b'1,"a","#' + b"9" * 400 + b';"\n', 1, "names no Unicode character"),
        (b'1,"a","b"\n2\n', 2, "expected 3 columns"),
        (b'1,"a","b"\n7,"c","d"\n', 2, "outside 1..4"),
    ],
)
def test_hostile_csv_is_one_line_naming_file_and_line(tmp_path, content, line, needle):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=needle) as info:
        load_agnews(path)
    assert str(info.value).startswith(f"{path}:{line}:")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("line2", "needle"),
    [
        (b'{"text": "caf\xe9", "label": 1}', "not UTF-8"),
        (b'{"text": "' + BIG.encode() + b'", "label": 1}', "text of 10,000,000 characters"),
        (b'{"text": "#99999999;", "label": 1}', "names no Unicode character"),
        (b'{"text": "\\ud800", "label": 1}', "lone surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 64 levels"),
        (b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b', "label": 1}', "nested more than"),
        (b'{"text": "a", "label": NaN}', "NaN is not a JSON number"),
        (b'{"text": "a", "label": 1' + b"0" * 40 + b"}", "beyond 64 bits"),
        (b'{"text": ["a"], "label": 1}', "missing text"),
    ],
)
def test_hostile_jsonl_is_one_line_naming_file_and_line(tmp_path, line2, needle):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "fine", "label": 0}\n' + line2 + b"\n")
    with pytest.raises(DataError, match=needle) as info:
        load_agnews(path)
    assert str(info.value).startswith(f"{path}:2")
    assert len(str(info.value)) < 400


def test_hostile_data_through_the_cli_is_exit_2_and_one_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b'1,"ok","fine"\n2,"caf\xe9","x"\n')
    out = tmp_path / "run"
    result = invoke("train", "--data", path, "--tokenizer", "x.txt", "--out", out)
    assert_refused(result, f"{path}:2", "not UTF-8")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "vocab file is empty"),
        (b"\n  \n\n", "vocab file is empty"),
        (b"\x00\x01\x02binary\x00", "binary"),
        (b"[PAD]\n[UNK]\ncaf\xe9\n", "not UTF-8"),
        (bytes(range(256)) * 4, "binary"),
        (b"hello\nworld\n", "lacks [PAD], [UNK], [CLS], [SEP]"),
        (b"[PAD]\n[UNK]\n[CLS]\n", "lacks [SEP]"),
    ],
)
def test_hostile_vocab_is_one_line_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(needle)) as info:
        get_tokenizer(path)
    assert str(info.value).startswith(str(path))


# -- item 13: the token cache is validated, and rebuilt when it does not validate ----------------


@pytest.fixture
def small(tmp_path):
    tok = get_tokenizer(write_vocab(tmp_path / "vocab.txt"))
    path = tmp_path / "news.csv"
    path.write_text("\n".join(ROWS * 5) + "\n")
    return load_agnews(path), tok, tmp_path / "cache"


def _tamper(cache: Path, change) -> None:
    (file,) = cache.glob("tokens-*.npz")
    with np.load(file) as npz:
        ids, lengths = npz["ids"].copy(), npz["lengths"].copy()
    ids, lengths = change(ids, lengths)
    with open(file, "wb") as fh:
        np.savez(fh, ids=ids, lengths=lengths)


@pytest.mark.parametrize(
    "change",
    [
        lambda i, n: (np.where(i == i.max(), 10**6, i).astype(np.int32), n),  # id beyond vocab
        lambda i, n: (np.where(i == 0, -5, i).astype(np.int32), n),  # negative id
        lambda i, n: (i, n + 1),  # lengths past the width
        lambda i, n: (i, np.maximum(n - 2, 1)),  # tokens after a row's length
        lambda i, n: (i, np.zeros_like(n)),  # empty rows
        lambda i, n: (i.astype(np.float64), n),  # wrong dtype
        lambda i, n: (i[:, :, None], n),  # wrong shape
        lambda i, n: (np.pad(i, ((0, 0), (0, 500))), n),  # wider than max_length
    ],
)
def test_a_cache_that_does_not_validate_is_rebuilt(small, change):
    data, tok, cache = small
    fresh = AGNewsDataset.from_data(data, tok, max_length=64, cache_dir=cache)
    assert AGNewsDataset.from_data(data, tok, max_length=64, cache_dir=cache).cache_hit
    _tamper(cache, change)
    rebuilt = AGNewsDataset.from_data(data, tok, max_length=64, cache_dir=cache)
    assert not rebuilt.cache_hit
    assert np.array_equal(rebuilt.ids, fresh.ids)
    assert np.array_equal(rebuilt.lengths, fresh.lengths)
    assert AGNewsDataset.from_data(data, tok, max_length=64, cache_dir=cache).cache_hit


def test_a_cache_that_is_not_npz_is_rebuilt(small):
    data, tok, cache = small
    AGNewsDataset.from_data(data, tok, max_length=64, cache_dir=cache)
    (file,) = cache.glob("tokens-*.npz")
    file.write_bytes(b"\x80\x04 not an npz")
    assert not AGNewsDataset.from_data(data, tok, max_length=64, cache_dir=cache).cache_hit
    assert dataset.PAD_ID == 0


# -- item 14: serve refuses a checkpoint that cannot load ---------------------------------------


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("hostile-serve"))[0]


def _broken(good: Path, tmp_path: Path, edit) -> Path:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(good, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    edit(ckpt, cfg)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    return ckpt


def _rewrite_weights(ckpt: Path, cfg: dict, payload) -> None:
    from distrinews.dataset import file_sha256

    torch.save(payload, ckpt / "checkpoint.pt")
    cfg["checkpoint_bytes"] = (ckpt / "checkpoint.pt").stat().st_size
    cfg["checkpoint_sha256"] = file_sha256(ckpt / "checkpoint.pt")


def _set(path: str, value):
    def edit(_ckpt, cfg):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value

    return edit


def _drop_tokenizer(ckpt, _cfg):
    shutil.rmtree(ckpt / "tokenizer")


def _weights(payload):
    return lambda ckpt, cfg: _rewrite_weights(ckpt, cfg, payload)


def _wrong_shape(ckpt, cfg):
    state = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    key = next(k for k in state["model"] if k.endswith("weight"))
    state["model"][key] = torch.zeros(3, 3)
    _rewrite_weights(ckpt, cfg, state)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (_set("model_config.dim", 33), "bad model_config"),  # not divisible by n_heads
        (_set("model_config.n_heads", 0), "bad model_config"),
        (_set("model_config.n_layers", "six"), "bad model_config"),
        (_set("model_config.vocab_size", -1), "bad model_config"),
        (_set("model_config", [1, 2]), "field model_config"),
        (_set("step", [1]), "field step"),
        (_set("max_length", "64"), "field max_length"),
        (_set("max_length", 10**9), "field max_length"),
        (_set("labels", [1, 2, 3, 4]), "field labels"),
        (_set("tokenizer", "yes"), "field tokenizer"),
        (_drop_tokenizer, "tokenizer: missing"),
        (_weights([1, 2, 3]), "holds no model weights"),
        (_weights({"model": "weights"}), "holds no model weights"),
        (_weights({"model": {"x": torch.zeros(1)}}), "weights do not fit"),
        (_wrong_shape, "weights do not fit"),
    ],
)
def test_serve_refuses_to_start_on_a_checkpoint_that_cannot_load(good, tmp_path, edit, needle):
    ckpt = _broken(good, tmp_path, edit)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=needle):
        check_inference(ckpt)
    result = invoke("serve", "--checkpoint", ckpt, "--device", "cpu", "--port", "0")
    assert_refused(result, str(ckpt), needle)
    assert snapshot(tmp_path) == before


def test_weights_that_are_not_a_torch_file_refuse_before_serving(good, tmp_path):
    def garbage(ckpt, cfg):
        (ckpt / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a zip")
        cfg["checkpoint_bytes"] = (ckpt / "checkpoint.pt").stat().st_size
        from distrinews.dataset import file_sha256

        cfg["checkpoint_sha256"] = file_sha256(ckpt / "checkpoint.pt")

    ckpt = _broken(good, tmp_path, garbage)
    assert_refused(invoke("serve", "--checkpoint", ckpt, "--port", "0"), "checkpoint.pt")


def test_a_good_checkpoint_passes_the_preflight(good):
    assert check_inference(good) == good


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_a_chunked_body_is_cut_at_the_content_length_limit(good, size):
    limits = ServeLimits(max_texts=2, max_chars=10)
    app = create_app(good, device="cpu", limits=limits)
    over = limits.max_body_bytes + 1

    def chunks():
        sent = 0
        while sent < over:
            piece = b" " * min(size, over - sent)
            sent += len(piece)
            yield piece

    with TestClient(app) as client:
        assert app.state.service.done.wait(60)
        headers = {"content-type": "application/json"}
        response = client.post("/predict", content=chunks(), headers=headers)
        assert "content-length" not in {k.lower() for k in response.request.headers}
        assert response.status_code == 413
        assert "chunked body" in response.json()["detail"]
        assert f"{limits.max_body_bytes}-byte limit" in response.json()["detail"]
        # A chunked body within the limit is served.
        ok = json.dumps({"texts": ["bank"]}).encode()
        response = client.post("/predict", content=iter([ok[:5], ok[5:]]), headers=headers)
        assert response.status_code == 200
