"""NewsClassifier: shapes, SDPA, the three ways to build it, and clear errors."""

from __future__ import annotations

import pytest
import torch

from distrinews.errors import UserError
from distrinews.model import LABELS, NUM_LABELS, SHAPES, NewsClassifier, build_config


def test_tiny_model_returns_batch_by_4_logits():
    model = NewsClassifier.from_config("tiny", seed=0)
    ids = torch.randint(1000, 30000, (3, 17))
    mask = torch.ones_like(ids)
    logits = model(ids, mask)
    assert logits.shape == (3, NUM_LABELS) == (3, 4)
    assert logits.dtype == torch.float32


def test_labels_are_the_four_ag_news_classes():
    assert LABELS == ("World", "Sports", "Business", "Sci/Tech")
    cfg = build_config("tiny")
    assert cfg.id2label == {0: "World", 1: "Sports", 2: "Business", 3: "Sci/Tech"}


def test_sdpa_attention_is_the_default():
    model = NewsClassifier.from_config("tiny")
    assert model.config._attn_implementation == "sdpa"


def test_base_shape_matches_distilbert_base_parameter_count():
    # distilbert-base-uncased has 66,362,880 encoder+embedding parameters; the 4-class head adds
    # pre_classifier (768*768+768) and classifier (768*4+4).
    model = NewsClassifier.from_config("base", seed=0)
    head = 768 * 768 + 768 + 768 * 4 + 4
    assert model.num_parameters() == 66_362_880 + head


def test_padding_is_ignored_through_attention_mask():
    model = NewsClassifier.from_config("tiny", seed=0).eval()
    ids = torch.randint(1000, 30000, (1, 10))
    short = model(ids, torch.ones_like(ids))
    padded_ids = torch.cat([ids, torch.zeros(1, 6, dtype=ids.dtype)], dim=1)
    padded_mask = torch.cat([torch.ones_like(ids), torch.zeros(1, 6, dtype=ids.dtype)], dim=1)
    padded = model(padded_ids, padded_mask)
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)


def test_same_seed_same_weights():
    a = NewsClassifier.from_config("tiny", seed=3).state_dict()
    b = NewsClassifier.from_config("tiny", seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_module_is_the_whole_classifier():
    model = NewsClassifier.from_config("tiny")
    assert model.ddp_module() is model


def test_pretrained_from_local_directory(tmp_path):
    src = NewsClassifier.from_config("tiny", seed=1)
    src.hf.save_pretrained(tmp_path / "m")
    loaded = NewsClassifier.from_pretrained(tmp_path / "m")
    ids = torch.randint(1000, 30000, (2, 9))
    torch.testing.assert_close(
        loaded.eval()(ids, torch.ones_like(ids)), src.eval()(ids, torch.ones_like(ids))
    )


def test_unreachable_hub_names_offline_alternatives():
    with pytest.raises(UserError, match="offline alternatives"):
        NewsClassifier.from_pretrained("no-such-org/no-such-model")


def test_unknown_shape_is_a_user_error():
    with pytest.raises(UserError, match="allowed: " + ", ".join(SHAPES)):
        NewsClassifier.from_config("huge")
