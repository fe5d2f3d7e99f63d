"""The DDP step model: a training step at N GPUs, for thousands of draws of its inputs at once.

Pure numpy, no I/O. Every input is an array of *draws* (draw 0 is the point estimate, the others
sample each input's uncertainty), so one call gives the prediction and its interval.

**The step.** Under DistributedDataParallel a step at N GPUs takes

    step(N) = compute(N) + contention(N) + host(N) + exposed_comm(N) + straggler(N),
              and at least the loader's

- ``compute``: the compute-only step (forward, backward, optimizer; no all-reduce). Weak scaling
  keeps it; strong scaling divides the per-sample part by N (``fixed_s`` stays: the optimizer
  step and whatever does not shrink with the batch).
- ``host``: per-step cost of synchronising that exists only at N > 1 and is not the all-reduce
  (DDP's autograd hooks, bucket copies, stream waits; measured from a sweep as exposure no
  all-reduce explains, else a stated range plus, on GPUs, DDP's bucket copies through HBM:
  :func:`ddp_copy_s`).
- ``exposed_comm``: the part of the gradient all-reduce backward could not hide. DDP cuts the
  gradient into *buckets* (bucket 0 ready first in backward) and all-reduces each as soon as it
  is ready, one after another on one stream. Bucket i is ready at ``ready[i]`` of the hide
  window (the last micro-step's backward); exposed = end of the last all-reduce − end of
  backward. Each all-reduce costs what NCCL's model says for its size at N
  (:mod:`harness.projection.nccl`), its bandwidth scaled by the link's efficiency draw — or, for a
  link measured on a host NCCL's model does not describe (gloo), a ring with the measured
  latency per step and bus bandwidth.
- ``contention`` (SM and HBM contention): a hidden all-reduce is not free. NCCL runs one CTA
  per channel and each holds an SM alone (:mod:`harness.projection.nccl`, ``launched_ctas``),
  and it streams 2-3x its bus bandwidth through HBM, so while an all-reduce is in flight beside
  backward, backward runs on the SMs and the memory bandwidth left: at (1 − s) of its speed,
  s = k_sm x CTAs / SMs + k_hbm x bus bandwidth / HBM bandwidth (:func:`contention_share`;
  :func:`contended_backward`: the per-bucket schedule, exactly, bucket by bucket). It is the
  time backward ends later than its window; the exposure is then measured from that later
  end, so an all-reduce that was exposed anyway absorbs part of it. 0 where no SMs are
  involved (a measured gloo ring on CPUs).
- ``straggler``: every step waits for the slowest of N ranks. With a rank's step time varying
  with coefficient of variation σ (normal), the expected wait of the typical rank (the lower
  median) is compute · σ · :func:`gap_mean` (N): the mean gap between the largest and the lower
  median of N standard normals. :func:`gap_median` is the *median* of that gap over steps — the
  statistic the worker records as ``straggler_wait_s`` — so σ estimated from it divides by
  gap_median, not by gap_mean (one statistic on both sides; mixing them under-stated σ by ~19%
  at N = 2).
- the loader: a node's input pipeline delivers at most ``loader_samples_per_s``; a step is never
  shorter than the node's samples over that rate.
- the model's own error: at N > 1 everything beyond compute is multiplied by a drawn factor
  (``model_error``; its mean, exp(σ²/2), in draw 0), so the point estimate and the interval
  carry how far this model misses published runs (:mod:`harness.projection.model_error`).

**Readiness** (when each bucket may start): measured by the worker (``ready_s`` per bucket over
``backward_time_s``), else an assumption the output prints: :func:`ready_by_bytes` (reverse layer
order, compute in proportion to parameters: bucket i ready once the bytes of buckets 0..i are
produced) or :func:`ready_embedding_last` (the same, but the last bucket — DistilBERT's word
embeddings, whose backward costs nothing — ready only when backward ends).

**Communication hooks** change the bytes on the wire (``wire_share``): fp16/bf16 halve them;
PowerSGD of rank r sends r·(m+n) numbers instead of m·n per matrix (two all-reduces per bucket).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.projection import model_error, nccl
from harness.projection.fabrics import MAX_SM_SHARE, Fabric

#: Share of a compute step that backward spans when nothing better is known: backward does
#: about twice the forward's FLOPs (C ≈ 6·params·tokens: 2 forward, 4 backward; Kaplan et al.
#: 2020, "Scaling Laws for Neural Language Models"), and the optimizer step is small.
DEFAULT_HIDE_SHARE = 2.0 / 3.0
#: DDP's defaults: the first bucket is capped at 1 MiB, the others at bucket_cap_mb MiB
#: (torch.distributed._DEFAULT_FIRST_BUCKET_BYTES; DistributedDataParallel(bucket_cap_mb=25)).
FIRST_BUCKET_BYTES = 1024 * 1024
MIB = 1024 * 1024


# -- order statistics of the straggler ------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _order_mean(n: int, k: int) -> float:
    """E[X_(k)] of n standard normals (k = 1 smallest, n largest), by integration."""
    if n == 1:
        return 0.0
    x = np.linspace(-12.0, 12.0, 6001)
    erfc = np.vectorize(math.erfc)
    upper = 0.5 * erfc(x / math.sqrt(2.0))  # 1 - Φ(x), accurate in the right tail
    lower = 0.5 * erfc(-x / math.sqrt(2.0))  # Φ(x), accurate in the left tail
    with np.errstate(divide="ignore"):
        log_pdf = (
            math.lgamma(n + 1) - math.lgamma(k) - math.lgamma(n - k + 1)
            + (k - 1) * np.log(lower) + (n - k) * np.log(upper)
            - 0.5 * x * x - 0.5 * math.log(2 * math.pi)
        )  # fmt: skip
    pdf = np.exp(log_pdf)
    return float(np.trapezoid(x * pdf, x))


def _lower_median_rank(n: int) -> int:
    return (n - 1) // 2 + 1


def gap_mean(n: int) -> float:
    """E[max − lower median] of n standard normals (0 at n = 1): exact, by integration.

    n = 2: 2/√π = 1.128; n = 8: 1.58; n = 1024: 3.2 (it grows like √(2 ln n)).
    """
    n = int(n)
    if n <= 1:
        return 0.0
    return _order_mean(n, n) - _order_mean(n, _lower_median_rank(n))


@functools.lru_cache(maxsize=256)
def gap_median(n: int) -> float:
    """The median over steps of (max − lower median) of n standard normals (0 at n = 1).

    This is the statistic the worker records (``straggler_wait_s``: per step, slowest minus the
    typical rank; median over steps). No closed form: a seeded simulation of 200,000 steps
    (deterministic; standard error under 0.3%). n = 2: 0.95 (the median of |Z1 − Z2| =
    √2 · 0.674), against a mean of 1.128.
    """
    n = int(n)
    if n <= 1:
        return 0.0
    rng = np.random.default_rng([20260611, n])
    steps = 200_000 if n <= 64 else max(2_000, 12_800_000 // n)
    gaps = []
    chunk = max(1, 4_000_000 // n)
    done = 0
    k = _lower_median_rank(n) - 1
    while done < steps:
        m = min(chunk, steps - done)
        z = rng.standard_normal((m, n))
        z.sort(axis=1)
        gaps.append(z[:, -1] - z[:, k])
        done += m
    return float(np.median(np.concatenate(gaps)))


def gap_means(gpus: np.ndarray) -> np.ndarray:
    return np.array([gap_mean(int(g)) for g in np.atleast_1d(gpus)], dtype=float)


def straggler_s(compute_s: np.ndarray, jitter: np.ndarray | float, gpus: np.ndarray) -> np.ndarray:
    """Expected wait for the slowest of N ranks: compute · σ · gap_mean(N) (0 at N = 1)."""
    return np.asarray(compute_s) * np.asarray(jitter) * gap_means(gpus)


def jitter_from_wait(wait_s: np.ndarray, compute_s: np.ndarray, gpus: int) -> np.ndarray:
    """σ (a rank's step-time coefficient of variation) from the worker's median straggler wait
    at ``gpus`` ranks: wait / (compute · gap_median(N)) — the median on both sides."""
    m = gap_median(gpus)
    if m <= 0:
        return np.zeros(np.shape(wait_s))
    return np.asarray(wait_s, dtype=float) / (np.asarray(compute_s, dtype=float) * m)


# -- readiness and overlap ------------------------------------------------------------------


def ready_by_bytes(bucket_bytes: Sequence[float]) -> np.ndarray:
    """Bucket i ready once buckets 0..i are produced, compute in proportion to their bytes."""
    b = np.asarray(bucket_bytes, dtype=float)
    if b.size == 0:
        return b
    return np.cumsum(b) / b.sum()


def ready_embedding_last(bucket_bytes: Sequence[float]) -> np.ndarray:
    """As :func:`ready_by_bytes` over all but the last bucket, which is ready at the end of
    backward (an embedding gradient: the first parameters, no backward compute of their own)."""
    b = np.asarray(bucket_bytes, dtype=float)
    if b.size <= 1:
        return np.ones(b.size)
    head = np.cumsum(b[:-1])
    return np.append(head / head[-1], 1.0)


def exposed_comm_s(bucket_times: np.ndarray, window_s: np.ndarray, ready: np.ndarray) -> np.ndarray:
    """All-reduce time backward did not hide: buckets all-reduced one after another.

    ``bucket_times`` (..., K); ``window_s`` broadcastable to (...): the hide window (the last
    micro-step's backward); ``ready`` (K,) or (..., K): when each bucket is ready, as a share of
    the window. Bucket i starts when it is ready and the previous one is done.
    """
    window = np.asarray(window_s, dtype=float)
    ready = np.asarray(ready, dtype=float)
    end = np.zeros(np.broadcast_shapes(bucket_times.shape[:-1], window.shape))
    for i in range(bucket_times.shape[-1]):
        end = np.maximum(end, window * ready[..., i]) + bucket_times[..., i]
    return np.maximum(end - window, 0.0)


def contended_backward(
    bucket_times: np.ndarray,
    window_s: np.ndarray,
    ready: np.ndarray,
    share: np.ndarray,
    slopes: bool = False,
) -> tuple[np.ndarray, ...]:
    """When backward and the all-reduces end when compute slows while an all-reduce runs.

    As :func:`exposed_comm_s` (buckets all-reduced one after another, bucket i once ready and
    the previous one done), but backward — ``window_s`` seconds of compute — progresses at
    (1 − ``share[..., i]``) of its speed while bucket i's all-reduce is in flight (NCCL's CTAs
    hold that share of the SMs). Readiness is in compute progress: bucket i is ready once
    ``window · ready[i]`` of backward's compute is done (or once bucket i − 1 is, if later).
    Returns (backward end, last all-reduce end) in seconds from the window's start; with
    ``share`` 0 backward ends at ``window_s`` and the exposure equals :func:`exposed_comm_s`.

    Exact for piecewise constant speeds, bucket by bucket. The all-reduces run one after
    another, so their intervals [S_j, E_j] never overlap, and each bucket's is known before the
    next is ready. Backward's compute done by wall time t is t less what the intervals before t
    took from it, so it reaches c at

        t(c) = c + Σ_j s_j/(1 − s_j) · clip(c − P_j, 0, (1 − s_j)·T_j)

    where P_j is the compute done when all-reduce j starts (each interval stretches the
    (1 − s_j)·T_j of compute inside it by 1/(1 − s_j)). Bucket i is ready at t(its target),
    starts at max(that, E_{i−1}); backward ends at t(window). Intervals every draw has passed
    are summed once (``passed``) and those no draw has started are skipped (``top``), so a
    bucket costs a few array operations over the intervals still open, not an event walk over
    all of them.

    With ``slopes`` it also returns the derivatives of both ends by ``window_s`` (every time
    here is piecewise linear in the window; the derivative on the piece the window is on), for
    the Newton steps of :func:`rising_root`.
    """
    times = np.asarray(bucket_times, dtype=float)
    window = np.asarray(window_s, dtype=float)
    k = times.shape[-1]
    shape = np.broadcast_shapes(times.shape[:-1], window.shape, np.shape(share)[:-1])
    m = math.prod(shape)
    # One row per bucket, one column per draw: each step below reads whole buckets.
    w = np.broadcast_to(window, shape).reshape(m)

    def by_bucket(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(a, (*shape, k)).reshape(m, k).T)

    dur = by_bucket(times)
    s = by_bucket(np.asarray(share, dtype=float))
    ready = np.asarray(ready, dtype=float)
    rdy = ready if ready.ndim == 1 else by_bucket(ready)  # (K,): one readiness for all draws
    stretch = s / (1.0 - s)  # extra wall time per compute second inside interval j
    inside = (1.0 - s) * dur  # compute done inside interval j
    begin = np.zeros((k, m))  # P_j: compute done when all-reduce j starts
    done = np.zeros((k, m))  # P_j + inside_j: compute done when it ends
    taken = np.zeros(m)  # compute time the intervals so far took, in all
    taken_before = np.zeros((k + 1, m))  # ... the intervals before j (their sum, by j)
    end = np.zeros(m)  # E_{i-1}: the last all-reduce's end so far
    c = np.zeros(m)  # the compute target (a bucket never ready before the one ahead of it)
    passed = 0  # intervals 0..passed-1 lie before every draw's target
    top = 0  # intervals top.. start after every draw's target (a queue waiting on the network)
    at = np.zeros(m)
    # Derivatives by the window (slopes only): of c, at, end and each P_j.
    dc = np.zeros(m) if slopes else None
    dat = dend = dc
    dbegin = np.zeros((k, m)) if slopes else None
    for i in range(k + 1):
        r = rdy[i] if i < k else 1.0  # K: backward done, the whole window
        c_new = np.maximum(c, w * r)
        if slopes:  # right derivatives (a tie takes the steeper side): Newton starts at 0
            dc = np.where(w * r > c, r, np.where(w * r == c, np.maximum(r, dc), dc))
        c = c_new
        while passed < i and bool(np.all(done[passed] <= c)):
            passed += 1
        # Each draw's intervals start in order, so those starting after its target are a
        # tail; past the last one any draw has started, none adds anything (this keeps a
        # long queue of buckets, all-reduces slower than backward, from costing K^2).
        top = max(top, passed)
        while top < i and bool(np.any(begin[top] <= c)):
            top += 1
        at = c + taken_before[passed]
        if slopes:
            dat = dc
        if passed < top:
            open_ = slice(passed, top)
            into = c - begin[open_]
            part = np.minimum(np.maximum(into, 0.0), inside[open_])
            at = at + np.einsum("jm,jm->m", stretch[open_], part)
            if slopes:
                rise = dc - dbegin[open_]
                full = inside[open_]
                inner = ((into > 0) | ((into == 0) & (rise > 0))) & (
                    (into < full) | ((into == full) & (rise < 0))
                )
                dat = dat + (stretch[open_] * inner * rise).sum(axis=0)
        if i == k:
            break
        start = np.maximum(at, end)
        if slopes:
            dend = np.where(at > end, dat, np.where(at == end, np.maximum(dat, dend), dend))
            dbegin[i] = dend
        end = start + dur[i]
        begin[i] = start - taken  # every interval before it ended before it started
        done[i] = begin[i] + inside[i]
        taken = taken + s[i] * dur[i]
        taken_before[i + 1] = taken
    last = np.maximum(end, at)
    if not slopes:
        return at.reshape(shape), last.reshape(shape)
    dlast = np.where(end > at, dend, np.where(end == at, np.maximum(dend, dat), dat))
    return at.reshape(shape), last.reshape(shape), dat.reshape(shape), dlast.reshape(shape)


def exposure(
    bucket_times: np.ndarray, window_s: np.ndarray, ready: np.ndarray, share: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(exposed all-reduce, SM contention) in seconds: :func:`contended_backward` where NCCL's
    CTAs take a share of the SMs, else :func:`exposed_comm_s` and no contention."""
    if share is None or not np.any(np.asarray(share) > 0):
        exposed = exposed_comm_s(bucket_times, window_s, ready)
        return exposed, np.zeros_like(exposed)
    back_end, last = contended_backward(bucket_times, window_s, ready, share)
    return last - back_end, back_end - np.asarray(window_s, dtype=float)


def rising_root(
    g: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    lo: np.ndarray,
    hi: np.ndarray,
    g_lo: np.ndarray,
    g_hi: np.ndarray,
    xtol: np.ndarray,
    slope_lo: np.ndarray | None = None,
    rounds: int = 200,
) -> np.ndarray:
    """Per row, the x in [lo, hi] where a non-decreasing g crosses zero, to ``xtol`` (lo where
    g(lo) ≥ 0; hi where g(hi) < 0).

    ``g(x, rows)`` gives g and its slope at x for the rows ``rows`` (indices into lo), so a
    round costs only the rows still open. Newton steps kept inside the bracket (Numerical
    Recipes' ``rtsafe``): a bisection wherever the step would leave the bracket, the slope is
    0, or the step is not half the one before, so it never takes many more rounds than
    bisection. The model's functions of the window are piecewise linear and bend one way
    (exposure falls steeply, then flattens at its floor), so Newton from the left end
    (``slope_lo``: g's slope at lo, when known) lands on the crossing in a step or two where
    bisection needs 20 for one part in a million. A row is done only when its bracket is
    within ``xtol`` (a Newton step under it is followed by one step of ``xtol`` towards the
    bracket's other end, which closes it), so a wrong slope costs rounds, never accuracy.
    """
    x = np.where(g_lo >= 0, lo, hi).astype(float)
    open_ = np.flatnonzero((g_lo < 0) & (g_hi >= 0) & (hi - lo > xtol))
    a, b, tol = lo[open_].astype(float), hi[open_].astype(float), xtol[open_]
    ga, gb = g_lo[open_].astype(float), g_hi[open_].astype(float)
    at = a - ga * ((b - a) / (gb - ga))  # the false position (gb - ga > 0), unless ...
    if slope_lo is not None:  # ... Newton from the left end lands inside the bracket
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = a - ga / slope_lo[open_]
        at = np.where((newton > a) & (newton < b), newton, at)
    last_step = b - a
    for _ in range(rounds):
        if open_.size == 0:
            break
        gx, slope = g(at, open_)
        low = gx < 0
        a, b = np.where(low, at, a), np.where(low, b, at)
        done = b - a <= tol
        if done.any():
            x[open_[done]] = b[done]
            keep = ~done
            open_, a, b, tol, at = open_[keep], a[keep], b[keep], tol[keep], at[keep]
            gx, slope, low, last_step = gx[keep], slope[keep], low[keep], last_step[keep]
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = at - gx / slope
        bisect = (
            ~(slope > 0)
            | ~(newton >= a)
            | ~(newton <= b)
            | (2 * np.abs(gx) > np.abs(last_step * slope))
        )
        nxt = np.where(bisect, 0.5 * (a + b), newton)
        # A Newton step under the tolerance has found the crossing if the slope is right: a
        # step of the tolerance towards the other end closes the bracket and proves it.
        small = ~bisect & (np.abs(nxt - at) <= tol)
        nxt = np.clip(np.where(small, np.where(low, at + tol, at - tol), nxt), a, b)
        last_step = np.abs(nxt - at)
        at = nxt
    x[open_] = b  # not reached in practice: the rounds allow 2^-100 of the bracket
    return x


def _rows(a: np.ndarray | None, rows: np.ndarray, d: int) -> np.ndarray | None:
    """The draws ``rows`` of a per-draw array (D, ...); an array shared by all draws as is."""
    if a is None:
        return None
    a = np.asarray(a)
    return a[rows] if a.ndim >= 2 and a.shape[0] == d else a


def window_from_backward(
    bucket_times: np.ndarray, backward_s: np.ndarray, ready: np.ndarray, share: np.ndarray | None
) -> np.ndarray:
    """The backward compute (the hide window) whose contended run takes ``backward_s``.

    A worker measures backward beside the all-reduces, so SM contention is in its figure;
    the model's window is the compute alone. Backward's end grows with its compute, so
    :func:`rising_root` finds it (to 2^-30 of backward); without contention it is
    ``backward_s`` itself.
    """
    backward = np.asarray(backward_s, dtype=float)
    if share is None or not np.any(np.asarray(share) > 0):
        return backward
    times = np.asarray(bucket_times, dtype=float)
    d = backward.shape[0]

    def late(w: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t, r, s = _rows(times, rows, d), _rows(ready, rows, d), _rows(share, rows, d)
        back_end, _, slope, _ = contended_backward(t, w, r, s, slopes=True)
        return back_end - backward[rows], slope

    lo = np.zeros_like(backward)
    # A window of 0 ends at once (g = -backward), and backward runs at full speed until the
    # first all-reduce starts (slope 1); the measured figure itself is long enough.
    g_hi = contended_backward(times, backward, ready, share)[0] - backward
    return rising_root(
        late, lo, backward, -backward, g_hi, 2.0**-30 * backward, slope_lo=np.ones_like(lo)
    )


def fit_hide_share(
    bucket_times: np.ndarray,
    compute_s: np.ndarray,
    grad_accum: int,
    exposed_s: np.ndarray,
    ready: np.ndarray,
    prior: float = DEFAULT_HIDE_SHARE,
    share: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The hide window (as a share of the compute step) that reproduces a measured exposure.

    ``bucket_times`` (D, K) at the measured GPU count, ``compute_s`` and ``exposed_s`` (D,).
    Exposure only falls as the window grows, so :func:`rising_root` finds the smallest window
    that gives it (to 2^-30 of the step). Once the window is long enough only the buckets
    finishing at the end of backward stay exposed: a measurement at that floor only says "at
    least this long", and the window is then the larger of that bound and ``prior``.
    ``share``: the SM share NCCL's CTAs take from backward at this N (see
    :func:`contended_backward`; None: no SM contention). Returns the share (D,) and a bool
    (D,), True where the measurement fell outside what the model can produce (then clamped to
    1 or 0).
    """
    full = np.asarray(compute_s, dtype=float) / grad_accum
    exposed_s = np.asarray(exposed_s, dtype=float)
    times = np.asarray(bucket_times, dtype=float)
    d = full.shape[0]
    lo = np.zeros_like(full)
    # Without SM contention the walk with a share of 0 is the plain schedule (and has slopes).
    walk_share = np.zeros(times.shape[-1]) if share is None else share
    back0, last0, d_back0, d_last0 = contended_backward(times, lo, ready, walk_share, True)
    most = last0 - back0
    least = exposure(times, full, ready, share)[0]
    tol = 1e-9 + 1e-6 * np.abs(exposed_s)

    def hidden(w: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # >= 0 once the window hides enough: the exposure is at most the measured one.
        t, r, s = _rows(times, rows, d), _rows(ready, rows, d), _rows(walk_share, rows, d)
        back_end, last, d_back, d_last = contended_backward(t, w, r, s, slopes=True)
        return exposed_s[rows] + tol[rows] - (last - back_end), d_back - d_last

    hi = rising_root(
        hidden, lo, full, exposed_s + tol - most, exposed_s + tol - least, 2.0**-30 * full,
        slope_lo=d_back0 - d_last0,
    )  # fmt: skip
    share = hi / full
    # A measurement as exposed as no window at all is fitted by no window (rising_root gives
    # lo = 0 there), unless it is also at the floor (then it only says "at least 0").
    floor = exposed_s <= least + tol
    share = np.where(floor, np.maximum(share, prior), share)
    clamped = (exposed_s < least - tol) | (exposed_s > most + tol)
    share = np.where(exposed_s >= most + tol, 0.0, np.minimum(share, 1.0))
    return share, clamped


def fit_latency_bandwidth(
    bucket_bytes: Sequence[float], bucket_times_s: Sequence[float], gpus: int
) -> tuple[float, float] | None:
    """Per-step latency α (s) and bus bandwidth (GB/s) from all-reduces of several sizes at N.

    A ring all-reduce of b bytes on N ranks takes 2(N−1)·α + 2(N−1)/N · b / busbw: a straight
    line in b. Least squares over the buckets gives both; None when the sizes do not vary enough
    (or the fit is not physical), so the caller keeps the plain measured bandwidth.
    """
    b = np.asarray(bucket_bytes, dtype=float)
    t = np.asarray(bucket_times_s, dtype=float)
    ok = np.isfinite(b) & np.isfinite(t)
    b, t = b[ok], t[ok]
    if gpus < 2 or b.size < 2 or np.ptp(b) < 0.5 * b.max():
        return None
    slope, intercept = np.polyfit(b, t, 1)
    if slope <= 0 or intercept < 0:
        return None
    steps = 2 * (gpus - 1)
    return float(intercept / steps), float(steps / gpus / slope / 1e9)


def fit_latency_from_whole(
    bucket_count: int,
    bucketed_time_s: float,
    whole_bytes: float,
    whole_time_s: float,
    gpus: int,
) -> tuple[float, float] | None:
    """Per-step latency α (s) and bus bandwidth (GB/s) from the same gradient all-reduced
    twice at the ceiling: whole, in one message (``allreduce_time_s``), and in its K buckets one
    by one (``allreduce_bucketed_time_s``, their sum) — the worker's two ceilings of a run.

    Where the buckets are all about one size, :func:`fit_latency_bandwidth` has no line to fit,
    and a bandwidth from the whole gradient alone folds one message's latency into the
    bandwidth, so K small messages at N ranks would be priced as bytes only: on gloo, whose
    hops cost about half a millisecond each on loopback, that under-stated 8 ranks' bucketed
    all-reduce 20-fold. The two ceilings differ by K − 1 messages' latencies at the same bytes
    (DDP's buckets hold the whole gradient):

        T_buckets = K · 2(N−1) · α + 2(N−1)/N · B / busbw
        T_whole   =     2(N−1) · α + 2(N−1)/N · B / busbw

    None when K < 2, a time is missing, or the solution is not physical (the buckets took no
    longer than the whole: no latency to see; or the latency alone exceeds the whole)."""
    values = (bucketed_time_s, whole_bytes, whole_time_s)
    if gpus < 2 or bucket_count < 2 or not all(np.isfinite(v) and v > 0 for v in values):
        return None
    steps = 2.0 * (gpus - 1)
    alpha = (bucketed_time_s - whole_time_s) / ((bucket_count - 1) * steps)
    wire_s = whole_time_s - steps * alpha  # the whole gradient's bytes on the wire
    if alpha <= 0 or wire_s <= 0:
        return None
    return float(alpha), float(steps / gpus * whole_bytes / wire_s / 1e9)


# -- DDP's buckets and hooks ----------------------------------------------------------------


def ddp_buckets(
    param_bytes: Sequence[int], bucket_cap_bytes: float, first_cap_bytes: float = FIRST_BUCKET_BYTES
) -> list[int]:
    """DDP's bucket sizes for parameters given in ``model.parameters()`` order.

    DDP fills buckets in the order gradients appear in backward, about the reverse parameter
    order; a bucket closes once it reaches its cap (the first bucket's cap is 1 MiB, or the cap
    when that is smaller), so a parameter bigger than the cap gets a bucket of its own. Returned
    in DDP's order (bucket 0 first).
    """
    buckets: list[int] = []
    size = 0
    cap = min(first_cap_bytes, bucket_cap_bytes)
    for nbytes in reversed(list(param_bytes)):
        size += int(nbytes)
        if size >= cap:
            buckets.append(size)
            size = 0
            cap = bucket_cap_bytes
    if size:
        buckets.append(size)
    return buckets


#: The most buckets a projection models (a DDP cap below 1/100,000 of the gradient is not a
#: configuration anyone runs, and each bucket costs work in every draw).
MAX_BUCKETS = 100_000


def split_buckets(grad_bytes: float, bucket_cap_bytes: float) -> list[float]:
    """Equal buckets of the cap (the last holds the remainder) when shapes are unknown."""
    if grad_bytes <= 0:
        return []
    count = math.ceil(grad_bytes / bucket_cap_bytes)
    if count > MAX_BUCKETS:
        raise ValueError(f"{count} buckets is more than {MAX_BUCKETS}")
    full = int(grad_bytes // bucket_cap_bytes)
    rest = grad_bytes - full * bucket_cap_bytes
    out = [float(bucket_cap_bytes)] * full
    if rest > 0:
        out.append(float(rest))
    return out


def powersgd_share(shapes: Sequence[Sequence[int]], rank: int) -> float:
    """Bytes PowerSGD sends over the dense gradient's bytes, for these parameter shapes.

    A matrix m×n (higher-rank tensors viewed as shape[0] × rest) sends r·(m+n) numbers instead
    of m·n when that saves at least 2x (PowerSGD's min_compression_rate = 2); vectors and
    matrices too small to gain go dense.
    """
    dense = sent = 0.0
    for shape in shapes:
        numel = math.prod(shape)
        dense += numel
        if len(shape) < 2:
            sent += numel
            continue
        m, n = shape[0], numel // shape[0]
        low = rank * (m + n)
        sent += low if low * 2 <= numel else numel
    return sent / dense if dense else 1.0


def hook_wire_share(comm_hook: str, *, powersgd: float | None = None) -> float:
    """Bytes on the wire over the dense gradient's bytes, per communication hook."""
    if comm_hook in ("fp16", "bf16"):
        return 0.5
    if comm_hook == "powersgd":
        if powersgd is None:
            raise ValueError("powersgd needs its compression share (see powersgd_share)")
        return powersgd
    return 1.0


# -- the links ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NcclLink:
    """A fabric NCCL's cost model describes; ``efficiency`` holds (D,) draws per link kind
    ("intra", "inter", "nvls") of achieved / modelled bandwidth."""

    fabric: Fabric
    gpus_per_node: int
    efficiency: dict[str, np.ndarray]


@dataclass(frozen=True)
class MeasuredLink:
    """A link measured on the sweep's own host where NCCL's model does not apply (gloo on CPU):
    a ring of 2(N−1) steps of ``alpha_s`` each plus 2(N−1)/N · bytes / busbw. Arrays are (D,).

    ``cores``: the host's CPU cores, and ``fed_ranks``: the rank count the link was measured at
    (0: unknown, no scaling). gloo on one host is CPU work at every hop (the reduction, the
    copies, loopback's system calls) on every rank at once, so once the ranks outnumber the
    cores each hop waits for its turn on one: the ring's time grows by max(1, N / cores) over
    what it was at the measured count (:func:`oversubscription`)."""

    alpha_s: np.ndarray | float
    busbw_gbps: np.ndarray | float
    gpus_per_node: int
    cores: int = 0
    fed_ranks: int = 0


def oversubscription(ranks: int, cores: int, fed_ranks: int) -> float:
    """How much longer a measured CPU ring's hops take at ``ranks`` than at ``fed_ranks`` on a
    host of ``cores``: each hop is CPU work on every rank, and R ranks on C < R cores take R / C
    turns (1 where either count is unknown)."""
    if cores <= 0 or fed_ranks <= 0:
        return 1.0
    return max(1.0, ranks / cores) / max(1.0, fed_ranks / cores)


@functools.lru_cache(maxsize=4096)
def _plan(system: nccl.System, ranks: int, sizes: tuple[float, ...]) -> nccl.Plan:
    return nccl.allreduce_plan(system, ranks, np.asarray(sizes, dtype=float))


def allreduce_times(
    link: NcclLink | MeasuredLink, n: int, wire_bytes: np.ndarray, draws: int
) -> tuple[np.ndarray, str, frozenset[str]]:
    """(draws, K) seconds of one all-reduce of each message at ``n`` GPUs, NCCL's choice, and
    which link efficiencies it used ("intra", "inter", "nvls"; "measured" for a measured ring).

    Across nodes the ring crosses both links: the efficiency applied is the network's, or the
    intra-node link's scaled by its headroom when that is the slower of the two.
    """
    b = np.asarray(wire_bytes, dtype=float)
    if n <= 1 or b.size == 0:
        return np.zeros((draws, b.size)), "", frozenset()
    if isinstance(link, MeasuredLink):
        alpha = np.broadcast_to(np.asarray(link.alpha_s, dtype=float), (draws,))[:, None]
        bw = np.broadcast_to(np.asarray(link.busbw_gbps, dtype=float), (draws,))[:, None] * 1e9
        t = 2 * (n - 1) * alpha + 2 * (n - 1) / n * b[None, :] / bw
        t = t * oversubscription(n, link.cores, link.fed_ranks)
        return t, "measured ring", frozenset({"measured"})
    system = link.fabric.system(link.gpus_per_node, ranks=n)
    plan = _plan(system, int(n), tuple(float(x) for x in b))

    def draw(kind: str) -> np.ndarray:
        e = link.efficiency.get(kind)
        return np.ones(draws) if e is None else np.broadcast_to(np.asarray(e, float), (draws,))

    eff = np.ones((draws, b.size))
    used: set[str] = set()
    for kind in set(plan.limited_by[a] for a in np.unique(plan.algo)):
        cols = np.array([plan.limited_by[a] == kind for a in plan.algo])
        e = draw(kind)
        used.add(kind)
        if kind == "inter" and np.isfinite(plan.intra_headroom):
            e = np.minimum(e, draw("intra") * plan.intra_headroom)
            used.add("intra")
        eff[:, cols] = e[:, None]
    t = plan.latency_s[None, :] + b[None, :] / (plan.bytes_per_s[None, :] * eff)
    return t, nccl.plan_label(plan, b), frozenset(used)


def allreduce_ctas(link: NcclLink | MeasuredLink, n: int, wire_bytes: np.ndarray) -> np.ndarray:
    """(K,) CTAs (= SMs held) NCCL launches for each message at ``n`` GPUs; 0 for a measured
    ring (gloo on CPUs: no SMs)."""
    b = np.asarray(wire_bytes, dtype=float)
    if isinstance(link, MeasuredLink) or n <= 1 or b.size == 0:
        return np.zeros(b.size, dtype=int)
    plan = _plan(link.fabric.system(link.gpus_per_node, ranks=n), int(n),
                 tuple(float(x) for x in b))  # fmt: skip
    return np.zeros(b.size, dtype=int) if plan.channels is None else plan.channels


def contention_share(
    link: NcclLink | MeasuredLink,
    n: int,
    wire_bytes: np.ndarray,
    times_s: np.ndarray,
    sm_count: int,
    sm_contention: np.ndarray,
    hbm_gbps: float = 0.0,
    hbm_contention: np.ndarray | float = 0.0,
) -> np.ndarray | None:
    """(D, K): the share of its speed overlapped backward loses while each bucket's all-reduce
    is in flight — SMs and HBM bandwidth — or None where no GPU is involved.

    SMs: ``sm_contention`` x NCCL's CTAs / SMs. HBM: ``hbm_contention`` x the all-reduce's bus
    bandwidth (wire bytes x 2(N−1)/N over its time ``times_s``, per draw) / the HBM bandwidth
    (see ``fabrics.SM_CONTENTION``, ``fabrics.HBM_CONTENTION``). Capped at ``MAX_SM_SHARE``.
    """
    if sm_count <= 0 or n <= 1:
        return None
    b = np.asarray(wire_bytes, dtype=float)
    d = np.shape(times_s)[0]
    k_sm = np.broadcast_to(np.asarray(sm_contention, dtype=float), (d,))
    share = k_sm[:, None] * sm_share(allreduce_ctas(link, n, b), sm_count)[None, :]
    if hbm_gbps > 0:
        k_hbm = np.broadcast_to(np.asarray(hbm_contention, dtype=float), (d,))
        with np.errstate(divide="ignore", invalid="ignore"):
            busbw = np.where(times_s > 0, b[None, :] * 2 * (n - 1) / n / times_s, 0.0)
        share = share + k_hbm[:, None] * busbw / (hbm_gbps * 1e9)
    return np.minimum(share, MAX_SM_SHARE)


def ddp_copy_s(grad_bytes: float, hbm_gbps: float, efficiency: np.ndarray) -> np.ndarray:
    """DDP's bucket copies per step at N > 1: 4 x the gradient's bytes through HBM (into the
    buckets and back, ``fabrics.COPY_EFFICIENCY``) at the achieved share of its bandwidth."""
    eff = np.asarray(efficiency, dtype=float)
    if hbm_gbps <= 0:
        return np.zeros(eff.shape)
    return 4.0 * float(grad_bytes) / (hbm_gbps * 1e9 * eff)


def sm_share(ctas: np.ndarray, sm_count: int) -> np.ndarray:
    """The share of a GPU's SMs NCCL's CTAs hold (capped at ``MAX_SM_SHARE``); 0 without SMs."""
    c = np.asarray(ctas, dtype=float)
    if sm_count <= 0:
        return np.zeros(c.shape)
    return np.minimum(c / sm_count, MAX_SM_SHARE)


# -- the step -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepModel:
    """Everything one prediction needs; arrays are (D,) draws (draw 0 = the point estimate).

    ``ready`` is (K,) or (D, K): each bucket's readiness as a share of the hide window.
    ``scaling`` "weak" keeps the per-GPU work; "strong" divides the per-sample part of the
    compute step (``compute_s − fixed_s``) by N — by shrinking the per-GPU batch
    (``strong_by="batch"``) or the accumulation steps (``"accum"``).
    """

    compute_s: np.ndarray
    bucket_bytes: tuple[float, ...]
    ready: np.ndarray
    hide_share: np.ndarray
    jitter: np.ndarray
    link: NcclLink | MeasuredLink
    wire_share: float = 1.0
    collectives_per_bucket: int = 1
    grad_accum: int = 1
    host_s: np.ndarray | float = 0.0
    fixed_s: np.ndarray | float = 0.0
    scaling: str = "weak"
    strong_by: str = "batch"
    samples_per_step: float | None = None
    loader_samples_per_s: np.ndarray | float | None = None
    sm_count: int = 0
    """SMs per GPU; 0 (CPUs, or no SM model) leaves out SM contention."""
    sm_contention: np.ndarray | float = 0.0
    """(D,) draws of the share of NCCL's SM share the overlapped backward loses
    (``fabrics.SM_CONTENTION``)."""
    hbm_gbps: float = 0.0
    """The GPU's HBM bandwidth; 0 leaves out HBM contention."""
    hbm_contention: np.ndarray | float = 0.0
    """(D,) draws of the HBM share the overlapped backward loses per unit of bus bandwidth /
    HBM bandwidth (``fabrics.HBM_CONTENTION``)."""
    model_error: np.ndarray | float = 1.0
    """(D,) factors on the overhead beyond compute at N > 1: the model's own error
    (:mod:`harness.projection.model_error`; 1 leaves it out)."""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StepPrediction:
    """Arrays (D, G): draws x GPU counts; ``algorithm`` (G,) NCCL's choice at each count."""

    step_s: np.ndarray
    compute_s: np.ndarray
    exposed_comm_s: np.ndarray
    allreduce_s: np.ndarray
    straggler_s: np.ndarray
    host_s: np.ndarray
    loader_bound: np.ndarray
    efficiency: np.ndarray
    algorithm: tuple[str, ...]
    links_used: tuple[frozenset[str], ...] = ()
    contention_s: np.ndarray | None = None
    """Contention: how much later backward ends because NCCL's CTAs took SMs from it and its
    traffic took HBM bandwidth."""
    ctas: tuple[int, ...] = ()
    """NCCL's CTAs for the largest message at each GPU count (0: no SMs involved)."""
    overhead_factor: np.ndarray | None = None
    """(D,) the model error's factor of each draw (``StepModel.model_error``): the parts above
    (exposed, straggler, host, contention) are the model's, before it; the step is after it."""


def predict_steps(model: StepModel, gpus: Sequence[int]) -> StepPrediction:
    """Step time at each GPU count for every draw (see the module docstring)."""
    compute1 = np.asarray(model.compute_s, dtype=float)
    d = compute1.shape[0]
    fixed = np.broadcast_to(np.asarray(model.fixed_s, dtype=float), (d,))
    hide = np.broadcast_to(np.asarray(model.hide_share, dtype=float), (d,))
    jitter = np.broadcast_to(np.asarray(model.jitter, dtype=float), (d,))
    host = np.broadcast_to(np.asarray(model.host_s, dtype=float), (d,))
    dense = np.asarray(model.bucket_bytes, dtype=float)
    wire = dense * model.wire_share / model.collectives_per_bucket
    ready = np.asarray(model.ready, dtype=float)
    keys = ("step", "compute", "exposed", "allreduce", "straggler", "host", "loader", "eff",
            "contention")  # fmt: skip
    scale = np.broadcast_to(np.asarray(model.sm_contention, dtype=float), (d,))
    error = np.broadcast_to(np.asarray(model.model_error, dtype=float), (d,))
    ctas_out: list[int] = []
    cols: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    labels = []
    links: list[frozenset[str]] = []
    for n in gpus:
        n = int(n)
        per_sample = (compute1 - fixed) / (n if model.scaling == "strong" else 1)
        compute = fixed + per_sample
        # The hide window is the last micro-step's backward: a micro-step shrinks with the
        # per-GPU batch (weak, strong by batch), or keeps its size (strong by accumulation).
        if model.scaling == "strong" and model.strong_by == "accum":
            micro = (compute1 - fixed) / model.grad_accum
        elif model.scaling == "strong":
            micro = per_sample / model.grad_accum
        else:
            micro = compute / model.grad_accum
        window = hide * micro
        one, label, used = allreduce_times(model.link, n, wire, d)  # one collective a bucket
        times = one * model.collectives_per_bucket
        ctas = allreduce_ctas(model.link, n, wire) if model.sm_count > 0 else np.zeros(0)
        if n <= 1:
            exposed, contention = np.zeros(d), np.zeros(d)
        else:
            share = contention_share(
                model.link, n, wire, one, model.sm_count, scale, model.hbm_gbps,
                model.hbm_contention,
            )  # fmt: skip
            exposed, contention = exposure(times, window, ready, share)
        ctas_out.append(int(ctas[np.argmax(wire)]) if ctas.size else 0)
        stall = straggler_s(compute, jitter, np.array([n])) if n > 1 else np.zeros(d)
        h = host if n > 1 else np.zeros(d)
        step = compute + contention + h + exposed + stall
        bound = np.zeros(d, dtype=bool)
        if model.loader_samples_per_s is not None and model.samples_per_step:
            per_gpu = model.samples_per_step / (n if model.scaling == "strong" else 1)
            on_node = min(n, model.link.gpus_per_node)
            floor = per_gpu * on_node / np.asarray(model.loader_samples_per_s, dtype=float)
            bound = floor > step
            step = np.maximum(step, floor)
        if n > 1:
            step = model_error.apply(step, compute, error)
        eff = compute1 / step if model.scaling == "weak" else compute1 / (n * step)
        for key, value in (("step", step), ("compute", compute), ("exposed", exposed),
                           ("allreduce", times.sum(axis=-1)), ("straggler", stall),
                           ("host", np.broadcast_to(h, (d,))), ("loader", bound),
                           ("eff", eff), ("contention", contention)):  # fmt: skip
            cols[key].append(np.broadcast_to(value, (d,)))
        labels.append(label)
        links.append(used)
    stack = {k: np.stack(v, axis=1) if v else np.zeros((d, 0)) for k, v in cols.items()}
    return StepPrediction(
        step_s=stack["step"],
        compute_s=stack["compute"],
        exposed_comm_s=stack["exposed"],
        allreduce_s=stack["allreduce"],
        straggler_s=stack["straggler"],
        host_s=stack["host"],
        loader_bound=stack["loader"],
        efficiency=stack["eff"],
        algorithm=tuple(labels),
        links_used=tuple(links),
        contention_s=stack["contention"],
        ctas=tuple(ctas_out),
        overhead_factor=np.array(error, dtype=float),
    )


def robust_cv(values: Sequence[float]) -> float:
    """Coefficient of variation that one slow step cannot inflate: 1.4826·MAD / median."""
    arr = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if arr.size < 2:
        return 0.0
    med = float(np.median(arr))
    if med <= 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(arr - med)) / med)
