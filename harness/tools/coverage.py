"""How often each interval the product prints holds the truth: a simulation, and its table.

    python -m harness.tools.coverage [--reps 20000]

Every interval carries a level ("75%", "96.8%", "≥ 87.8%": harness.analysis). This draws many
samples of the sizes sweeps use (3, 5 and 10 repeats) from noise shaped like real rows, builds
each interval, and counts how often it holds the true value -- the median of the distribution,
or the true ratio of two medians. A method is honest when that count reaches the level it
states. Shapes (tests/unit/test_intervals.py asserts on the same simulation):

- ``lognormal``: right-skewed multiplicative noise (sigma 0.15 in logs);
- ``bimodal``: like the 1-rank rows of results/baselines/cpu-smoke, where runs land near 308 or
  near 395 samples/s (a 40/60 mixture of two normals; the median sits in the upper mode);
- ``left-skewed``: like the 2-rank rows, 640 minus a log-normal gap (a few slow runs).

Methods: the order-statistic interval of a median and the end-to-end ratio of two of them
(what the report prints now), the Hodges-Lehmann/Moses shift interval (what the gate prints), and
the percentile bootstrap the product printed before as "95%" (kept here as the reference that
fails). Pure numpy apart from printing; seeded, so a table is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import click
import numpy as np

from harness import analysis

#: Repeat counts the sweep files use (h100 sweeps 3, cpu-smoke 5, a careful sweep 10).
REPEATS = (3, 5, 10)


@dataclass(frozen=True, kw_only=True)
class Shape:
    """A noise distribution with a known median."""

    name: str
    """Short name for tables."""
    draw: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
    """Positive values of the given shape."""
    median: float
    """The distribution's true median."""


def _mixture_median(weights: tuple[float, ...], means: tuple[float, ...], sds: tuple[float, ...]):
    """The median of a mixture of normals, by bisection on its CDF (erf)."""

    def cdf(x: float) -> float:
        return sum(
            w * 0.5 * (1 + math.erf((x - m) / (s * math.sqrt(2))))
            for w, m, s in zip(weights, means, sds, strict=True)
        )

    lo, hi = min(means) - 10 * max(sds), max(means) + 10 * max(sds)
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < 0.5 else (lo, mid)
    return (lo + hi) / 2


def _bimodal(rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    low = rng.random(size) < 0.4
    return np.where(low, rng.normal(308.0, 9.0, size), rng.normal(395.0, 13.0, size))


SHAPES = {
    "lognormal": Shape(
        name="lognormal",
        draw=lambda rng, size: 100.0 * np.exp(rng.normal(0.0, 0.15, size)),
        median=100.0,
    ),
    "bimodal": Shape(
        name="bimodal",
        draw=_bimodal,
        median=_mixture_median((0.4, 0.6), (308.0, 395.0), (9.0, 13.0)),
    ),
    "left-skewed": Shape(
        name="left-skewed",
        draw=lambda rng, size: 640.0 - np.exp(rng.normal(math.log(60.0), 0.4, size)),
        median=640.0 - 60.0,  # the gap's median is exp(log 60)
    ),
}

#: An interval method on R samples of n values: (lo, hi, stated level) per sample.
Method = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
#: The same for a ratio: R samples of the numerator's runs and of the denominator's.
RatioMethod = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def order_statistic(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The median interval the report prints now (harness.analysis.median_interval)."""
    return analysis.median_interval(list(x))


def bootstrap_95(x: np.ndarray, n_boot: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The interval printed before as "95%": percentiles 2.5 and 97.5 of bootstrap medians."""
    boot = analysis.bootstrap_medians(list(x), n_boot=n_boot, seed=1)
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=1)
    return lo, hi, np.full(len(x), 0.95)


def end_to_end(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ratio interval the report prints now (harness.analysis.ratio_interval)."""
    return analysis.ratio_interval(list(a), list(b))


def shift(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gate's change interval (harness.analysis.shift_intervals): Hodges-Lehmann/Moses."""
    _, lo, hi, level = analysis.shift_intervals(list(a), list(b))
    return lo, hi, level


def bootstrap_ratio_95(
    a: np.ndarray, b: np.ndarray, n_boot: int = 1000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ratio interval printed before as "95%": percentiles of bootstrap median ratios."""
    ratio = analysis.bootstrap_medians(list(a), n_boot=n_boot, seed=1) / analysis.bootstrap_medians(
        list(b), n_boot=n_boot, seed=2
    )
    lo, hi = np.percentile(ratio, [2.5, 97.5], axis=1)
    return lo, hi, np.full(len(a), 0.95)


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One method on one shape at one repeat count."""

    covered: float
    """Share of the simulated intervals that held the truth."""
    stated: float
    """The level the method states (its smallest, if it varies)."""
    reps: int
    """Simulated samples."""

    @property
    def shortfall(self) -> float:
        """How far the coverage falls below the stated level, in standard errors of the
        simulation (positive: short; about 3 or more: the level is not honest)."""
        se = math.sqrt(max(self.stated * (1 - self.stated), 1e-12) / self.reps)
        return (self.stated - self.covered) / se


def median_cell(method: Method, shape: Shape, n: int, reps: int, seed: int = 0) -> Cell:
    """Coverage of ``method``'s interval of the median of ``n`` runs drawn from ``shape``."""
    x = shape.draw(np.random.default_rng([seed, n]), (reps, n))
    lo, hi, stated = method(x)
    held = (lo <= shape.median) & (shape.median <= hi)
    return Cell(covered=float(held.mean()), stated=float(np.nanmin(stated)), reps=reps)


def ratio_cell(
    method: RatioMethod, top: Shape, bottom: Shape, n: int, reps: int, *, factor: float = 1.0,
    seed: int = 0,
) -> Cell:  # fmt: skip
    """Coverage of ``method``'s interval of median(top·factor)/median(bottom), n runs each."""
    rng = np.random.default_rng([seed, n, 1])
    a = factor * top.draw(rng, (reps, n))
    b = bottom.draw(rng, (reps, n))
    truth = factor * top.median / bottom.median
    lo, hi, stated = method(a, b)
    held = (lo <= truth) & (truth <= hi)
    return Cell(covered=float(held.mean()), stated=float(np.nanmin(stated)), reps=reps)


def table(reps: int) -> list[tuple[str, str, int, Cell]]:
    """(quantity and method, data shape, repeats, cell) for every combination in the report."""
    rows = []
    boot_reps = min(reps, 4000)  # the bootstrap is 1,000 resamples a sample: keep it affordable
    for n in REPEATS:
        for shape in SHAPES.values():
            rows.append(("median: bootstrap '95%' (before)", shape.name, n,
                         median_cell(bootstrap_95, shape, n, boot_reps)))  # fmt: skip
            rows.append(("median: order statistic (now)", shape.name, n,
                         median_cell(order_statistic, shape, n, reps)))  # fmt: skip
    pairs = (
        ("2-rank/1-rank rows", SHAPES["left-skewed"], SHAPES["bimodal"]),
        ("bimodal/bimodal", SHAPES["bimodal"], SHAPES["bimodal"]),
        ("lognormal/lognormal", SHAPES["lognormal"], SHAPES["lognormal"]),
    )
    for n in REPEATS:
        for name, top, bottom in pairs:
            rows.append(("ratio: bootstrap '95%' (before)", name, n,
                         ratio_cell(bootstrap_ratio_95, top, bottom, n, boot_reps)))  # fmt: skip
            rows.append(("ratio: end to end (now)", name, n,
                         ratio_cell(end_to_end, top, bottom, n, reps)))  # fmt: skip
    for n in REPEATS:
        for shape in (SHAPES["lognormal"], SHAPES["bimodal"]):
            # The gate's question: the same point, every run x0.8 (a planted 20% slowdown).
            name = f"{shape.name} x0.8 vs {shape.name}"
            rows.append(("gate change: bootstrap '95%' (before)", name, n,
                         ratio_cell(bootstrap_ratio_95, shape, shape, n, boot_reps,
                                    factor=0.8)))  # fmt: skip
            rows.append(("gate change: Hodges-Lehmann/Moses (now)", name, n,
                         ratio_cell(shift, shape, shape, n, reps, factor=0.8)))  # fmt: skip
    return rows


def markdown(rows: list[tuple[str, str, int, Cell]]) -> str:
    """The table as markdown: method, shape, repeats, stated level, coverage, verdict."""
    out = [
        "| interval | data shape | repeats | states | covers | honest? |",
        "|---|---|---|---|---|---|",
    ]
    for method, shape, n, cell in rows:
        bound = "≥ " if "end to end" in method else ""
        verdict = "yes" if cell.shortfall < 3 else "**no**"
        out.append(
            f"| {method} | {shape} | {n} | {bound}{cell.stated:.1%} | {cell.covered:.1%} | "
            f"{verdict} |"
        )
    return "\n".join(out)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--reps", type=click.IntRange(100, 10_000_000), default=20000, show_default=True)
def main(reps: int) -> None:
    """Print the coverage table (method x repeats x data shape) as markdown."""
    click.echo(markdown(table(reps)))


if __name__ == "__main__":
    main()
