"""Every interval the product prints covers what its label says, at 3, 5 and 10 repeats.

A simulation (harness.tools.coverage) draws many samples from noise shaped like the real CPU
rows (bimodal at 1 rank, left-skewed at 2) and from a log-normal, builds each interval, and
counts how often it holds the true median or ratio. A method passes when that share is within
simulation noise (3 standard errors) of the level it states -- or above it, for a level stated
as a lower bound. The planted twin: the percentile bootstrap the product printed as "95%"
before must fail the same check. Vectorised numpy: each test well under a second or two.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness import analysis, definitions, fmt
from harness.tools import coverage as C

REPS = 20000
SHAPES = tuple(C.SHAPES.values())


def honest(cell: C.Cell, *, exact: bool) -> bool:
    """The stated level holds: never more than 3 standard errors short; an exact level is also
    never more than 3 above (an interval labelled 75% that covers 99% is mislabelled too)."""
    return cell.shortfall < 3 and (not exact or cell.shortfall > -3)


@pytest.mark.parametrize("n", C.REPEATS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_median_interval_covers_exactly_what_it_states(shape, n):
    cell = C.median_cell(C.order_statistic, shape, n, REPS)
    assert honest(cell, exact=True), cell
    # The stated level is the exact binomial one: 75% at 3, 93.75% at 5, 97.85% at 10.
    assert cell.stated == pytest.approx({3: 0.75, 5: 0.9375, 10: 0.978515625}[n])


@pytest.mark.parametrize(
    "shape", [C.SHAPES["bimodal"], C.SHAPES["lognormal"]], ids=lambda s: s.name
)
def test_the_old_bootstrap_95_fails_the_same_check(shape):
    """The planted twin: the bootstrap interval the report printed as "95%" covers about 75%
    with 3 repeats, and the check above says so."""
    cell = C.median_cell(C.bootstrap_95, shape, 3, 3000)
    assert cell.stated == 0.95
    assert not honest(cell, exact=True)
    assert 0.70 < cell.covered < 0.80, cell


@pytest.mark.parametrize("n", C.REPEATS)
@pytest.mark.parametrize(
    "top, bottom",
    [("left-skewed", "bimodal"), ("bimodal", "bimodal"), ("lognormal", "lognormal")],
)
def test_ratio_interval_covers_at_least_its_stated_level(top, bottom, n):
    """Efficiency and speedup: the end-to-end interval's level is a lower bound, for any
    shapes -- the 2-rank/1-rank pair is the real CPU sweep's (different shapes)."""
    cell = C.ratio_cell(C.end_to_end, C.SHAPES[top], C.SHAPES[bottom], n, REPS)
    assert honest(cell, exact=False), cell
    assert cell.stated == pytest.approx(analysis.median_rank(n, math.sqrt(0.95))[1] ** 2)


def test_the_old_bootstrap_ratio_fails_at_three_repeats():
    cell = C.ratio_cell(C.bootstrap_ratio_95, C.SHAPES["left-skewed"], C.SHAPES["bimodal"], 3, 3000)
    assert not honest(cell, exact=False), cell


@pytest.mark.parametrize("n", C.REPEATS)
@pytest.mark.parametrize(
    "shape", [C.SHAPES["bimodal"], C.SHAPES["lognormal"]], ids=lambda s: s.name
)
def test_gate_shift_interval_is_exact_when_every_run_scales(shape, n):
    """The gate's change: a planted x0.8 of the same noise, Hodges-Lehmann/Moses."""
    cell = C.ratio_cell(C.shift, shape, shape, n, REPS, factor=0.8)
    assert honest(cell, exact=True), cell


def test_the_check_itself_can_fail_on_a_mislabelled_interval():
    """[min, max] of 3 runs labelled 95% (what the bootstrap amounted to) is caught, and so is
    [min, max] of 10 labelled 75% (too modest a label is not exact either)."""

    def minmax(level: float) -> C.Method:
        return lambda x: (x.min(axis=1), x.max(axis=1), np.full(len(x), level))

    bimodal = C.SHAPES["bimodal"]
    assert not honest(C.median_cell(minmax(0.95), bimodal, 3, REPS), exact=True)
    assert not honest(C.median_cell(minmax(0.75), bimodal, 10, REPS), exact=True)
    assert honest(C.median_cell(minmax(0.75), bimodal, 3, REPS), exact=True)


# -- the interval functions on hand-made data ------------------------------------------------


def test_median_rank_is_the_exact_binomial_interval():
    k1, level1 = analysis.median_rank(1)
    assert k1 == 0 and np.isnan(level1)  # one run: no interval
    assert analysis.median_rank(3) == (1, 0.75)
    assert analysis.median_rank(5) == (1, 0.9375)
    assert analysis.median_rank(6) == (1, 1 - 2 / 64)  # the first count that reaches 95%
    k, level = analysis.median_rank(10)
    assert (k, level) == (2, 1 - 2 * 11 / 1024)
    # k is the narrowest that still reaches 95%: one step narrower falls short.
    assert 1 - 2 * (1 + 10 + 45) / 1024 < 0.95


def test_median_interval_is_order_statistics_with_their_level():
    lo, hi, level = analysis.median_interval(
        [np.array([5.0, 1.0, 3.0]), np.arange(10.0)[::-1], np.array([7.0])]
    )
    assert (lo[0], hi[0], level[0]) == (1.0, 5.0, 0.75)
    assert (lo[1], hi[1]) == (1.0, 8.0)  # second smallest, second largest
    assert np.isnan([lo[2], hi[2], level[2]]).all()
    med, lo1, hi1, lev1 = analysis.median_ci([4.0, float("nan"), 2.0, 9.0])
    assert (med, lo1, hi1, lev1) == (4.0, 2.0, 9.0, 0.75)  # the NaN is left out


def test_ratio_interval_divides_the_ends_and_multiplies_the_levels():
    a, b = np.array([10.0, 12.0, 11.0]), np.array([4.0, 5.0, 6.0])
    lo, hi, level = analysis.ratio_interval([a], [b])
    assert (lo[0], hi[0]) == pytest.approx((10 / 6, 12 / 4))
    assert level[0] == pytest.approx(0.75**2)
    lo, hi, level = analysis.ratio_interval([a], [np.array([0.0, 1.0, 2.0])])
    assert np.isnan([lo[0], hi[0], level[0]]).all()  # a zero rate: no ratio interval


def test_shift_interval_reads_a_planted_slowdown_exactly():
    rng = np.random.default_rng(3)
    base = 400 * np.exp(rng.normal(0, 0.1, 5))
    est, lo, hi, level = analysis.shift_interval(base * 0.8, base)
    assert est == pytest.approx(0.8)
    assert lo < 0.8 < hi and level == pytest.approx(1 - 2 * 4 / 252)  # 5 vs 5: k = 3
    # Bimodal runs (the 1-rank CPU rows): one run landing in the other mode moves the ratio
    # of medians by 21%, the Hodges-Lehmann shift not at all.
    before = np.array([300.0, 305.0, 395.0, 400.0, 405.0])
    after = np.array([300.0, 305.0, 310.0, 400.0, 405.0])
    assert np.median(after) / np.median(before) == pytest.approx(310 / 395)
    assert analysis.shift_interval(after, before)[0] == pytest.approx(1.0)
    assert np.isnan(analysis.shift_interval(np.array([1.0]), np.array([2.0]))[1])


def test_shift_rank_uses_the_exact_mann_whitney_null():
    assert analysis.shift_rank(3, 3) == (1, pytest.approx(0.9))  # 2 of 20 orderings miss
    k, level = analysis.shift_rank(5, 5)
    counts = analysis.mann_whitney_null(5, 5)
    assert counts.sum() == math.comb(10, 5)
    assert level == pytest.approx(1 - 2 * counts[:k].sum() / 252)
    # Beyond the exact limit the normal approximation agrees closely with the exact answer.
    exact = 1 - 2 * np.cumsum(analysis.mann_whitney_null(30, 30))[:400] / math.comb(60, 30)
    k_big, level_big = analysis.shift_rank(31, 30)
    assert abs(level_big - 0.95) < 0.01 and k_big > 300
    assert exact[analysis.shift_rank(30, 30)[0] - 1] >= 0.95


def test_levels_are_spelled_rounded_down():
    assert fmt.level(0.75) == "75%"
    assert fmt.level(0.9375) == "93.7%"  # never rounded up to a level it does not reach
    assert fmt.level(0.9499999) == "94.9%"
    assert fmt.level(0.5625, at_least=True) == "≥ 56.2%"
    assert fmt.level(float("nan")) == ""
    assert fmt.levels([0.75, 0.9375, 0.75]) == "75-93.7%"
    assert fmt.bracket(0.1, 0.2, fmt.signed_pct, 0.968) == "[+10.0%, +20.0%] 96.8%"


def test_interval_note_says_how_many_repeats_reach_95():
    summary = analysis.per_configuration(
        analysis.frame_from_rows(
            [
                {"run_id": f"r{i}", "config_key": "k", "repeat": i, "status": "ok",
                 "samples_per_s": 100.0 + i}
                for i in range(3)
            ]
        )
    )  # fmt: skip
    assert summary.loc[0, "samples_per_s_level"] == 0.75
    note = fmt.interval_note(summary)
    assert note is not None
    assert "With 3 ok repeats" in note and "75%" in note and "56.2%" in note
    assert "6 repeats reach 95% for a point, 7 for a ratio" in note
    # Seven repeats reach 95% for every interval: nothing to warn about.
    seven = summary.assign(n_ok=7)
    assert fmt.interval_note(seven) is None


def test_the_definition_quotes_the_levels_the_code_computes():
    """docs/metrics.md and the report print harness.definitions: its numbers must be the
    code's, spelled as the labels spell them."""
    (text,) = [t for term, t in definitions.DEFINITIONS if term == "Repeats and intervals"]
    side = math.sqrt(0.95)
    for n in (3, 5, 10):
        assert fmt.level(analysis.median_rank(n)[1]) in text.replace("93.75%", "93.7%")
        assert fmt.level(analysis.median_rank(n, side)[1] ** 2) in text
    assert fmt.level(analysis.shift_rank(3, 3)[1]) in text
    assert fmt.level(analysis.shift_rank(5, 5)[1]) in text
    assert "below 6 repeats" in text and "7 repeats reach 95%" in text
    assert analysis.median_rank(5)[1] < 0.95 <= analysis.median_rank(6)[1]
    assert analysis.median_rank(6, side)[1] ** 2 < 0.95 <= analysis.median_rank(7, side)[1] ** 2
