"""Checkpoints: atomic layout, inference loading, and clear errors for bad files."""

from __future__ import annotations

import json

import pytest
import torch

from distrinews import files
from distrinews.checkpoint import (
    CheckpointError,
    TrainingState,
    latest_checkpoint,
    list_checkpoints,
    load_for_inference,
    load_training_state,
    rng_state,
    save_checkpoint,
)
from distrinews.errors import UserError
from distrinews.model import LABELS, NewsClassifier

CPU = torch.device("cpu")


def _save(out, model, step, *, tokenizer=None, optimizer=None, keep_last=2):
    return save_checkpoint(
        out,
        model=model,
        optimizer=optimizer,
        scaler=None,
        state=TrainingState(step=step, epoch=0, batch_in_epoch=step),
        rank_rng=[rng_state(CPU)],
        max_length=64,
        tokenizer=tokenizer,
        meta={"data": "test"},
        keep_last=keep_last,
    )


def test_save_then_load_for_inference_gives_the_same_logits(tmp_path, tokenizer):
    model = NewsClassifier.from_config("tiny", seed=1).eval()
    ckpt = _save(tmp_path, model, 3, tokenizer=tokenizer)
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint.pt", "config.json", "tokenizer"]
    bundle = load_for_inference(tmp_path)  # a training output dir resolves to its latest
    assert bundle.labels == LABELS and bundle.max_length == 64 and bundle.meta["step"] == 3
    assert not bundle.model.training
    enc = bundle.tokenizer(["Stocks rally as oil falls"], return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    torch.testing.assert_close(bundle.model(ids, mask), model(ids, mask), rtol=0, atol=0)
    assert ids[0, 0].item() == 101  # the saved tokenizer is the real uncased WordPiece one
    # Folders and files get the umask's ordinary mode (mkdtemp would leave the folder 0700).
    umask = files.umask()
    for path in [ckpt, *ckpt.rglob("*")]:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == want, (path.name, oct(path.stat().st_mode))


def test_latest_and_retention(tmp_path):
    model = NewsClassifier.from_config("tiny", seed=0)
    for step in (2, 4, 6):
        _save(tmp_path, model, step)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004", "step-00000006"]
    assert latest_checkpoint(tmp_path).name == "step-00000006"
    # a leftover temp dir from a killed save is ignored
    (tmp_path / "checkpoints" / ".tmp-step-00000008-x").mkdir()
    assert load_for_inference(tmp_path).meta["step"] == 6
    assert load_for_inference(tmp_path).tokenizer is None


def test_truncated_file_is_a_clear_error_and_nothing_is_modified(tmp_path):
    model = NewsClassifier.from_config("tiny", seed=0)
    opt = torch.optim.AdamW(model.parameters())
    ckpt = _save(tmp_path, model, 5, optimizer=opt)
    weights = ckpt / "checkpoint.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_for_inference(ckpt)
    fresh = NewsClassifier.from_config("tiny", seed=7)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match="truncated"):
        load_training_state(
            ckpt, model=fresh, optimizer=None, scaler=None, rank=0, world_size=1, device=CPU
        )
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, before[k]), k
    # same size, flipped bytes: caught by the checksum
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_for_inference(ckpt)
    assert issubclass(CheckpointError, UserError)


def test_other_model_shape_is_a_clear_error(tmp_path):
    _save(tmp_path, NewsClassifier.from_config("tiny", seed=0), 1)
    from distrinews.model import build_config

    cfg = build_config("tiny")
    cfg.dim, cfg.hidden_dim = 64, 128
    other = NewsClassifier.from_config(cfg)
    with pytest.raises(CheckpointError, match=r"another model shape .*dim 32 vs 64"):
        load_training_state(
            tmp_path, model=other, optimizer=None, scaler=None, rank=0, world_size=1, device=CPU
        )


def test_bad_paths(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_for_inference(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_for_inference(tmp_path)
    ckpt = _save(tmp_path / "run", NewsClassifier.from_config("tiny"), 1)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_for_inference(ckpt)
    (ckpt / "config.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_for_inference(ckpt)


def test_world_size_mismatch_refuses_resume(tmp_path):
    model = NewsClassifier.from_config("tiny", seed=0)
    _save(tmp_path, model, 1)
    with pytest.raises(CheckpointError, match="same world size"):
        load_training_state(
            tmp_path, model=model, optimizer=None, scaler=None, rank=0, world_size=2, device=CPU
        )
