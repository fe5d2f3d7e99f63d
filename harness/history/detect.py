"""Change points in one series of nights: pure numpy, no store, no I/O.

A series is a list of *nights* in time order (one night = the runs of one sweep that measured
the series' configuration: its repeats). Software and machines change between sweeps, never
inside one, so a change point can only sit at a night boundary; and the runs of one night share
that session's conditions (what else ran on the box, its clocks, its thermal state), so they
may not be independent samples of the series -- a loaded box, another node, a throttled GPU
moves all of them together (on this 2-core box, sessions run beside other jobs strayed from
each other by 30%). Testing runs as if they were independent would call every such session a
change. So the detector works on one value per night, the mean of its runs' log values (a step
is a ratio; the mean, not the median, because this box's runs are bimodal and the median of
five flips between the modes), and its t-tests never assume a night value varies less than
its runs predict (:func:`run_floor`): where the nights scatter no more than their runs say, the
runs' own spread -- known with many more degrees of freedom -- is the noise.

The method (:func:`find_change_points`) is E-divisive means (Matteson & James, "A Nonparametric
Approach for Multiple Change Point Analysis of Multivariate Data", JASA 2014) with the
significance test and merge step of Hunter / Apache Otava (Fleming et al., "Hunter: Using
Change Point Detection to Hunt for Performance Regressions", ICPE 2023), which MongoDB and
DataStax run over their nightly performance tests:

1. **split**: in every segment between the change points found so far, the candidate is the
   split (tau, kappa) that maximises the energy statistic q-hat between ``y[start:tau]`` and
   ``y[tau:kappa]`` (:func:`best_split`); the best candidate over all segments is tested with a
   two-sided Student t-test between those two parts (kappa stops the second part before a
   later change would blur it) and kept when p <= 10 x ``max_pvalue`` (the "weak" pass),
   until a candidate fails;
2. **merge**: the weakest change point (largest p, recomputed against its neighbours' segments)
   is dropped while it fails ``max_pvalue``, so every change that remains is significant
   against the segments that finally surround it.

Why not a library: see docs/history.md (apache-otava and signal-processing-algorithms cannot be
installed beside this project's numpy; ruptures has no E-divisive and no significance test).

The size of a change (:func:`hodges_lehmann`) is the Hodges-Lehmann shift between the *runs*
on the two sides (the median of every after/before difference of log values), with a 95%
interval from a two-stage bootstrap that resamples nights, then runs inside each night, so
the interval is as wide as the night-to-night noise says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Default significance level of a change (Otava's default).
MAX_PVALUE = 0.001
#: Significance level of a change at a night where the software or hardware changed (a
#: *candidate*: torch, CUDA, NCCL, the driver, the GPUs). One test at a night named in advance,
#: not a search over every night, so it needs no correction for the search: a plain 1% test.
#: At most one false change per 100 upgrades of a series.
CANDIDATE_PVALUE = 0.01
#: The weak pass of the split step keeps candidates up to this multiple of ``max_pvalue``.
WEAK_FACTOR = 10.0
#: Nights on each side of a change whose runs the size estimate uses (the nearest ones).
SIZE_WINDOW_NIGHTS = 10
N_BOOT = 200


@dataclass(frozen=True, kw_only=True)
class ChangePoint:
    """A change at night ``index``: ``y[index]`` is the first night after it."""

    index: int
    """The first night of the new segment."""
    pvalue: float
    """Two-sided t-test between the segments on either side (night medians, log space)."""
    before: tuple[int, int]
    """[start, stop) of the nights in the segment before."""
    after: tuple[int, int]
    """[start, stop) of the nights in the segment after."""


# -- the energy statistic --------------------------------------------------------------------


def best_split(y: np.ndarray, start: int, stop: int) -> tuple[int, int, float]:
    """(tau, kappa, q-hat) of the best split of ``y[start:stop]``: ``y[start:tau]`` against
    ``y[tau:kappa]``; (-1, -1, -inf) when it cannot split.

    q-hat(tau, kappa) = m n / (m + n) * (2/(m n) S_xy - 2/(m (m-1)) S_xx - 2/(n (n-1)) S_yy)
    for X = y[start:tau] (m values) and Y = y[tau:kappa] (n values), S the sums of |a - b| over
    the pairs between or within them (a within-sum is 0 for one value). Every (tau, kappa) is
    evaluated at once from a 2-D prefix sum of the distance matrix: O(n^2) time and memory.
    """
    z = y[start:stop]
    n = len(z)
    if n < 2:
        return -1, -1, -math.inf
    dist = np.abs(z[:, None] - z[None, :])
    # P[i, j] = sum of dist[:i, :j]: a block's sum is four lookups.
    prefix = np.zeros((n + 1, n + 1))
    prefix[1:, 1:] = dist.cumsum(axis=0).cumsum(axis=1)

    def block(r0: np.ndarray, r1: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
        return prefix[r1, c1] - prefix[r0, c1] - prefix[r1, c0] + prefix[r0, c0]

    tau, kappa = np.triu_indices(n + 1, k=1)  # 0 <= tau < kappa <= n
    keep = tau >= 1
    tau, kappa = tau[keep], kappa[keep]
    m = tau.astype(float)
    k = (kappa - tau).astype(float)
    zero = np.zeros_like(tau)
    cross = block(zero, tau, tau, kappa)
    within_x = block(zero, tau, zero, tau) / 2.0  # each pair counted once
    within_y = block(tau, kappa, tau, kappa) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        term_x = np.where(m > 1, 2.0 * within_x / (m * (m - 1)), 0.0)
        term_y = np.where(k > 1, 2.0 * within_y / (k * (k - 1)), 0.0)
    q = m * k / (m + k) * (2.0 * cross / (m * k) - term_x - term_y)
    i = int(np.argmax(q))
    return start + int(tau[i]), start + int(kappa[i]), float(q[i])


# -- significance ----------------------------------------------------------------------------


def t_test(left: np.ndarray, right: np.ndarray) -> float:
    """Two-sided p of Student's two-sample t-test (pooled variance); 1.0 when undefined.

    One night on a side is allowed (the other side's spread stands in for it): that is how the
    newest sweep is judged against its history.
    """
    n1, n2 = len(left), len(right)
    df = n1 + n2 - 2
    if n1 == 0 or n2 == 0 or df <= 0:
        return 1.0
    diff = float(np.mean(right) - np.mean(left))
    ss = float(np.sum((left - np.mean(left)) ** 2) + np.sum((right - np.mean(right)) ** 2))
    scale = math.sqrt(ss / df * (1.0 / n1 + 1.0 / n2))
    if scale == 0.0:
        return 1.0 if diff == 0.0 else 0.0
    return student_t_two_sided(abs(diff) / scale, df)


def student_t_two_sided(t: float, df: float) -> float:
    """P(|T| >= t) for Student's t with ``df`` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    if not math.isfinite(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (continued fraction, modified Lentz;
    Numerical Recipes 6.4): accurate to ~1e-12 for the t-test's arguments."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def _beta_cf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


# -- split and merge -------------------------------------------------------------------------


def _segments(cuts: Sequence[int], n: int) -> list[tuple[int, int]]:
    bounds = [0, *cuts, n]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


class _Spans:
    """Mean and sum of squares of any span of ``y`` in O(1), from prefix sums (the split and
    merge steps test thousands of spans; numpy calls on tiny arrays would dominate)."""

    def __init__(self, y: np.ndarray, floor: tuple[float, float] | None = None) -> None:
        self.floor = floor
        z = y - y.mean()  # centred: the sums of squares lose nothing to cancellation
        self.s1 = [0.0, *np.cumsum(z).tolist()]
        self.s2 = [0.0, *np.cumsum(z * z).tolist()]

    def t_test(self, a: int, b: int, c: int, d: int) -> float:
        """:func:`t_test` of ``y[a:b]`` against ``y[c:d]``."""
        n1, n2 = b - a, d - c
        df = n1 + n2 - 2
        if n1 <= 0 or n2 <= 0 or df <= 0:
            return 1.0
        sum1, sum2 = self.s1[b] - self.s1[a], self.s1[d] - self.s1[c]
        ss = (self.s2[b] - self.s2[a] - sum1 * sum1 / n1) + (
            self.s2[d] - self.s2[c] - sum2 * sum2 / n2
        )
        diff = sum2 / n2 - sum1 / n1
        var = max(ss, 0.0) / df
        if self.floor is not None and self.floor[0] > var:
            # The nights scatter no more than their runs predict: no night effect shows, and
            # the runs' spread (estimated with many more degrees of freedom) is the noise.
            var, df = self.floor
        scale = math.sqrt(var * (1.0 / n1 + 1.0 / n2))
        if scale <= 1e-12 * max(1.0, abs(diff)):
            return 1.0 if diff == 0.0 else 0.0
        return student_t_two_sided(abs(diff) / scale, df)


def find_change_points(
    y: Sequence[float],
    *,
    max_pvalue: float = MAX_PVALUE,
    floor: tuple[float, float] | None = None,
    candidates: Sequence[int] = (),
    candidate_pvalue: float = CANDIDATE_PVALUE,
) -> list[ChangePoint]:
    """The change points of one series of night values (the mean of each night's log runs), in
    index order. ``floor`` = (variance, degrees of freedom): what the runs inside the nights
    say a night value's variance is (:func:`run_floor`); the t-tests never assume less.

    ``candidates``: nights whose software or hardware differs from the night before (an
    upgrade). The blind search must find a change among all nights, so it holds it to
    ``max_pvalue``; a change at a candidate was named before the data was looked at, so it is
    held to ``candidate_pvalue`` (one test, not a search). A blind change found one night
    from a candidate moves onto it (a 10% step in this box's noise is placed within a night,
    and the upgrade says which)."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n < 2:
        return []
    spans = _Spans(y, floor)
    weak = min(max_pvalue * WEAK_FACTOR, 0.5)
    cuts: list[int] = []
    while True:  # split: the best candidate of all segments, while it passes the weak level
        best = (-math.inf, -1, -1, 0)
        for s0, s1 in _segments(cuts, n):
            tau, kappa, q = best_split(y, s0, s1)
            if tau > 0 and q > best[0]:
                best = (q, tau, kappa, s0)
        _, tau, kappa, s0 = best
        if tau < 0 or spans.t_test(s0, tau, tau, kappa) > weak:
            break
        cuts = sorted([*cuts, tau])
    named: set[int] = set()  # cuts at candidates: held to candidate_pvalue
    for c in sorted({int(i) for i in candidates if 0 < int(i) < n}):
        near = [b for b in cuts if abs(b - c) <= 1 and b not in named]
        if near:  # the blind search found this change: it sits at the upgrade
            cuts = sorted({*(b for b in cuts if b != near[0]), c})
            named.add(c)
            continue
        s0, s1 = next(seg for seg in _segments(cuts, n) if seg[0] < c < seg[1])
        if spans.t_test(s0, c, c, s1) <= min(candidate_pvalue * WEAK_FACTOR, 0.5):
            cuts = sorted([*cuts, c])
            named.add(c)

    def pvalues() -> list[float]:
        segs = _segments(cuts, n)
        return [spans.t_test(*segs[i], *segs[i + 1]) for i in range(len(cuts))]

    def excess(p: list[float]) -> list[float]:
        # How far each cut's p-value is past its own level (named cuts have a looser one).
        return [
            pv / (candidate_pvalue if c in named else max_pvalue)
            for c, pv in zip(cuts, p, strict=True)
        ]

    while cuts:  # merge: drop the weakest cut while it fails its level
        ratio = excess(pvalues())
        worst = int(np.argmax(ratio))
        if ratio[worst] <= 1.0:
            break
        del cuts[worst]
    segs = _segments(cuts, n)
    return [
        ChangePoint(index=c, pvalue=p, before=segs[i], after=segs[i + 1])
        for i, (c, p) in enumerate(zip(cuts, pvalues(), strict=True))
    ]


def run_floor(nights: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """(variance, df) of a night's mean as its runs predict it: the pooled within-night variance
    of the runs over the typical night size (harmonic mean); None without two runs in a night."""
    sizes = np.array([len(v) for v in nights], dtype=float)
    df = float(np.sum(sizes - 1))
    if df < 1:
        return None
    ss = float(sum(np.sum((v - v.mean()) ** 2) for v in nights if len(v) > 1))
    k = len(sizes) / float(np.sum(1.0 / sizes))
    return (ss / df / k, df)


# -- the size of a change --------------------------------------------------------------------


def hodges_lehmann(
    before: Sequence[np.ndarray],
    after: Sequence[np.ndarray],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(shift, low, high): the Hodges-Lehmann shift of log values from ``before`` to
    ``after`` (each a list of nights, each an array of its runs' log values) and its interval.

    shift = median over all pairs of (after run - before run). The interval: two-stage
    bootstrap (nights with replacement, then runs with replacement inside each drawn night),
    percentile interval of the shift. NaN when a side has no run.
    """
    before = [np.asarray(n, dtype=float) for n in before if len(n)]
    after = [np.asarray(n, dtype=float) for n in after if len(n)]
    if not before or not after:
        return (math.nan, math.nan, math.nan)
    b_all, a_all = np.concatenate(before), np.concatenate(after)
    shift = float(np.median(a_all[:, None] - b_all[None, :]))
    rng = np.random.default_rng(seed)
    a_boot = _resample(after, rng, n_boot)  # (B, runs), NaN where a short night left a gap
    b_boot = _resample(before, rng, n_boot)
    diffs = (a_boot[:, :, None] - b_boot[:, None, :]).reshape(n_boot, -1)
    boots = _row_medians(diffs)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(boots, [tail, 100.0 - tail])
    return (shift, float(lo), float(hi))


def _resample(nights: Sequence[np.ndarray], rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """``n_boot`` two-stage resamples of a side at once: shape (n_boot, nights x longest).

    Each replicate draws as many nights as there are, with replacement, then each drawn
    night's runs with replacement from that night; shorter nights leave NaN in their tail.
    """
    longest = max(len(n) for n in nights)
    padded = np.full((len(nights), longest), np.nan)
    sizes = np.array([len(n) for n in nights])
    for i, n in enumerate(nights):
        padded[i, : len(n)] = n
    picked = rng.integers(0, len(nights), size=(n_boot, len(nights)))
    size = sizes[picked][:, :, None]
    runs = (rng.random((n_boot, len(nights), longest)) * size).astype(int)
    values = padded[picked[:, :, None], runs]
    values[np.arange(longest)[None, None, :] >= size] = np.nan
    return values.reshape(n_boot, -1)


def _row_medians(x: np.ndarray) -> np.ndarray:
    """The median of each row, ignoring NaN (rows of equal valid counts take a fast path)."""
    valid = np.isfinite(x).sum(axis=1)
    if (valid == x.shape[1]).all():
        return np.median(x, axis=1)
    x = np.sort(x, axis=1)  # NaN sorts last
    rows = np.arange(len(x))
    return (x[rows, (valid - 1) // 2] + x[rows, valid // 2]) / 2.0
