"""``synthetic-sleep``: a model shape whose compute is a fixed sleep and whose gradients are real.

It exists to check the scaling projection on a small CPU machine. With real compute, several
ranks on two cores fight for the cores and the slowdown would swamp the communication the
projection is about. Here each layer's forward and backward *sleep* for a fixed time (the cores
stay free), while each layer owns a real parameter of a chosen size and produces a real
gradient for it, so DistributedDataParallel builds its real buckets, all-reduces them through
gloo over loopback and overlaps them with the (sleeping) backward exactly as it would with real
compute. Its results are labelled by the model name everywhere: never DistilBERT figures.

The spec is the RunSpec ``model`` string, e.g.
``synthetic-sleep:layers=6,layer_mb=2,embed_mb=6,fwd_ms=4,bwd_ms=8``:

- ``layers`` blocks, each with a parameter of ``layer_mb`` MiB (fp32) and a forward/backward
  sleep of ``fwd_ms``/``bwd_ms``;
- an "embedding" of ``embed_mb`` MiB registered first and used first in forward, so, as in
  DistilBERT, its gradient is produced last in backward and lands in DDP's last bucket;
- a 4-way head, so the usual cross-entropy training loop runs unchanged;
- ``busy=1`` (default 0): the layers *burn* their ``fwd_ms``/``bwd_ms`` as CPU time of the
  calling thread instead of sleeping. The work is then a known amount of CPU, whatever the
  machine's speed, and a competitor for the cores shows as waiting for a core: the stand-in
  for contention checks (harness/tools/why_checks.py, planted ``busy_cores``).

It does no arithmetic to speak of: its model FLOPs are zero. This module is the shape (no
torch import: RunSpec validates with it); the network itself is :mod:`distrinews.sleepnet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UserError

PREFIX = "synthetic-sleep"
MIB = 1024 * 1024


@dataclass(frozen=True)
class SleepShape:
    """The synthetic model's shape (see the module docstring)."""

    layers: int = 6
    layer_mb: float = 2.0
    embed_mb: float = 6.0
    fwd_ms: float = 4.0
    bwd_ms: float = 8.0
    busy: int = 0

    @property
    def grad_bytes(self) -> int:
        return 4 * (self.layers * numel(self.layer_mb) + numel(self.embed_mb) + 4)


def numel(mb: float) -> int:
    """fp32 elements in ``mb`` MiB (at least one)."""
    return max(1, int(mb * MIB) // 4)


def is_synthetic(model: str) -> bool:
    return model == PREFIX or model.startswith(PREFIX + ":")


def parse_shape(model: str) -> SleepShape:
    """``synthetic-sleep[:key=value,...]`` -> SleepShape; a bad key or value is a UserError."""
    if not is_synthetic(model):
        raise UserError(f"model {model!r} is not {PREFIX}[:key=value,...]")
    body = model[len(PREFIX) + 1 :]
    values: dict[str, Any] = {}
    fields = SleepShape.__dataclass_fields__
    for part in filter(None, body.split(",")):
        key, _, raw = part.partition("=")
        if key not in fields:
            raise UserError(f"model {model!r}: unknown key {key!r}; allowed: {', '.join(fields)}")
        try:
            value = int(raw) if key in ("layers", "busy") else float(raw)
        except ValueError:
            raise UserError(f"model {model!r}: {key} = {raw!r} is not a number") from None
        if not value == value or value < 0 or value == float("inf"):
            raise UserError(f"model {model!r}: {key} = {raw!r} must be a finite number >= 0")
        values[key] = value
    shape = SleepShape(**values)
    if shape.layers < 1 or shape.layer_mb <= 0 or shape.embed_mb <= 0:
        raise UserError(f"model {model!r}: layers >= 1 and sizes > 0 are required")
    if shape.busy not in (0, 1):
        raise UserError(f"model {model!r}: busy = {shape.busy} must be 0 (sleep) or 1 (burn)")
    return shape
