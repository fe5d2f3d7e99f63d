"""The DDP scaling model: predict a training step at N GPUs from what one or two GPUs measured.

Pure numpy, no I/O. Every function takes arrays so the same code evaluates the point estimate and
thousands of bootstrap draws at once (that is how the 95% intervals are carried).

**The step.** Under DistributedDataParallel a training step at N GPUs takes

    step(N) = compute + exposed_comm(N) + straggler(N)

- ``compute``: the compute-only step (forward, backward, optimizer; no all-reduce), which does
  not change with N under weak scaling (each GPU keeps its batch).
- ``exposed_comm``: the part of the gradient all-reduce that backward could not hide. DDP cuts
  the gradient into *buckets* (bucket 0 is ready first in backward) and all-reduces each one as
  soon as it is ready, one after another on one communication stream. The buckets become ready
  while backward runs (the *hide window*, ``hide_share`` of the compute step), in proportion to
  the bytes produced so far; the bucket produced last — for DistilBERT the word-embedding
  gradient, a third of all bytes — is ready only when backward ends, so it can never hide (nor
  can the bucket the last layers complete at that same moment). Exposed = when the last
  all-reduce ends minus when backward ended. With gradient accumulation only the last
  micro-step's backward can hide the (single) all-reduce.
- ``straggler``: every step waits for the slowest of N ranks. If one rank's step time varies
  with coefficient of variation ``jitter_share`` (normal noise), the slowest of N exceeds the
  typical rank (the lower median) by jitter·(E[max] − E[lower median]) of N standard normals
  (:func:`order_spread`, Blom's approximation of normal order statistics).

**One all-reduce** of b bytes (NCCL's own cost model, ``src/graph/tuning.cc``; see
:mod:`harness.fabrics` for the numbers):

- inside one node (N ≤ G GPUs per node), ring: 2(N−1) steps, so
  t = base + 2(N−1)·α_intra + 2(N−1)/N · b / busbw_intra;
- across M = N/G nodes, hierarchical: reduce-scatter inside the node, all-reduce of each GPU's
  b/G shard between nodes (every GPU has its own NIC, so the G shards travel in parallel), then
  all-gather inside the node:
  t = base + 2(G−1)/G · b / busbw_intra + 2(G−1)·α_intra + inter, where inter is the cheaper of
  ring (2(M−1)/M · (b/G) / busbw_inter + 2(M−1)·α_ring) and tree (2·(b/G)/(0.9·busbw_inter) +
  2·log2(M)·α_tree) — what NCCL would pick: the tree's log-depth latency wins for small buckets
  on many nodes, the ring's bandwidth for large ones.

**Communication hooks** change the bytes on the wire (``wire_share``): fp16/bf16 compression
halves them; PowerSGD of rank r sends r·(m+n) numbers instead of m·n per matrix (two
all-reduces per bucket, P then Q).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.fabrics import BASE_LATENCY_S, TREE_BW_SHARE, Fabric

#: Share of a compute step that backward spans when nothing better is known: backward does
#: about twice the forward's FLOPs (C ≈ 6·params·tokens: 2 forward, 4 backward; Kaplan et al.
#: 2020, "Scaling Laws for Neural Language Models"), and the optimizer step is small.
DEFAULT_HIDE_SHARE = 2.0 / 3.0
#: DDP's defaults: the first bucket is capped at 1 MiB, the others at bucket_cap_mb MiB
#: (torch.distributed._DEFAULT_FIRST_BUCKET_BYTES; DistributedDataParallel(bucket_cap_mb=25)).
FIRST_BUCKET_BYTES = 1024 * 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Network:
    """The interconnect as the model sees it: GPUs per node, two levels, NCCL latencies.

    ``intra_busbw_gbps`` may be an array of bootstrap draws (a measured bandwidth carries its
    spread). ``intra_latency`` is False when the intra-node bandwidth was measured with the
    gradient's own all-reduce: its latency is already inside that figure.
    """

    gpus_per_node: int
    intra_busbw_gbps: np.ndarray | float
    inter_busbw_gbps: float
    intra_ring_step_s: float
    intra_tree_step_s: float
    inter_ring_step_s: float
    inter_tree_step_s: float
    base_latency_s: float = BASE_LATENCY_S
    intra_latency: bool = True

    @classmethod
    def from_fabric(
        cls,
        fabric: Fabric,
        gpus_per_node: int,
        *,
        intra_busbw_gbps: np.ndarray | float | None = None,
    ) -> Network:
        """The fabric's links; a measured intra-node bandwidth (latency included) replaces
        the fabric's own."""
        measured = intra_busbw_gbps is not None
        return cls(
            gpus_per_node=gpus_per_node,
            intra_busbw_gbps=intra_busbw_gbps if measured else fabric.intra.busbw_gbps,
            inter_busbw_gbps=fabric.inter.busbw_gbps,
            intra_ring_step_s=fabric.intra.ring_step_latency_s,
            intra_tree_step_s=fabric.intra.tree_step_latency_s,
            inter_ring_step_s=fabric.inter.ring_step_latency_s,
            inter_tree_step_s=fabric.inter.tree_step_latency_s,
            intra_latency=not measured,
        )


def allreduce_time_s(
    nbytes: np.ndarray, gpus: np.ndarray, net: Network
) -> tuple[np.ndarray, np.ndarray]:
    """Time of one all-reduce of each bucket at each GPU count, and whether tree was picked.

    ``nbytes`` (K,) bytes on the wire per bucket; ``gpus`` (G,); ``net.intra_busbw_gbps`` a
    scalar or (D,) draws. Returns times (D, G, K) in seconds (D = 1 for a scalar bandwidth) and
    a (D, G, K) bool array, True where the inter-node tree beat the ring.
    """
    b = np.asarray(nbytes, dtype=float)[None, :]  # (1, K)
    n = np.asarray(gpus, dtype=float)[:, None]  # (G, 1)
    inv_intra = 1e-9 / np.atleast_1d(np.asarray(net.intra_busbw_gbps, dtype=float))
    bw_inter = float(net.inter_busbw_gbps) * 1e9
    g = float(net.gpus_per_node)
    lat_ring = net.intra_ring_step_s if net.intra_latency else 0.0
    lat_base = net.base_latency_s if net.intra_latency else 0.0
    # Every time is fixed + bytes_intra / intra bandwidth: the fixed part and the intra-node
    # bytes are (G, K), and only the bandwidth varies across draws, so the (D, G, K) result
    # is one fused multiply-add.
    single = n <= g
    m = np.maximum(n / g, 1.0)
    shard = b / g
    ring = 2 * (m - 1) / m * shard / bw_inter + 2 * (m - 1) * net.inter_ring_step_s
    tree = 2 * shard / (TREE_BW_SHARE * bw_inter) + 2 * np.log2(m) * net.inter_tree_step_s
    use_tree = (tree < ring) & ~single
    with np.errstate(divide="ignore", invalid="ignore"):
        # One node: a ring of n GPUs. Several: reduce-scatter + all-gather inside the node,
        # each GPU's shard across the nodes.
        fixed = np.where(
            single,
            lat_base + 2 * (n - 1) * lat_ring,
            net.base_latency_s + 2 * (g - 1) * lat_ring + np.minimum(ring, tree),
        )
        intra_bytes = np.where(single, 2 * (n - 1) / n * b, 2 * (g - 1) / g * b)
    fixed = np.where(n <= 1, 0.0, fixed)
    intra_bytes = np.where(n <= 1, 0.0, intra_bytes)
    times = fixed[None] + intra_bytes[None] * inv_intra[:, None, None]
    return times, np.broadcast_to(use_tree[None], times.shape)


def ready_fractions(bucket_bytes: Sequence[float]) -> np.ndarray:
    """When each bucket is ready, as a share of the hide window (bucket 0 first).

    The buckets before the last fill up as backward walks down the layers, so bucket i is ready
    once the bytes of buckets 0..i are produced; the last bucket (the first parameters of the
    model: DistilBERT's word embeddings) is ready only at the very end of backward.
    """
    b = np.asarray(bucket_bytes, dtype=float)
    if b.size <= 1:
        return np.ones(b.size)
    head = np.cumsum(b[:-1])
    return np.append(head / head[-1], 1.0)


def exposed_comm_s(
    bucket_times: np.ndarray, window_s: np.ndarray, fractions: np.ndarray
) -> np.ndarray:
    """All-reduce time backward did not hide: buckets all-reduced one after another.

    ``bucket_times`` (..., K), ``window_s`` broadcastable to (...,): the hide window (the last
    micro-step's backward). Bucket i starts when it is ready and the previous one is done.
    """
    window = np.asarray(window_s, dtype=float)
    end = np.zeros(np.broadcast_shapes(bucket_times.shape[:-1], window.shape))
    for i in range(bucket_times.shape[-1]):
        end = np.maximum(end, window * fractions[i]) + bucket_times[..., i]
    return np.maximum(end - window, 0.0)


def order_spread(gpus: np.ndarray | int) -> np.ndarray:
    """E[max] − E[lower median] of N standard normal draws (0 at N = 1).

    Blom's approximation of the k-th of N normal order statistics, Φ⁻¹((k − 0.375)/(N + 0.25)),
    is close to the exact values (N = 2: 1.18 vs 1.13; N = 8: 1.59 vs 1.58); for
    large N the maximum grows like sqrt(2 ln N).
    """
    from statistics import NormalDist

    inv = np.vectorize(NormalDist().inv_cdf)
    n = np.maximum(np.asarray(gpus, dtype=float), 1.0)
    k_mid = np.floor((n - 1) / 2) + 1
    top = inv((n - 0.375) / (n + 0.25))
    mid = inv((k_mid - 0.375) / (n + 0.25))
    return np.where(n <= 1, 0.0, top - mid)


def straggler_s(compute_s: np.ndarray, jitter_share: float, gpus: np.ndarray) -> np.ndarray:
    """Expected wait for the slowest of N ranks: compute·jitter·order_spread(N) (0 at N = 1)."""
    return compute_s * jitter_share * order_spread(gpus)


def fit_hide_share(
    bucket_times: np.ndarray,
    compute_s: np.ndarray,
    grad_accum: int,
    exposed_s: np.ndarray,
    fractions: np.ndarray,
    prior: float = 2.0 / 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The hide window (as a share of the compute step) that reproduces a measured exposure.

    ``bucket_times`` (D, K) at the measured GPU count, ``compute_s`` and ``exposed_s`` (D,).
    Exposure only falls as the window grows, so bisection finds the smallest window that
    gives it. Once the window is long enough, only the buckets finishing at the end of backward
    stay exposed and a longer window changes nothing: a measurement at that floor only says
    "at least this long", and the window is then the larger of that bound and ``prior``.
    Returns the share (D,) and a bool (D,), True where the measurement fell outside what the
    model can produce (less exposed than the floor, or more than all buckets together): the
    share is then clamped to 1 or 0.
    """
    full = compute_s / grad_accum  # the last micro-step's whole duration
    lo = np.zeros_like(full)
    hi = full.copy()
    most = exposed_comm_s(bucket_times, lo, fractions)
    least = exposed_comm_s(bucket_times, hi, fractions)
    tol = 1e-9 + 1e-6 * np.abs(exposed_s)
    for _ in range(24):  # 2^-24 of the step: far below any timing noise
        mid = (lo + hi) / 2
        too_exposed = exposed_comm_s(bucket_times, mid, fractions) > exposed_s + tol
        lo = np.where(too_exposed, mid, lo)
        hi = np.where(too_exposed, hi, mid)
    share = hi / full
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
    line in b. Least squares over the buckets gives both; None when the sizes do not vary
    enough (or the fit is not physical: a negative slope or latency), so the caller keeps the
    plain measured bandwidth.
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


def ddp_buckets(
    param_bytes: Sequence[int], bucket_cap_bytes: float, first_cap_bytes: float = FIRST_BUCKET_BYTES
) -> list[int]:
    """DDP's bucket sizes for parameters given in ``model.parameters()`` order.

    DDP (after its first iteration) fills buckets in the order gradients appear in backward,
    about the reverse parameter order; a bucket closes once it reaches its cap (the first
    bucket's cap is 1 MiB, or the cap when that is smaller), so a parameter bigger than the cap
    gets a bucket of its own. Returned in DDP's order (bucket 0 first).
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


def split_buckets(grad_bytes: float, bucket_cap_bytes: float) -> list[float]:
    """Equal buckets of the cap (the last holds the remainder) when shapes are unknown."""
    if grad_bytes <= 0:
        return []
    full = int(grad_bytes // bucket_cap_bytes)
    rest = grad_bytes - full * bucket_cap_bytes
    out = [float(bucket_cap_bytes)] * full
    if rest > 0:
        out.append(float(rest))
    return out


def powersgd_share(shapes: Sequence[Sequence[int]], rank: int) -> float:
    """Bytes PowerSGD sends over the dense gradient's bytes, for these parameter shapes.

    A matrix m×n (higher-rank tensors are viewed as shape[0] × rest) sends r·(m+n) numbers
    instead of m·n when that saves at least 2x (PowerSGD's min_compression_rate = 2); vectors
    (biases, LayerNorm) and matrices too small to gain go dense.
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
    """Bytes on the wire over the dense fp32 gradient's bytes, per communication hook."""
    if comm_hook in ("fp16", "bf16"):
        return 0.5
    if comm_hook == "powersgd":
        if powersgd is None:
            raise ValueError("powersgd needs its compression share (see powersgd_share)")
        return powersgd
    return 1.0


@dataclass(frozen=True)
class StepModel:
    """Everything one curve's prediction needs; arrays hold bootstrap draws (draw 0 = point).

    ``compute_s``, ``hide_share`` (D,) arrays; ``jitter_share`` and ``net.intra_busbw_gbps``
    scalars or (D,). Several curves of the same bucket layout stack their draws along D.
    """

    compute_s: np.ndarray
    bucket_bytes: tuple[float, ...]
    wire_share: float
    collectives_per_bucket: int
    grad_accum: int
    hide_share: np.ndarray
    jitter_share: np.ndarray | float
    net: Network
    sync_overhead_s: np.ndarray | float = 0.0
    """Per-step cost of synchronising that the all-reduce does not explain (measured at a
    smaller N as exposure beyond what any overlap could give), carried unchanged to N > 1."""


@dataclass(frozen=True)
class StepPrediction:
    """Arrays (D, G): draws x GPU counts."""

    step_s: np.ndarray
    exposed_comm_s: np.ndarray
    allreduce_s: np.ndarray
    straggler_s: np.ndarray
    tree_share: np.ndarray  # share of the bytes that went through the tree, (G,) of draw 0


def predict_steps(model: StepModel, gpus: Sequence[int]) -> StepPrediction:
    """Step time at each GPU count for every draw (see the module docstring)."""
    g = np.asarray(gpus, dtype=float)
    dense = np.asarray(model.bucket_bytes, dtype=float)
    fractions = ready_fractions(dense)
    per_collective = dense * model.wire_share / model.collectives_per_bucket
    times, tree = allreduce_time_s(per_collective, g, model.net)
    times = times * model.collectives_per_bucket  # (D or 1, G, K)
    compute = np.asarray(model.compute_s, dtype=float)[:, None]  # (D, 1)
    window = compute * np.asarray(model.hide_share, dtype=float)[:, None] / model.grad_accum
    exposed = exposed_comm_s(times, window, fractions)  # (D, G)
    exposed = np.where(g[None, :] <= 1, 0.0, exposed)
    jitter = np.asarray(model.jitter_share, dtype=float)
    stall = straggler_s(compute, jitter[:, None] if jitter.ndim else jitter, g[None, :])
    overhead = np.asarray(model.sync_overhead_s, dtype=float)
    overhead = overhead[:, None] if overhead.ndim else overhead
    exposed = exposed + np.where(g[None, :] <= 1, 0.0, overhead)
    step = compute + exposed + stall
    total = times.sum(axis=-1)
    weights = per_collective / per_collective.sum() if per_collective.sum() else per_collective
    tree_share = (tree[0] * weights[None, :]).sum(axis=-1) if len(weights) else np.zeros(len(g))
    return StepPrediction(
        step_s=step,
        exposed_comm_s=np.broadcast_to(exposed, step.shape),
        allreduce_s=np.broadcast_to(total, step.shape),
        straggler_s=np.broadcast_to(stall, step.shape),
        tree_share=tree_share,
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
