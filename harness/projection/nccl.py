"""NCCL's own cost model of an all-reduce: which algorithm and protocol NCCL picks, and its time.

This is a transcription, not an invention. Every constant and formula below is NCCL's, from
NVIDIA/nccl at commit ``5067397c2676d5aed50042fc39e5c8ee96eb0027`` (NCCL 2.30.7, June 2026):

- ``src/graph/tuning.cc`` lines 138-212: ``nvlsEfficiency`` and ``ncclTunerConstantsDefaults``
  (base latencies per algorithm and protocol, hardware latencies per link kind, the LL maximum
  bandwidths, the per-channel caps of LL128, Tree and NVLS-Tree);
- ``src/graph/tuning.cc`` ``ncclTopoTuneModel`` (lines 243-618): for each algorithm (Tree, Ring,
  CollNet Direct/Chain, NVLS, NVLS-Tree) and protocol (LL, LL128, Simple) a latency in µs and a
  bandwidth in GB/s, and which of them are enabled;
- ``src/graph/tuning.cc`` ``treeCorrectionFactor`` and ``ncclTopoGetAlgoTime`` (lines 620-655):
  time = latency + bytes / (1000 · bandwidth) µs, with the tree's size correction and the ring's
  multi-node "plateau" factor. NCCL runs the (algorithm, protocol) of least time: so do we.

What NCCL learns by probing the machine we take from the fabric description
(:mod:`harness.projection.fabrics`), in NCCL's own units:

- link bandwidths (``src/graph/topo.h`` lines 17-35 and ``ncclTopoNVLinkBw`` lines 274-282: 18,
  20, 20, 20.6 and 40.1 GB/s per NVLink for SM60, SM70, SM80, SM90, SM100; PCIe x16 at
  ``width * speed / 80`` GB/s, ``src/graph/topo.cc`` line 657: 12, 24, 48 for Gen3, 4, 5; a NIC
  at ``speed_mbps / 8000`` GB/s, ``topo.cc`` line 418);
- the *graph* NCCL's topology search would find (``src/graph/search.cc`` ``ncclTopoCompute``,
  speed arrays lines 1051-1067): a number of channels and a bandwidth per channel. We do not
  run NCCL's search; :func:`ring_graph` keeps its rule — try the per-channel speeds of the
  architecture's array from the fastest that fits, fit as many channels as the links carry, stop
  at the first speed that uses all the bandwidth, never go below half the first speed
  (``speedArray[i+1] / bw > .49``). This reproduces the bus bandwidths NCCL's maintainers quote:
  12 x 30 = 360 GB/s on 8 H100 ("NCCL can get an effective NVLink bandwidth of 370GB/s",
  nccl-tests issue #212), 8 x 24 = 192 GB/s across DGX A100 nodes ("8x200Gbit/s IB cards and we
  measure 192GB/s AllReduce BusBW", NVIDIA/nccl issue #812).

The bottleneck per GPU: inside a node the ring's channels are bounded by the GPU's NVLink (or
PCIe) bandwidth; across nodes every channel of the ring leaves each node through one NIC, so the
node's NICs bound the ring: NICs x NIC rate per node, which is each GPU's share of the NICs
(NICs x rate / GPUs per node) carrying its 1/G of the bytes. :func:`ring_graph` takes the slower.

The bandwidth NCCL's model assumes is not always what it reaches: the fabric table carries an
*efficiency* (achieved / modelled bus bandwidth, from published measurements) that scales the
bandwidth term of the chosen algorithm. NCCL picks by its model, not by the efficiency, and so
does :func:`allreduce_plan`.

**How many SMs an all-reduce occupies.** NCCL launches its kernel with one CTA (thread block)
per channel (``src/enqueue.cc`` line 1758: ``dim3 grid = {(unsigned)nChannels, 1, 1}``), and an
NCCL CTA holds its SM alone ("NCCL CTAs won't share an SM with compute kernels", NCCL's
maintainer in NVIDIA/nccl#689). The channels a collective uses (:func:`launched_ctas`): the
communicator's ``nChannels`` is the ring/tree graph's channels doubled (``src/graph/connect.cc``
line 460, ``std::min(MAXCHANNELS, nChannels * 2)``; MAXCHANNELS = 64, ``device.h`` line 91),
doubled again on Hopper and later across nodes when the ring's per-channel speed is above 45
GB/s and fewer than 16 channels (``connect.cc`` lines 480-483); per call, a ring or tree drops
channels while ``nBytes < nc * nThreads * threadThreshold`` (``enqueue.cc`` lines 2070-2096;
threads per algorithm/protocol ``tuning.cc`` lines 244-256, ``device.h`` lines 93-114;
thresholds ``comm.h`` lines 49-51 and ``tuning.cc`` lines 589-595); NVLS uses its own
``nvlsChannels`` (16 on Hopper, 24 on one Blackwell node, 32 across Blackwell nodes:
``src/transport/nvls.cc`` lines 155-157 and 210-214), across nodes at most ``nChannels``
(``enqueue.cc`` lines 2084-2090). This is 16 SMs across DGX A100 nodes, as NCCL's maintainer
says ("If you are on DGX with 8 NICs and a top speed of 190 GB/s, then it would use 16 SMs",
NVIDIA/nccl#689).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The NVIDIA/nccl commit these tables and formulas were read from.
NCCL_SOURCE = "NVIDIA/nccl@5067397c2676d5aed50042fc39e5c8ee96eb0027 (NCCL 2.30.7)"

ALGOS = ("tree", "ring", "collnet_direct", "collnet_chain", "nvls", "nvls_tree")
PROTOS = ("LL", "LL128", "Simple")
TREE, RING, COLLNET_DIRECT, COLLNET_CHAIN, NVLS, NVLS_TREE = range(6)
LL, LL128, SIMPLE = range(3)
#: Compute-capability index of NCCL's tables (tuning.cc ``compCapIndex``).
VOLTA, AMPERE, HOPPER, BLACKWELL = range(4)
#: Hardware kinds of ``hwLatencies``.
HW_NVLINK, HW_PCI, HW_NET = range(3)

# tuning.cc lines 150-155: baseLatencies[algo][proto] (µs).
BASE_LAT = (
    (6.8, 14.0, 8.4),  # Tree
    (6.6, 14.0, 8.4),  # Ring
    (0.0, 0.0, 0.0),  # CollNet Direct
    (0.0, 0.0, 0.0),  # CollNet Chain
    (0.0, 0.0, 0.0),  # NVLS
    (0.0, 0.0, 0.0),  # NVLS Tree
)
# tuning.cc lines 157-175: hwLatencies[hw][algo][proto] (µs).
HW_LAT = (
    (  # NVLINK
        (0.6, 1.25, 4.0), (0.6, 1.9, 3.4), (0, 0, 3.7), (0, 0, 2.8), (0, 0, 25.0), (0, 0, 25.0),
    ),
    (  # PCI
        (1.0, 1.9, 4.0), (1.0, 2.5, 5.7), (0, 0, 3.7), (0, 0, 2.8), (0, 0, 0.0), (0, 0, 0.0),
    ),
    (  # NET
        (5.0, 8.5, 14.0), (2.7, 4.0, 14.0), (0, 0, 31.0), (0, 0, 30.0), (0, 0, 18.0),
        (0, 0, 20.9),
    ),
)  # fmt: skip
# tuning.cc lines 178-183: llMaxBws[index1][nNodes index] (GB/s). index1 is the GPU
# generation on one node, the CPU vendor across nodes (0 Intel, 1 AMD).
LL_MAX_BW = ((39.0, 39.0, 20.4), (87.7, 22.5, 19.0), (141.0, 45.0, 35.0), (282.0, 90.0, 70.0))
# tuning.cc lines 185-211: per-channel caps [compCapIndex][nNodes index] (GB/s).
PER_CH_RING_LL128 = ((20.0,) * 3, (20.0,) * 3, (36.7,) * 3, (40.0,) * 3)
PER_CH_TREE_LL128 = ((20.0,) * 3, (20.0,) * 3, (36.7, 36.7, 29.0), (55.6, 31.67, 20.0))
PER_CH_TREE = ((26.5, 18.5, 10.0), (24.0, 23.6, 17.8), (38.7, 41.4, 36.0), (70.0, 42.8, 24.0))
PER_CH_NVLS_TREE = ((26.5, 18.5, 10.0), (24.0, 23.6, 17.8), (0.0, 57.7, 45.5), (0.0, 96.0, 80.0))
# tuning.cc lines 139-144.
NVLS_EFFICIENCY = (0.0, 0.0, 0.85, 0.74)
# tuning.cc lines 623-627: treeCorrectionFactor[proto][log2(bytes / 64)].
TREE_CORRECTION = (
    (1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0, 1.0,
     1.0, 1.0, 1.0),
    (1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6, .6, .6, .6, .6, .8, .9, .9, .9, .9,
     1.0, 1.0, 1.0),
    (.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7, .8, .9, .9,
     .9),
)  # fmt: skip

# topo.h lines 19-24 and ncclTopoNVLinkBw (lines 274-282): GB/s per NVLink by compute capability.
NVLINK_BW_BY_SM = {60: 18.0, 70: 20.0, 80: 20.0, 86: 12.0, 90: 20.6, 100: 40.1}
# topo.cc kvDictPciGen (lines 545-556): 100 Mb/s per lane; bw = width * speed / 80 (line 657).
PCI_LANE_SPEED = {3: 60, 4: 120, 5: 240, 6: 480}
# search.cc lines 1051-1067: per-channel speeds NCCL's search tries, fastest first.
SPEEDS_INTRA = (40.0, 30.0, 20.0, 18.0, 15.0, 12.0, 10.0, 9.0, 7.0, 6.0, 5.0, 4.0, 3.0)
SPEEDS_INTER = (48.0, 30.0, 28.0, 24.0, 20.0, 18.0, 15.0, 12.0, 10.0, 9.0, 7.0, 6.0, 5.0, 4.0,
                3.0, 2.4, 1.2, 0.24, 0.12)  # fmt: skip
SPEEDS_INTRA_SM90 = (60.0, 50.0, 40.0, 30.0, 24.0, 20.0, 15.0, 12.0, 11.0, 6.0, 3.0)
SPEEDS_INTER_SM90 = (48.0, 45.0, 42.0, 40.0, 30.0, 24.0, 22.0, 20.0, 17.5, 15.0, 12.0, 6.0, 3.0,
                     2.4, 1.2, 0.24, 0.12)  # fmt: skip
SPEEDS_INTRA_SM100 = (90.0, 80.0, 70.0, 60.0, 50.0, 45.0, 40.0, 30.0, 24.0, 20.0, 19.0, 18.0)
SPEEDS_INTER_SM100 = (96.0, 86.0, 80.0, 48.0, 45.1, 42.0, 40.0, 30.0, 24.0, 22.0, 20.0, 17.5,
                      15.0, 12.0, 6.0, 3.0, 2.4, 1.2, 0.24, 0.12)  # fmt: skip
#: Ring graphs search at most MAXCHANNELS / 2 channels (src/init.cc line 1177, device.h line 91);
#: NVLS at most min(NCCL_MAX_NVLS_ARITY = 32, GPUs) (search.cc line 1127).
MAX_RING_CHANNELS = 32
MAX_NVLS_ARITY = 32
#: The most channels a communicator has (device.h line 91).
MAX_CHANNELS = 64
#: nvlsChannels defaults (src/transport/nvls.cc lines 155-157): Hopper; Blackwell one node;
#: Blackwell across nodes.
NVLS_CHANNELS_SM90, NVLS_CHANNELS_SM100_NVL, NVLS_CHANNELS_SM100 = 16, 24, 32
#: Threads per CTA (device.h lines 93-114: NCCL_MAX_NTHREADS 640, NCCL_SIMPLE_MAX_NTHREADS 512,
#: NCCL_LL_MAX_NTHREADS 512, NCCL_LL128_MAX_NTHREADS 640) and PCI_BW (topo.h line 25), below
#: which the ring's Simple protocol runs 256 threads (tuning.cc lines 244-245).
MAX_NTHREADS, SIMPLE_MAX_NTHREADS, LL_MAX_NTHREADS, LL128_MAX_NTHREADS = 640, 512, 512, 640
PCI_BW = 12.0
#: Bytes per thread below which a ring/tree call drops a channel (comm.h lines 49-51:
#: LL 8, LL128 8, Simple 64; tuning.cc line 593: the ring's LL threshold x nRanks; lines
#: 594-595: CollNet 512).
THREAD_THRESHOLD = (8, 8, 64)
COLLNET_THREAD_THRESHOLD = 512
#: Network post overhead per ring step (µs) by CPU vendor, times 3 for Simple (tuning.cc
#: ``getNetOverhead``, lines 228-233 and 404-410).
NET_OVERHEAD_US = {"intel": 1.0, "amd": 2.0}


def nvlink_bw(sm: int) -> float:
    """NCCL's GB/s per NVLink for a compute capability (topo.h ``ncclTopoNVLinkBw``)."""
    if sm >= 100:
        return NVLINK_BW_BY_SM[100]
    if sm >= 90:
        return NVLINK_BW_BY_SM[90]
    if sm == 86:
        return NVLINK_BW_BY_SM[86]
    if sm >= 80:
        return NVLINK_BW_BY_SM[80]
    if sm >= 70:
        return NVLINK_BW_BY_SM[70]
    if sm >= 60:
        return NVLINK_BW_BY_SM[60]
    return NVLINK_BW_BY_SM[80]


def pci_bw(gen: int, width: int = 16) -> float:
    """NCCL's GB/s of a PCIe link (topo.cc line 657)."""
    return width * PCI_LANE_SPEED[gen] / 80.0


def nic_bw(gbit: float) -> float:
    """NCCL's GB/s of a NIC of ``gbit`` Gb/s (topo.cc line 418: ``mbps / 8000``)."""
    return gbit * 1000.0 / 8000.0


def cc_index(sm: int) -> int:
    """tuning.cc ``compCapIndex``: Blackwell >= 100, Hopper >= 90, Ampere >= 80, else Volta."""
    return BLACKWELL if sm >= 100 else HOPPER if sm >= 90 else AMPERE if sm >= 80 else VOLTA


@dataclass(frozen=True)
class System:
    """What NCCL's tuning needs to know about the machine (NCCL's units: GB/s, µs).

    ``intra_total_bw``: the GPU's bandwidth to its peers inside a node (sum of its NVLinks, or its
    PCIe link); ``intra_path_bw``: the fastest single path to one peer (an NVSwitch path is all
    the links; in a mesh, the bundle to one neighbour); ``nics`` per node at ``nic_bw`` GB/s each.
    ``intra_busbw`` / ``inter_busbw`` replace the graph's total bandwidth when the user stated a
    bus bandwidth (``--busbw-gbps``) or a sweep measured one.
    """

    sm: int
    gpus_per_node: int
    intra_nvlink: bool
    intra_total_bw: float
    intra_path_bw: float
    nvswitch: bool
    nics: int
    nic_bw: float
    nic_near_gpu: bool = True
    nvls: bool = False
    collnet: bool = False
    cpu_vendor: str = "intel"
    intra_busbw: float | None = None
    inter_busbw: float | None = None


@dataclass(frozen=True)
class Graph:
    """A channel layout NCCL's search would find: channels x per-channel GB/s."""

    channels: int
    bw_intra: float
    bw_inter: float
    limited_by: str  # "intra" or "inter": which link bounds the total

    @property
    def total(self) -> float:
        return self.channels * self.bw_intra


def _speeds(sm: int, inter: bool) -> tuple[float, ...]:
    if sm >= 100:
        return SPEEDS_INTER_SM100 if inter else SPEEDS_INTRA_SM100
    if sm >= 90:
        return SPEEDS_INTER_SM90 if inter else SPEEDS_INTRA_SM90
    return SPEEDS_INTER if inter else SPEEDS_INTRA


def _search(speeds: tuple[float, ...], max_bw: float, fits) -> tuple[int, float]:
    """search.cc's speed loop: from the fastest speed <= ``max_bw``, the first that uses all
    the bandwidth, else the best found before the speed falls under half the first one."""
    start = next((s for s in speeds if s <= max_bw), speeds[-1])
    best = (0, 0.0)
    for s in speeds:
        if s > max_bw:
            continue
        if best[0] and s / start <= 0.49:
            break
        channels, full = fits(s)
        if channels < 1:
            continue
        if channels * s > best[0] * best[1]:
            best = (channels, s)
        if full:
            break
    if not best[0]:
        best = (1, start)
    return best


def _dup_channels(channels: int, speed: float, sm: int) -> tuple[int, float]:
    """``ncclTopoDupChannels`` (search.cc lines 1036-1049): fast channels are split in two,
    same total bandwidth, twice the channels (which the per-channel caps of LL128 and Tree see)."""
    if speed < 25.0 or (sm > 80 and speed < 50.0 and channels > 4):
        return channels, speed
    dup = min(channels * 2, MAX_RING_CHANNELS)
    return dup, speed / math.ceil(dup / channels)


def ring_graph(system: System, nodes: int, ranks_per_node: int) -> Graph:
    """The ring channels NCCL would build (see the module docstring)."""
    if nodes <= 1:
        total = system.intra_total_bw

        def fits(s: float) -> tuple[int, bool]:
            n = min(int(total // s + 1e-9), MAX_RING_CHANNELS)
            return n, n * s >= total - 1e-9

        channels, speed = _search(_speeds(system.sm, False), system.intra_path_bw, fits)
        channels, speed = _dup_channels(channels, speed, system.sm)
        graph = Graph(channels, speed, speed, "intra")
        if system.intra_busbw is not None:
            per = system.intra_busbw / graph.channels
            graph = Graph(graph.channels, per, per, "intra")
        return graph
    # Across nodes: a channel leaves the node through one NIC; the ring also crosses the
    # node's NVLink/PCIe, which carries (G-1)/G of the ring's bandwidth per GPU.
    g = max(ranks_per_node, 1)
    intra_cap = system.intra_total_bw * (g / (g - 1) if g > 1 else math.inf)
    max_bw = min(system.nic_bw, system.intra_path_bw if g > 1 else system.nic_bw)

    def fits_net(s: float) -> tuple[int, bool]:
        per_nic = int(system.nic_bw // s + 1e-9)
        n = min(system.nics * per_nic, MAX_RING_CHANNELS)
        while n > 0 and n * s > intra_cap:
            n -= 1
        return n, n * s >= min(system.nics * system.nic_bw, intra_cap) - 1e-9

    channels, speed = _search(_speeds(system.sm, True), max_bw, fits_net)
    channels, speed = _dup_channels(channels, speed, system.sm)
    limited = "inter" if channels * speed < intra_cap - 1e-9 else "intra"
    graph = Graph(channels, speed, speed, limited)
    if system.inter_busbw is not None or system.intra_busbw is not None:
        inter = system.inter_busbw if system.inter_busbw is not None else graph.total
        intra = system.intra_busbw * (g / (g - 1)) if system.intra_busbw and g > 1 else math.inf
        total = min(inter, intra)
        per = total / graph.channels
        graph = Graph(graph.channels, per, per, "inter" if inter <= intra else "intra")
    return graph


def nvls_graph(system: System, nodes: int, ranks_per_node: int) -> Graph | None:
    """The NVLS channels (NVLink SHARP; Hopper and later with NVSwitch), or None.

    search.cc forces min = max = min(32, GPUs) channels on one node (line 1150) and raises the
    usable NVLink bandwidth by GPUs / (GPUs - 1) for non-ring patterns (line 1172); across nodes
    each NVLS head reaches the network through the node's NICs.
    """
    if not (system.nvls and system.nvswitch and system.sm >= 90 and ranks_per_node >= 2):
        return None
    channels = min(MAX_NVLS_ARITY, ranks_per_node)
    total = system.intra_total_bw * ranks_per_node / (ranks_per_node - 1)
    speeds = _speeds(system.sm, nodes > 1)
    cap = system.intra_path_bw if nodes <= 1 else min(system.nic_bw, system.intra_path_bw)
    if nodes > 1:
        cap = min(cap, system.nics * system.nic_bw / channels)
    speed = next((s for s in speeds if s <= cap and s * channels <= total), speeds[-1])
    return Graph(channels, speed, speed, "intra" if nodes <= 1 else "inter")


@dataclass(frozen=True)
class Tuning:
    """NCCL's model at one (ranks, nodes): latency (µs) and bandwidth (GB/s, algorithm
    bandwidth) per [algorithm][protocol]; 0 bandwidth = disabled. ``limited_by`` names the
    link that bounds each algorithm's bandwidth (which efficiency applies)."""

    ranks: int
    nodes: int
    latency: tuple[tuple[float, ...], ...]
    bandwidth: tuple[tuple[float, ...], ...]
    limited_by: tuple[str, ...]
    ring_channels: int
    cc: int
    intra_headroom: float = math.inf
    """Across nodes: the node's NVLink/PCIe capacity for the ring over the ring's total (>= 1);
    a slower-than-modelled intra-node link becomes the bottleneck once its efficiency falls
    below 1 / headroom."""
    comm_channels: int = 1
    """The communicator's ``nChannels`` (the CTAs of a large ring/tree call; see the module
    docstring)."""
    nvls_channels: int = 0
    ring_simple_threads: int = SIMPLE_MAX_NTHREADS


def _log2i(n: int) -> int:
    return math.floor(math.log2(n)) if n >= 1 else 0


def tune(system: System, ranks: int) -> Tuning:
    """``ncclTopoTuneModel`` for the all-reduce at ``ranks`` GPUs (tuning.cc lines 243-541)."""
    g = system.gpus_per_node
    nodes = 1 if ranks <= g else math.ceil(ranks / g)
    ppn = ranks / nodes
    cc = cc_index(system.sm)
    index2 = nodes - 1 if nodes <= 2 else 2
    # LL: on one node the GPU generation decides, across nodes the CPU vendor (tuning.cc 268).
    index1 = cc if nodes == 1 else (1 if system.cpu_vendor == "amd" else 0)
    ll_max = LL_MAX_BW[index1][index2]
    per_tree, per_ring128 = PER_CH_TREE[cc][index2], PER_CH_RING_LL128[cc][index2]
    per_tree128, per_nvls_tree = PER_CH_TREE_LL128[cc][index2], PER_CH_NVLS_TREE[cc][index2]
    ring = ring_graph(system, nodes, round(ppn))
    nvls = nvls_graph(system, nodes, round(ppn))
    # The tree graph keeps the ring's channels (search.cc line 447, "Try to get the same
    # nChannels between Rings and Trees"); CollNet graphs likewise (init.cc line 1194).
    graphs: list[Graph | None] = [ring, ring, ring, ring, nvls, nvls]
    intra_hw = HW_NVLINK if system.intra_nvlink else HW_PCI
    hw = intra_hw if nodes == 1 else HW_NET
    nsteps = 2 * (ranks - 1)
    lat = [[0.0] * 3 for _ in ALGOS]
    bw = [[0.0] * 3 for _ in ALGOS]
    for a in range(len(ALGOS)):
        graph = graphs[a]
        if graph is None:
            continue
        for p in range(3):
            if a in (NVLS, NVLS_TREE) and p != SIMPLE:
                continue
            collnet = a in (COLLNET_DIRECT, COLLNET_CHAIN)
            b = graph.bw_intra if (nodes <= 2 or collnet) else graph.bw_inter
            if a in (NVLS, NVLS_TREE):
                if graph.channels < 2:
                    continue
                intra_bw = (
                    graph.bw_intra * NVLS_EFFICIENCY[cc] * (graph.channels - 1) / graph.channels
                )
                intra_bw *= 2.0  # "AllReduce pipelines two operations."
                inter_bw = graph.bw_inter * (2 if (nodes <= 2 and a == NVLS_TREE) else 1)
                b = min(intra_bw, inter_bw, per_nvls_tree if a == NVLS_TREE else math.inf)
            bus = graph.channels * b
            if a == RING and p == LL:
                bus = min(ll_max, bus * 0.5)
            if a == RING and p == LL128:
                bus = min(bus * 0.92, graph.channels * per_ring128)
            if a == TREE:
                bus = min(bus * 0.92, graph.channels * per_tree)
            if a == TREE and p == LL:
                bus = min(bus / 3.8, ll_max)
            if a == TREE and p == LL128:
                bus = min(bus * (7.0 / 9.0 if nodes == 1 else 120.0 / 128.0),
                          graph.channels * per_tree128)  # fmt: skip
            if collnet and p != SIMPLE:
                bus = 0.0
            if a == COLLNET_DIRECT and p == SIMPLE:
                factor = ppn / graph.channels  # GPU/NIC ratio
                factor -= (factor - 1) / 2
                bus /= factor
                if system.sm >= 90:
                    bus *= 0.85
            # Bus bandwidth -> algorithm bandwidth (tuning.cc lines 376-382).
            ratio = ranks / nsteps if a in (RING, NVLS, NVLS_TREE) else 0.5
            bw[a][p] = bus * ratio
            latency = BASE_LAT[a][p]
            intra_lat = HW_LAT[intra_hw][a][p]
            inter_lat = HW_LAT[HW_NET][TREE][p] if ppn == 1 else HW_LAT[HW_NET][a][p]
            # latencyInter is the NIC's reported latency: 0 for IB and sockets (net_ib/init.cc
            # line 558, net_socket.cc line 174), so the two additions of tuning.cc 389-391 are 0.
            if a == RING:
                ring_lat = HW_LAT[hw][a][p]
                net_overhead = 0.0
                if nodes > 1:
                    net_overhead = NET_OVERHEAD_US.get(system.cpu_vendor, 1.0)
                    if p == SIMPLE:
                        net_overhead *= 3
                ring_lat = max(intra_lat, net_overhead)
                inter_steps = 0 if nodes == 1 else 2 * (nodes - 1)
                latency += (nsteps - inter_steps) * ring_lat + inter_steps * inter_lat
            elif a == TREE:
                latency += 2 * ((ranks // nodes - 1) * intra_lat + _log2i(nodes) * inter_lat)
            elif a == COLLNET_DIRECT:
                latency += (
                    2 * (min(1, ranks // nodes - 1) * intra_lat + (ranks // nodes - 1) * 0.4)
                    + inter_lat
                )
            elif a == COLLNET_CHAIN:
                latency += 2 * (ranks // nodes - 1) * intra_lat + inter_lat
            elif a == NVLS:
                latency = intra_lat + (inter_lat if nodes > 1 else 0.0)
            elif a == NVLS_TREE:
                latency += intra_lat + 2 * _log2i(nodes) * inter_lat
            lat[a][p] = latency
    # Enabled protocols and algorithms (tuning.cc lines 440-541).
    ll128 = system.intra_nvlink and (system.nic_near_gpu or nodes == 1)
    ll128 = ll128 and system.sm >= 70
    for a in range(len(ALGOS)):
        disable = False
        if nodes == 1 and a == NVLS_TREE:
            disable = True
        if not system.collnet and (
            a in (COLLNET_DIRECT, COLLNET_CHAIN) or (a == NVLS and nodes > 1)
        ):
            disable = True
        if a == COLLNET_DIRECT and not system.nvswitch:
            disable = True
        if nodes == 1 and a in (COLLNET_DIRECT, COLLNET_CHAIN):
            disable = True  # CollNet is the network's reduction: nothing to do on one node
        for p in range(3):
            if disable or (p == LL128 and not ll128):
                bw[a][p] = 0.0
    limited = tuple(
        (graphs[a].limited_by if graphs[a] is not None else "intra")
        if a not in (NVLS,) or nodes > 1
        else "nvls"
        for a in range(len(ALGOS))
    )
    # The communicator's channels: the graph's doubled (connect.cc line 460), doubled again on
    # Hopper+ across nodes for fast, few channels (connect.cc lines 480-483).
    comm_channels = min(MAX_CHANNELS, 2 * ring.channels)
    if system.sm >= 90 and nodes > 1 and ring.bw_intra > 45.0 and comm_channels < 16:
        comm_channels = min(MAX_CHANNELS, 2 * comm_channels)
    if system.sm >= 100:
        nvls_channels = NVLS_CHANNELS_SM100 if nodes > 1 else NVLS_CHANNELS_SM100_NVL
    else:
        nvls_channels = NVLS_CHANNELS_SM90
    ring_threads = 256 if ring.bw_intra * ring.channels <= PCI_BW else SIMPLE_MAX_NTHREADS
    headroom = math.inf
    if nodes > 1 and ppn > 1:
        headroom = system.intra_total_bw * ppn / (ppn - 1) / max(ring.total, 1e-12)
        if system.intra_busbw is not None:
            headroom = system.intra_busbw * ppn / (ppn - 1) / max(ring.total, 1e-12)
    return Tuning(
        ranks=ranks,
        nodes=nodes,
        latency=tuple(tuple(row) for row in lat),
        bandwidth=tuple(tuple(row) for row in bw),
        limited_by=limited,
        ring_channels=ring.channels,
        cc=cc,
        intra_headroom=headroom,
        comm_channels=comm_channels,
        nvls_channels=nvls_channels if nvls is not None else 0,
        ring_simple_threads=ring_threads,
    )


def launched_ctas(t: Tuning, algo: np.ndarray, proto: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
    """CTAs (= channels = SMs) NCCL launches for each all-reduce (``enqueue.cc`` lines 2070-2114).

    NVLS: ``nvlsChannels`` (across nodes at most the communicator's channels); CollNet Direct:
    the communicator's channels (NCCL trims them for small calls by a rule that needs the
    number of NVLS/CollNet heads, which we do not model: an upper bound); ring, tree, CollNet
    Chain: the largest ``nc`` <= the communicator's channels with ``nBytes >= nc * nThreads *
    threadThreshold``, at least 1.
    """
    algo = np.asarray(algo, dtype=int)
    proto = np.asarray(proto, dtype=int)
    b = np.asarray(nbytes, dtype=float)
    threads = np.array(
        [
            [LL_MAX_NTHREADS, LL128_MAX_NTHREADS, SIMPLE_MAX_NTHREADS],  # tree
            [LL_MAX_NTHREADS, LL128_MAX_NTHREADS, t.ring_simple_threads],  # ring
            [MAX_NTHREADS] * 3,  # CollNet Direct (unused: see above)
            [MAX_NTHREADS] * 3,  # CollNet Chain
            [MAX_NTHREADS] * 3,  # NVLS
            [MAX_NTHREADS] * 3,  # NVLS Tree
        ],
        dtype=float,
    )
    threshold = np.array([THREAD_THRESHOLD] * len(ALGOS), dtype=float)
    threshold[RING, LL] *= t.ranks
    threshold[COLLNET_DIRECT, SIMPLE] = threshold[COLLNET_CHAIN, SIMPLE] = COLLNET_THREAD_THRESHOLD
    per_channel = threads[algo, proto] * threshold[algo, proto]
    trimmed = np.clip(np.floor(b / per_channel), 1, t.comm_channels)
    nvls = t.nvls_channels if t.nodes <= 1 else min(t.nvls_channels, t.comm_channels)
    out = np.where(algo == NVLS, nvls, trimmed)
    out = np.where(algo == NVLS_TREE, t.nvls_channels, out)
    out = np.where(algo == COLLNET_DIRECT, t.comm_channels, out)
    return out.astype(int)


@dataclass(frozen=True)
class Plan:
    """What NCCL does for each message of an all-reduce at one GPU count.

    Arrays are (K,) over message sizes: the chosen algorithm and protocol (indices into ALGOS,
    PROTOS), the latency in seconds, the algorithm bandwidth in bytes/s that NCCL's model
    assumes, and which link's efficiency applies to it.
    """

    algo: np.ndarray
    proto: np.ndarray
    latency_s: np.ndarray
    bytes_per_s: np.ndarray
    limited_by: tuple[str, ...]
    intra_headroom: float = math.inf
    channels: np.ndarray | None = None
    """CTAs NCCL launches for each message (:func:`launched_ctas`): the SMs it occupies."""

    def model_time_s(self, nbytes: np.ndarray) -> np.ndarray:
        return self.latency_s + np.asarray(nbytes, dtype=float) / self.bytes_per_s

    def busbw_gbps(self, nbytes: np.ndarray, ranks: int) -> np.ndarray:
        """nccl-tests' bus bandwidth of each message under NCCL's model (algbw · 2(N−1)/N)."""
        t = self.model_time_s(nbytes)
        return np.asarray(nbytes, dtype=float) / t / 1e9 * 2 * (ranks - 1) / ranks


def allreduce_plan(system: System, ranks: int, nbytes: np.ndarray) -> Plan:
    """``ncclTopoGetAlgoTime`` (tuning.cc lines 630-655) for every enabled (algorithm,
    protocol) and message size; the least time wins, as in NCCL."""
    b = np.atleast_1d(np.asarray(nbytes, dtype=float))
    if ranks < 2:
        raise ValueError("an all-reduce needs at least 2 ranks")
    t = tune(system, ranks)
    best_time = np.full(b.shape, np.inf)
    algo = np.zeros(b.shape, dtype=int)
    proto = np.zeros(b.shape, dtype=int)
    lat_out = np.zeros(b.shape)
    bw_out = np.ones(b.shape)
    log_size = np.floor(np.log2(np.maximum(b, 64.0) / 64.0)).astype(int)  # log2i(nBytes >> 6)
    for a in range(len(ALGOS)):
        for p in range(3):
            bw = t.bandwidth[a][p]
            if bw <= 0:
                continue
            lat = np.full(b.shape, t.latency[a][p])
            eff_bw = np.full(b.shape, bw)
            if a == TREE:
                ok = (log_size >= 0) & (log_size < 23)
                corr = np.asarray(TREE_CORRECTION[p])[np.clip(log_size, 0, 23)]
                eff_bw = np.where(ok, eff_bw * corr, eff_bw)
            if a == NVLS_TREE and t.cc >= BLACKWELL:
                ok = (log_size >= 0) & (log_size < 24)
                corr = np.asarray(TREE_CORRECTION[p])[np.clip(log_size, 0, 23)]
                eff_bw = np.where(ok, eff_bw * corr, eff_bw)
            if a == RING and p == SIMPLE and t.nodes > 1:
                plateau = b / (t.ring_channels * ranks) >= 64
                lat = np.where(plateau, lat * (1.9 if t.cc == VOLTA else 1.4), lat)
            time = lat + b / (1000.0 * eff_bw)  # µs
            better = time < best_time
            best_time = np.where(better, time, best_time)
            algo = np.where(better, a, algo)
            proto = np.where(better, p, proto)
            lat_out = np.where(better, lat, lat_out)
            bw_out = np.where(better, eff_bw, bw_out)
    return Plan(
        algo=algo,
        proto=proto,
        latency_s=lat_out * 1e-6,
        bytes_per_s=bw_out * 1e9,
        limited_by=t.limited_by,
        intra_headroom=t.intra_headroom,
        channels=launched_ctas(t, algo, proto, b),
    )


def plan_label(plan: Plan, weights: np.ndarray | None = None) -> str:
    """The algorithm/protocol that carries most of the bytes, e.g. ``ring/Simple``."""
    if plan.algo.size == 0:
        return ""
    w = np.ones(plan.algo.shape) if weights is None else np.asarray(weights, dtype=float)
    keys = plan.algo * 3 + plan.proto
    totals = np.bincount(keys, weights=w, minlength=len(ALGOS) * 3)
    k = int(np.argmax(totals))
    return f"{ALGOS[k // 3]}/{PROTOS[k % 3]}"
