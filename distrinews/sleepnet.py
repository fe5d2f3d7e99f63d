"""The ``synthetic-sleep`` network: sleeping layers with real parameters and gradients.

See :mod:`distrinews.synthetic` for why it exists and how its shape is written.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from .synthetic import SleepShape, numel, parse_shape


def burn(seconds: float) -> None:
    """Use ``seconds`` of this thread's CPU time (a busy loop on ``time.thread_time``)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class _Sleep(torch.autograd.Function):
    """Identity on the activations that sleeps (or burns CPU), and hands its parameter a real
    gradient."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, fwd_s: float, bwd_s: float,
                wait: Any = time.sleep):  # fmt: skip
        wait(fwd_s)
        ctx.bwd_s, ctx.wait = bwd_s, wait
        ctx.save_for_backward(weight)
        # A scalar read of the weight keeps the output tied to it (and costs nothing).
        return h + 0.0 * weight.view(-1)[0]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        ctx.wait(ctx.bwd_s)
        # A real, full-size gradient: what DDP all-reduces. Its value is irrelevant here.
        return grad, torch.full_like(weight, 1e-6), None, None, None


class SleepNet(nn.Module):
    """``forward(input_ids, attention_mask) -> logits (batch, 4)`` with sleeping layers."""

    def __init__(self, shape: SleepShape) -> None:
        super().__init__()
        self.shape = shape
        # Registered first, used first: its gradient comes last in backward (DDP's last bucket).
        self.embed = nn.Parameter(torch.zeros(numel(shape.embed_mb)))
        self.blocks = nn.ParameterList(
            nn.Parameter(torch.zeros(numel(shape.layer_mb))) for _ in range(shape.layers)
        )
        self.head = nn.Parameter(torch.zeros(4))
        # The worker reads dims for its FLOP count: this model does no matmuls.
        self.config = SimpleNamespace(dim=0, hidden_dim=0, n_layers=0)

    @classmethod
    def from_spec(cls, model: str) -> SleepNet:
        return cls(parse_shape(model))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        fwd_s, bwd_s = self.shape.fwd_ms / 1e3, self.shape.bwd_ms / 1e3
        wait = burn if self.shape.busy else time.sleep
        h = self.head.expand(input_ids.shape[0], 4)
        # The embedding's sleep is a tenth of a block's: like DistilBERT's cheap lookup.
        h = _Sleep.apply(h, self.embed, fwd_s / 10, bwd_s / 10, wait)
        for weight in self.blocks:
            h = _Sleep.apply(h, weight, fwd_s, bwd_s, wait)
        return h
