"""The training step and a short single-process fine-tuning loop.

A *step* is forward (logits), cross-entropy loss against the labels, backward (gradients),
optimizer update. This module holds the pieces the DDP worker builds on; it is importable and
testable without torchrun.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .dataset import AGNewsDataset, LengthGroupedBatchSampler
from .model import NewsClassifier


def train_step(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer
) -> torch.Tensor:
    """One optimizer step on one batch; returns the loss as a device tensor (no host sync)."""
    logits = model(batch["input_ids"], batch["attention_mask"])
    loss = F.cross_entropy(logits, batch["labels"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def evaluate(
    model: NewsClassifier,
    dataset: AGNewsDataset,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> float:
    """Accuracy (fraction of items whose highest logit is the true label)."""
    model.eval()
    correct = 0
    for start in range(0, len(dataset), batch_size):
        idx = range(start, min(start + batch_size, len(dataset)))
        batch = {k: v.to(device) for k, v in dataset.batch(list(idx)).items()}
        pred = model(batch["input_ids"], batch["attention_mask"]).argmax(dim=-1)
        correct += int((pred == batch["labels"]).sum())
    model.train()
    return correct / len(dataset)


@dataclass(frozen=True)
class FitResult:
    losses: tuple[float, ...]
    accuracy: float | None
    seconds: float


def fit(
    model: NewsClassifier,
    train: AGNewsDataset,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    heldout: AGNewsDataset | None = None,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> FitResult:
    """A short single-process fine-tuning run: ``steps`` length-grouped batches, then accuracy."""
    torch.manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    sampler = LengthGroupedBatchSampler(train.lengths, batch_size, seed=seed, drop_last=True)
    losses: list[float] = []
    start = time.perf_counter()
    for step, idx in enumerate(_cycle(sampler), start=1):
        batch = {k: v.to(device) for k, v in train.batch(idx).items()}
        loss = float(train_step(model, batch, optimizer))  # a host sync per step is fine here
        losses.append(loss)
        if on_step is not None:
            on_step(step, loss)
        if step >= steps:
            break
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, heldout, device=device) if heldout is not None else None
    return FitResult(tuple(losses), accuracy, seconds)


def _cycle(sampler: LengthGroupedBatchSampler) -> Iterable[list[int]]:
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from sampler
        epoch += 1
