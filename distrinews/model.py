"""NewsClassifier: DistilBERT with a 4-way classification head for AG News.

DistilBERT is a 6-layer Transformer encoder (hidden size 768, 12 attention heads, ~66M
parameters) distilled from BERT-base: about 40% smaller and 60% faster while keeping most of
its accuracy, which makes it a realistic, quick-to-iterate fine-tuning workload. We put a small
classifier on top of its first ([CLS]) token and fine-tune the whole network.

AG News has four classes (World, Sports, Business, Sci/Tech), so the head outputs four
*logits*: raw, unnormalised scores, one per class. ``softmax(logits)`` turns them into
probabilities and ``cross_entropy(logits, labels)`` is the training loss; we keep the forward
pass returning logits because both training and serving start from them.

Why wrap the Hugging Face model instead of using it directly:
  * the forward returns a plain ``(batch, 4)`` tensor, not a ``ModelOutput`` dict, which keeps
    DDP, ``torch.compile`` and the serving code simple and identical;
  * one place decides the attention kernel (SDPA, PyTorch's fused scaled-dot-product
    attention, by default) and the label set;
  * one place builds the three kinds of model we need: pretrained weights (hub name or local
    directory), the full distilbert-base shape with random init (same compute as pretrained,
    no download: for throughput runs), and a tiny shape for tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import UserError
from .hub import hub_offline

if TYPE_CHECKING:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

# transformers is imported where a DistilBERT is built, not at module level: importing it costs
# about 2 s of CPU per process (it pulls in torch.distributed.tensor, dynamo, sympy), which every
# rank of a synthetic-model run (distrinews/synthetic.py, sleepnet.py) would pay for nothing.

LABELS: tuple[str, ...] = ("World", "Sports", "Business", "Sci/Tech")
NUM_LABELS = len(LABELS)
DEFAULT_PRETRAINED = "distilbert-base-uncased"
VOCAB_SIZE = 30522  # the uncased WordPiece vocab of distilbert-base-uncased / bert-base-uncased

#: Named shapes for random-init models. "base" is exactly distilbert-base-uncased's shape, so a
#: random-init "base" model does the same FLOPs as the pretrained one.
SHAPES: dict[str, dict[str, int]] = {
    "base": {"dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072},
    "tiny": {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},
}


def build_config(shape: str = "base", *, vocab_size: int = VOCAB_SIZE) -> DistilBertConfig:
    """A DistilBERT config of a named shape with a 4-class head."""
    from transformers import DistilBertConfig

    if shape not in SHAPES:
        raise UserError(f"unknown model shape {shape!r}; allowed: {', '.join(SHAPES)}")
    return DistilBertConfig(
        vocab_size=vocab_size,
        num_labels=NUM_LABELS,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
        **SHAPES[shape],
    )


class NewsClassifier(nn.Module):
    """DistilBERT + 4-class head. ``forward(input_ids, attention_mask) -> logits (batch, 4)``.

    Build it with :meth:`from_pretrained` (real fine-tuning) or :meth:`from_config`
    (random init, for throughput runs and tests).
    """

    def __init__(self, hf_model: DistilBertForSequenceClassification) -> None:
        super().__init__()
        if hf_model.config.num_labels != NUM_LABELS:
            raise UserError(
                f"model has {hf_model.config.num_labels} labels; NewsClassifier needs {NUM_LABELS}"
            )
        self.hf = hf_model

    @classmethod
    def from_config(
        cls,
        config: DistilBertConfig | str = "base",
        *,
        attn_implementation: str = "sdpa",
        seed: int | None = None,
    ) -> NewsClassifier:
        """Random-init model of a named shape ("base", "tiny") or a given DistilBertConfig."""
        from transformers import DistilBertForSequenceClassification

        if isinstance(config, str):
            config = build_config(config)
        if seed is not None:
            torch.manual_seed(seed)
        hf = DistilBertForSequenceClassification._from_config(
            config, attn_implementation=attn_implementation
        )
        return cls(hf)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path = DEFAULT_PRETRAINED, *, attn_implementation: str = "sdpa"
    ) -> NewsClassifier:
        """Pretrained encoder (hub name or local directory) with a freshly initialised head."""
        from transformers import DistilBertForSequenceClassification

        try:
            hf = DistilBertForSequenceClassification.from_pretrained(
                str(name_or_path),
                num_labels=NUM_LABELS,
                id2label=dict(enumerate(LABELS)),
                label2id={name: i for i, name in enumerate(LABELS)},
                attn_implementation=attn_implementation,
                local_files_only=hub_offline(),  # offline: the cache only, no minute of retries
            )
        except OSError as exc:
            raise UserError(
                f"cannot load pretrained model {str(name_or_path)!r} ({_first_line(exc)}); "
                "offline alternatives: a local directory saved with save_pretrained, "
                "or a random-init shape ('base', 'tiny')"
            ) from exc
        return cls(hf)

    @property
    def config(self) -> DistilBertConfig:
        return self.hf.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, 4)``.

        ``attention_mask`` is 1 for real tokens and 0 for padding, so attention ignores the pad
        positions a batch needs to be rectangular.
        """
        return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits

    def ddp_module(self) -> nn.Module:
        """The module to wrap in DistributedDataParallel (and to ``torch.compile``).

        It is the whole classifier: every parameter receives a gradient in every step, which is
        what lets DDP run with ``find_unused_parameters=False`` and ``static_graph=True``.
        """
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
