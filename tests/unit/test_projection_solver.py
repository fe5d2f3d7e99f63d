"""The SM-contention walk and the fits that invert it, held against slow plain definitions.

``model.contended_backward`` computes the contended schedule bucket by bucket from a closed
form; ``model.rising_root`` finds the hide window by Newton steps inside a bracket. Both are
fast rewrites of something simpler, so each is checked here against the simple thing on random
draws: a scalar event walk (one event at a time, as the schedule is defined) and a plain
bisection of 60 rounds (2^-60 of the bracket). The random draws include SM shares of 0, windows
of 0, readiness out of order, measurements at the exposure's floor and outside what the model
can produce (clamped).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.projection import model as mdl


def scalar_walk(times, window, ready, share) -> tuple[float, float]:
    """One draw, one event at a time: the next bucket ready (in order), backward done, or the
    all-reduce in flight done; backward runs at 1 - share[i] while all-reduce i is in flight."""
    k = len(times)
    targets = [window * r for r in ready] + [window]
    t = p = 0.0
    nxt = run = 0
    end = math.inf
    while True:
        rate = 1.0 - share[run] if end < math.inf else 1.0
        dt_ready = max(targets[nxt] - p, 0.0) / rate
        if dt_ready <= end - t:
            t, p = t + dt_ready, max(p, targets[nxt])
            if nxt == k:
                break
            nxt += 1
        else:
            p, t, run, end = p + rate * (end - t), end, run + 1, math.inf
        if end == math.inf and run < nxt:
            end = t + times[run]
    last = end + sum(times[run + 1 :]) if end < math.inf else t
    return t, max(last, t)


def bisect_fit(times, compute, exposed, ready, prior, share):
    """fit_hide_share's definition: the smallest window whose exposure is at most the measured
    one, by 60 rounds of bisection, then the floor and clamp rules."""
    full = compute
    lo, hi = np.zeros_like(full), full.copy()
    most = mdl.exposure(times, lo, ready, share)[0]
    least = mdl.exposure(times, hi, ready, share)[0]
    tol = 1e-9 + 1e-6 * np.abs(exposed)
    for _ in range(60):
        mid = (lo + hi) / 2
        too = mdl.exposure(times, mid, ready, share)[0] > exposed + tol
        lo, hi = np.where(too, mid, lo), np.where(too, hi, mid)
    fitted = hi / full
    floor = exposed <= least + tol
    fitted = np.where(~floor & (most <= exposed + tol), 0.0, fitted)
    fitted = np.where(floor, np.maximum(fitted, prior), fitted)
    clamped = (exposed < least - tol) | (exposed > most + tol)
    return np.where(exposed >= most + tol, 0.0, np.minimum(fitted, 1.0)), clamped


def random_case(rng, d: int, k: int, per_draw_ready: bool):
    times = rng.uniform(0.0, 0.01, (d, k)) * (rng.uniform(size=(d, k)) < 0.9)
    ready = rng.uniform(0.0, 1.0, (d, k) if per_draw_ready else k)
    if rng.uniform() < 0.7:  # mostly in order, as DDP fills them; sometimes not
        ready = np.sort(ready, axis=-1)
    share = rng.uniform(0.0, 0.6, (d, k)) * (rng.uniform(size=(d, k)) < 0.8)
    share[: d // 4] = 0.0  # draws without SM contention
    return times, ready, share


def test_the_bucket_by_bucket_walk_matches_the_scalar_event_walk():
    rng = np.random.default_rng(11)
    for trial in range(60):
        k = int(rng.integers(1, 9))
        times, ready, share = random_case(rng, 12, k, per_draw_ready=trial % 2 == 1)
        window = rng.uniform(0.0, 0.05, 12) * (rng.uniform(size=12) < 0.9)
        back, last = mdl.contended_backward(times, window, ready, share)
        for i in range(12):
            r = ready[i] if ready.ndim == 2 else ready
            want = scalar_walk(times[i], window[i], r, share[i])
            assert (back[i], last[i]) == pytest.approx(want, rel=1e-12, abs=1e-15)
    # A queue: all-reduces far slower than backward, most buckets waiting on the network
    # (the intervals that have not started yet are skipped, and must not be missed).
    times = rng.uniform(0.5e-3, 1.5e-3, (12, 40))
    window = rng.uniform(2e-3, 8e-3, 12)
    ready, share = np.linspace(0.0, 1.0, 40), rng.uniform(0.0, 0.5, (12, 40))
    back, last = mdl.contended_backward(times, window, ready, share)
    for i in range(12):
        want = scalar_walk(times[i], window[i], ready, share[i])
        assert (back[i], last[i]) == pytest.approx(want, rel=1e-12, abs=1e-15)
    # A planted wrong walk (no slowdown at all) fails the same comparison.
    times, ready, share = random_case(rng, 12, 4, per_draw_ready=False)
    share[:] = 0.3
    window = np.full(12, 0.02)
    back, _ = mdl.contended_backward(times, window, ready, np.zeros_like(share))
    assert any(
        abs(back[i] - scalar_walk(times[i], window[i], ready, share[i])[0]) > 1e-6
        for i in range(12)
    )


def test_the_walks_slopes_are_its_derivatives_by_the_window():
    rng = np.random.default_rng(5)
    for _ in range(30):
        k = int(rng.integers(1, 7))
        times, ready, share = random_case(rng, 40, k, per_draw_ready=False)
        window = rng.uniform(0.001, 0.05, 40)
        back, last, d_back, d_last = mdl.contended_backward(times, window, ready, share, True)
        h = 1e-7 * window
        back2, last2 = mdl.contended_backward(times, window + h, ready, share)
        # The right derivative (the side Newton steps towards), exact on a linear piece; a
        # kink within h of the window may differ, and is rare.
        ok = np.isclose((back2 - back) / h, d_back, rtol=1e-5, atol=1e-7) & np.isclose(
            (last2 - last) / h, d_last, rtol=1e-5, atol=1e-7
        )
        assert ok.mean() >= 0.95


@pytest.mark.parametrize("per_draw_ready", [False, True])
def test_the_fast_fit_agrees_with_plain_bisection(per_draw_ready):
    rng = np.random.default_rng(3 + per_draw_ready)
    seen = {"floor": 0, "clamped": 0, "share 0": 0, "inside": 0}
    for _ in range(15):
        d, k = 60, int(rng.integers(1, 7))
        times, ready, share = random_case(rng, d, k, per_draw_ready)
        compute = rng.uniform(0.01, 0.1, d)
        most = mdl.exposure(times, np.zeros(d), ready, share)[0]
        least = mdl.exposure(times, compute, ready, share)[0]
        # Exposures across the model's whole range, and past both of its ends.
        exposed = least + rng.uniform(-0.3, 1.3, d) * (most - least)
        exposed[:5] = least[:5]  # at the floor exactly
        for s in (share, None):
            fast, fast_clamped = mdl.fit_hide_share(times, compute, 1, exposed, ready, 0.5, s)
            slow, slow_clamped = bisect_fit(times, compute, exposed, ready, 0.5, s)
            assert fast == pytest.approx(slow, abs=1e-6)
            assert (fast_clamped == slow_clamped).all()
            tol = 1e-9 + 1e-6 * exposed
            seen["floor"] += int(np.sum(exposed <= least + tol))
            seen["clamped"] += int(np.sum(slow_clamped))
            seen["share 0"] += int(np.sum(slow == 0.0))
            seen["inside"] += int(np.sum((slow > 0) & (slow < 1) & ~slow_clamped))
    assert all(v > 20 for v in seen.values()), seen


def test_the_fast_window_from_backward_agrees_with_plain_bisection():
    rng = np.random.default_rng(8)
    for _ in range(15):
        d, k = 60, int(rng.integers(1, 7))
        times, ready, share = random_case(rng, d, k, per_draw_ready=False)
        backward = rng.uniform(0.0, 0.05, d)
        backward[:3] = 0.0
        fast = mdl.window_from_backward(times, backward, ready, share)
        lo, hi = np.zeros(d), backward.copy()
        for _ in range(60):
            mid = (lo + hi) / 2
            long = mdl.contended_backward(times, mid, ready, share)[0] > backward
            lo, hi = np.where(long, lo, mid), np.where(long, mid, hi)
        assert fast == pytest.approx((lo + hi) / 2, rel=1e-6, abs=1e-12)
        # And the window found runs, contended, as long as the measured backward.
        back = mdl.contended_backward(times, fast, ready, share)[0]
        assert back == pytest.approx(backward, rel=1e-6, abs=1e-12)


def test_rising_root_is_exact_on_a_kink_and_never_slower_than_twice_bisection():
    # A steep fall onto a floor (the shape of exposure against the window): g rises, then is
    # flat; the crossing just before the kink, where false position crawls.
    calls = []

    def g(x, rows):
        calls.append(rows.size)
        return np.minimum(x - 0.3, 1e-9), np.where(x < 0.3 + 1e-9, 1.0, 0.0)

    lo, hi = np.zeros(3), np.ones(3)
    x = mdl.rising_root(g, lo, hi, g(lo, np.arange(3))[0], g(hi, np.arange(3))[0],
                        np.full(3, 1e-12))  # fmt: skip
    assert x == pytest.approx(0.3, abs=1e-12)
    assert len(calls) - 2 <= 45  # bisection: 40 rounds for 2^-40
    # Rows whose bracket does not hold a crossing give its ends.
    x = mdl.rising_root(g, np.array([0.5]), np.array([1.0]), np.array([1e-9]), np.array([1e-9]),
                        np.array([1e-12]))  # fmt: skip
    assert x.tolist() == [0.5]
