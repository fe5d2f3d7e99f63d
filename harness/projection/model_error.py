"""The model's own error, as one more uncertain input of every projection (model discrepancy).

Every other input of the step model carries its uncertainty: a measured spread or a stated
range. The model itself does not: it is a simplification (one ring or tree per NCCL's cost
model, readiness in proportion to parameters, a normal straggler, a few named overheads), and
real runs lose efficiency to things it does not name (DDP's graph walk with
``find_unused_parameters``, the host's PCIe and NUMA layout, an input pipeline, a busy network).
An interval that leaves that out is narrower than what the model knows: against 20 published
scaling tables it held the published value at the largest GPU count 10 times in 20 while
claiming 95%.

So the step's overhead beyond compute at N > 1 (contention + host + exposed all-reduce +
straggler, and the loader's floor) is multiplied by a factor drawn log-normally around 1,
``exp(σ·z)``. Draw 0, the point estimate, takes the factor's mean, exp(σ²/2) ≈ 1.1 (:func:`mean`):
a model that misses by a factor 2 misses low as often as high, and a doubled loss costs more than
a halved one gains, so the overhead to expect is the model's times that mean; with
every other input at its nominal value the point estimate stays deterministic (a mean over the
draws is not: with 2-3 repeats a measured input's Student-t draws have tails that a percentile
interval ignores and a mean does not). σ is measured, not chosen: the
spread of ``ln(published loss / predicted loss)`` (loss = 1 − efficiency, relative to each
case's base GPU count) over every published point of ``published.toml`` (:func:`estimate`,
the root mean square: a bias counts as error too). ``project --validate`` re-estimates σ
leaving each case out in turn and reports the coverage of those cross-validated intervals, so
the table never judges an interval that was fitted to it; ``tests/unit/test_projection.py``
holds :data:`SIGMA` to the table's estimate, so the constant cannot drift from its evidence
when the model or the table changes.

Losses under :data:`LOSS_FLOOR` count as the floor: a published efficiency of 100.9% (a
measurement's own noise; some published points sit above 100%) has no logarithm, and under a
point of loss the tables' noise is larger than the model's error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: σ of ln(published loss / predicted loss) over published.toml (every point above each case's
#: base count, with this module's factor off): :func:`estimate` of ``project --validate``'s
#: points. A factor of exp(±1.96·σ) = 0.42-2.4 on the overhead covers 95%.
SIGMA = 0.44
#: Losses below one point count as one point (see the module docstring).
LOSS_FLOOR = 0.01
SOURCE = (
    "model error: the overhead beyond compute x exp(σ z), σ = {sigma:.2f} = spread of "
    "ln(published loss / predicted loss) over the published scaling tables "
    "(harness/projection/published.toml; project --validate)"
)


def log_ratio(published: float, predicted: float) -> float:
    """ln(published loss / predicted loss), each loss (1 − efficiency) at least the floor."""
    return float(
        np.log(max(1.0 - published, LOSS_FLOOR)) - np.log(max(1.0 - predicted, LOSS_FLOOR))
    )


def estimate(ratios: Sequence[float]) -> float:
    """σ from log ratios (:func:`log_ratio`): their root mean square around 0, so a model that
    is biased (every ratio above 0) gets a σ that covers its bias, not only its scatter."""
    r = np.asarray([x for x in ratios if np.isfinite(x)], dtype=float)
    if r.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(r**2)))


def normals(n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """``1 + n_draws`` standard normals z, z[0] = 0 (draw 0's place; :func:`from_normals`)."""
    z = rng.standard_normal(n_draws + 1)
    z[0] = 0.0
    return z


def mean(sigma: float) -> float:
    """The mean of the factor exp(σ·z), z standard normal: exp(σ²/2)."""
    return float(np.exp(sigma**2 / 2))


def from_normals(sigma: float, z: np.ndarray) -> np.ndarray:
    """Factors for normals ``z`` (z[0] = 0, :func:`normals`): draw 0, the point estimate, the
    factor's mean; the others exp(σ·z)."""
    out = np.exp(sigma * np.asarray(z, dtype=float))
    out[0] = mean(sigma)
    return out


def factors(sigma: float, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """``1 + n_draws`` factors: draw 0 (the point estimate) the factor's mean, the rest
    exp(σ·z)."""
    return from_normals(sigma, normals(n_draws, rng))


def apply(step_s: np.ndarray, compute_s: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """The step with its overhead beyond compute scaled by ``factor`` (same shapes, or factor
    broadcast over the GPU counts' axis)."""
    return compute_s + (step_s - compute_s) * factor
