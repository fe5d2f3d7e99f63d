"""The machines a projection can assume, each value with where it comes from.

A **fabric** is what NCCL's cost model (:mod:`harness.projection.nccl`) needs to know about a
cluster: the GPU generation (NCCL's tables differ by compute capability), GPUs per node, the
**intra-node link** (NVSwitch, an NVLink mesh, or PCIe; in NCCL's own GB/s per link), the
**network** (NICs per node, each NIC's rate, and its transport: RDMA, TCP sockets, AWS EFA),
whether NVLink SHARP (NVLS) and in-network reduction (CollNet/SHARP) are available, and the
CPU vendor (NCCL's LL bandwidth cap and per-step network overhead depend on it).

NCCL's model is what NCCL *plans* with; what it *reaches* is a share of it. Each link carries
an **efficiency** — achieved bus bandwidth / NCCL's modelled bus bandwidth — as a stated range
from published measurements (``EFFICIENCY``). The projection draws it inside that range, so its
interval carries the uncertainty of the network.

Names a user can give ``--fabric``: a preset (``PRESETS``: DGX-1, DGX-2, DGX A100, DGX H100/
H200, DGX B200, 8x PCIe nodes on 25/100 GbE, AWS p4d/p5, GCP A3 Mega, Azure ND A100 v4 / ND H100
v5, ...), ``INTRA,INTER`` from the links (``INTRA_LINKS``, ``NET_LINKS``), or one link name. New
flags (``--gpu``, ``--nvlink``, ``--pcie-gen``, ``--nics-per-node``, ``--nic-gbps``,
``--transport``, ``--nvls``, ``--sharp``) change one property of the chosen fabric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from distrinews.errors import UserError
from harness.projection import nccl

NCCL_TOPO = f"{nccl.NCCL_SOURCE} src/graph/topo.h"


@dataclass(frozen=True)
class Range:
    """A stated uncertain input: a nominal value (the point estimate) and the range the
    projection draws it from, uniformly, with where the range comes from."""

    nominal: float
    lo: float
    hi: float
    source: str

    @property
    def fixed(self) -> bool:
        return self.lo == self.hi

    def text(self, fmt: str = "{:g}") -> str:
        if self.fixed:
            return fmt.format(self.nominal)
        return f"{fmt.format(self.nominal)} [{fmt.format(self.lo)}-{fmt.format(self.hi)}]"


#: Achieved / NCCL-modelled bus bandwidth, per kind of link (a stated range per kind).
EFFICIENCY: dict[str, Range] = {
    "nvlink": Range(
        0.95,
        0.83,
        1.04,
        "NVLink/NVSwitch ring: 8x H100 reach ~370 GB/s where this model of NCCL's search "
        "gives 359 (1.03; sjeaugey, NVIDIA/nccl-tests#212); 8x A100 80GB (HPE Apollo) measured "
        "~200 GB/s of 240 (0.83; NVIDIA/nccl-tests#149)",
    ),
    "pcie": Range(
        0.9,
        0.75,
        1.0,
        "no published nccl-tests figure for PCIe rings at hand: a wide stated range",
    ),
    "nvls": Range(
        1.2,
        1.0,
        1.21,
        "NVLS all-reduce: 'peak busBw of ~480GB/s' on 8x H100 (sjeaugey, NVIDIA/nccl-tests#212) "
        "and 475 GB/s measured on 8x H200 (NVIDIA/nccl-tests#272) against NCCL's model of "
        "8 x 50 = 400 GB/s (1.19-1.2)",
    ),
    "rdma": Range(
        0.95,
        0.78,
        1.02,
        "InfiniBand/RoCE rings: DGX A100 8x HDR 'we measure 192GB/s', NCCL's 8 x 24 less "
        "the ring's latency at 4 GiB gives 189 (1.01) "
        "(NVIDIA/nccl#812); 4x HDR 91 of 96 GB/s (NVIDIA/nccl-tests#100); 8x 100G RoCE "
        "~75 of 96 GB/s, 'a bit low' per NCCL's maintainer (NVIDIA/nccl#495)",
    ),
    "tcp": Range(
        0.5,
        0.35,
        0.6,
        "NCCL over TCP sockets: 'not ... more than 60% of wire speed over 32Gbps' "
        "(NVIDIA/nccl#209); 4.5-5.2 GB/s busbw on 100 Gb/s = 36-42% (NVIDIA/nccl#450)",
    ),
    "efa": Range(
        0.8,
        0.5,
        0.95,
        "no published nccl-tests figure for EFA (aws-ofi-nccl) at hand: a wide stated range",
    ),
    "tcpxo": Range(
        0.7,
        0.4,
        0.95,
        "no published nccl-tests figure for GPUDirect-TCPXO at hand: a wide stated range",
    ),
}

#: GPU generations: NCCL's compute capability and NVLinks per GPU (vendor datasheets).
GPUS: dict[str, tuple[int, int, str]] = {
    "P100": (60, 4, "Tesla P100 SXM2: 4 NVLink 1.0 links (NVIDIA Tesla P100 datasheet)"),
    "V100": (70, 6, "Tesla V100 SXM2/3: 6 NVLink 2.0 links (NVIDIA V100 datasheet, 300 GB/s)"),
    "A100": (80, 12, "A100 SXM4: 12 NVLink 3.0 links (NVIDIA A100 datasheet, 600 GB/s; "
                     "'NV12' in nvidia-smi topo, NVIDIA/nccl#1505)"),
    "H100": (90, 18, "H100 SXM5: 18 NVLink 4.0 links (NVIDIA H100 datasheet, 900 GB/s)"),
    "H200": (90, 18, "H200 SXM: the same 18 NVLink 4.0 links as H100 (NVIDIA H200 datasheet)"),
    "B200": (100, 18, "B200: 18 NVLink 5.0 links (NVIDIA DGX B200 datasheet, 1.8 TB/s; "
                      "'NV18' in nvidia-smi topo)"),
}  # fmt: skip
NVLINK_GENERATIONS = ("P100", "V100", "A100", "H100", "H200", "B200")

#: Streaming multiprocessors per GPU (NVIDIA's published specifications): NCCL's CTAs take
#: whole SMs away from the backward that runs beside them (see ``SM_CONTENTION``).
SM_COUNT: dict[str, tuple[int, str]] = {
    "P100": (56, "Tesla P100 SXM2: 56 SMs (NVIDIA Tesla P100 whitepaper, GP100)"),
    "V100": (80, "Tesla V100 SXM2: 80 SMs (NVIDIA Tesla V100 GPU architecture whitepaper)"),
    "A100": (108, "A100: 108 SMs (NVIDIA A100 Tensor Core GPU architecture whitepaper)"),
    "H100": (132, "H100 SXM5: 132 SMs (NVIDIA H100 Tensor Core GPU architecture whitepaper)"),
    "H200": (132, "H200: the H100 SXM5's GH100 with 132 SMs and more HBM (NVIDIA H200 "
                  "datasheet: 'based on the NVIDIA Hopper architecture')"),
    "B200": (148, "B200: 148 SMs (CUDA device query, 'Number of SMs: 148', pytorch/ao#4002)"),
}  # fmt: skip
#: The H100 PCIe card (the ``pcie-h100-hdr200`` preset) has fewer SMs than the SXM5 module.
H100_PCIE_SM_COUNT = (114, "H100 PCIe: 114 SMs (NVIDIA H100 Tensor Core GPU architecture "
                           "whitepaper)")  # fmt: skip

#: HBM bandwidth per GPU, GB/s (NVIDIA's datasheets): what DDP's bucket copies stream through,
#: and what an all-reduce beside backward takes a share of (``HBM_CONTENTION``).
HBM_GBPS: dict[str, tuple[float, str]] = {
    "P100": (732.0, "Tesla P100 SXM2: 732 GB/s HBM2 (NVIDIA Tesla P100 datasheet)"),
    "V100": (900.0, "Tesla V100 SXM2/SXM3: 900 GB/s HBM2 (NVIDIA V100 datasheet)"),
    "A100": (1555.0, "A100 40GB SXM4: 1,555 GB/s HBM2 (NVIDIA A100 datasheet; the 80GB "
                     "card's 2,039 would make both HBM terms ~25% smaller)"),
    "H100": (3350.0, "H100 SXM5: 3.35 TB/s HBM3 (NVIDIA H100 datasheet)"),
    "H200": (4800.0, "H200 SXM: 4.8 TB/s HBM3e (NVIDIA H200 datasheet)"),
    "B200": (8000.0, "B200: 8 TB/s HBM3e (NVIDIA DGX B200 datasheet)"),
}  # fmt: skip
H100_PCIE_HBM_GBPS = (2000.0, "H100 PCIe: 2 TB/s HBM2e (NVIDIA H100 datasheet)")

#: DDP's bucket copies at N > 1, per step: each gradient is copied into its bucket (scaled by
#: 1/N on the way: ``at::mul_out(bucket_view, grad, 1/N)`` in torch's
#: torch/csrc/distributed/c10d/reducer.cpp, ``mark_variable_ready_dense``), and the reduced
#: bucket is copied back into the gradients after the all-reduce (``copy_bucket_to_grad`` in
#: ``finalize_bucket_dense``, unless ``gradient_as_bucket_view``): 2 reads + 2 writes of the
#: gradient's bytes through HBM, on the compute stream (nothing hides them). At N = 1 there is
#: no DDP and no copy. The copy kernels reach a share of the datasheet bandwidth:
COPY_EFFICIENCY = Range(
    0.8,
    0.65,
    0.95,
    "stated: a device-to-device copy reaches 65-95% of the datasheet HBM bandwidth (no "
    "measurement of our own at hand: a wide range); 4 x gradient bytes per step at N > 1 "
    "(torch reducer.cpp: mul_out into the bucket, copy_bucket_to_grad back)",
)
#: HBM bytes an NCCL all-reduce moves per byte of bus bandwidth: "300GB/s needs to be
#: multiplied by at least 2x for memory bandwidth, as we need to store to memory, then read back
#: from it. If you add reading from or writing to user data, it can be 3x" (NCCL's maintainer,
#: NVIDIA/nccl#1428): 2-3.
HBM_BYTES_PER_BUS_BYTE = (2.0, 3.0)

#: How much of the SM share NCCL's CTAs take (channels / SMs) the compute running beside an
#: all-reduce loses. Stated from first principles, before its effect on the published tables
#: was looked at: 1 (the upper end) when the overlapped backward is SM-bound and spreads over
#: every SM, since NCCL's CTAs hold their SMs alone ("NCCL CTAs won't share an SM with compute
#: kernels", NVIDIA/nccl#689); 0.5 (the lower end) where the kernels beside it do not fill the
#: GPU or wait on latency, so fewer SMs cost them less. The nominal value is the middle, as for
#: every stated range. This term is the SM part only; memory bandwidth is ``HBM_CONTENTION``.
SM_CONTENTION = Range(
    0.75,
    0.5,
    1.0,
    "stated: overlapped backward slows by 0.5-1x the SM share NCCL's CTAs hold "
    "(channels / SMs; one CTA per channel, enqueue.cc line 1758; CTAs hold their SMs alone, "
    "NVIDIA/nccl#689); HBM contention is its own term (HBM_CONTENTION)",
)
#: Memory-bandwidth contention, the other half of what a hidden all-reduce costs the backward
#: beside it: the all-reduce streams H x its bus bandwidth through HBM (H = 2-3,
#: ``HBM_BYTES_PER_BUS_BYTE``), and the overlapped kernels lose 0.5-1x that share of the HBM
#: bandwidth (1 when they are memory-bound, 0.5 when they mostly are not: the same reasoning as
#: ``SM_CONTENTION``). The drawn factor is the product, 1-3 (nominal 2: the middle), times
#: bus bandwidth / HBM bandwidth. Set from those sources before its effect on the published
#: tables was looked at; it and the SM share together put a compute kernel beside an NVLink
#: all-reduce at about 1.5-2x slower, as measured: GEMM 1.76x, attention 1.83x, elementwise
#: 2.5x on A100-SXM4-80GB beside an all-gather (NVIDIA/nccl#1428); a CUTLASS GEMM 2.24x on 8x
#: V100 beside a 24-channel ring all-reduce (parasailteam/coconet#6; tests/unit check both).
HBM_CONTENTION = Range(
    2.0,
    1.0,
    3.0,
    "stated: overlapped backward loses 0.5-1x the HBM share an all-reduce takes, which "
    "streams 2-3x its bus bandwidth through HBM (NVIDIA/nccl#1428): 1-3 x bus bandwidth / "
    "HBM bandwidth",
)
#: A guard: the first-order picture (compute on the SMs NCCL leaves) holds only while NCCL
#: takes a minority of the SMs; no NCCL configuration of the GPUs above comes near (64 CTAs at
#: most, on 132-148 SMs where that many channels are built).
MAX_SM_SHARE = 0.9


@dataclass(frozen=True)
class IntraLink:
    """How GPUs of one node reach each other, in NCCL's units.

    ``kind``: ``nvswitch`` (every GPU reaches every other through all its links), ``mesh`` (an
    NVLink mesh: the ring's bandwidth depends on which GPUs are used, ``ring_bw_by_gpus``) or
    ``pcie``. ``sm`` is the GPU generation the link implies (a PCIe link does not: the fabric's
    GPU decides).
    """

    name: str
    kind: str
    sm: int
    links: int = 0
    pcie_gen: int = 0
    ring_bw_by_gpus: tuple[tuple[int, float], ...] = ()
    nvls: bool = False
    description: str = ""
    source: str = ""

    def total_bw(self, gpus: int, sm: int) -> float:
        """The GPU's bandwidth to its peers (NCCL's ``totalBw``) when ``gpus`` share the node."""
        if self.kind == "pcie":
            return nccl.pci_bw(self.pcie_gen)
        if self.kind == "mesh":
            fitting = [bw for n, bw in self.ring_bw_by_gpus if n >= gpus]
            return min(fitting) if fitting else self.ring_bw_by_gpus[-1][1]
        return self.links * nccl.nvlink_bw(sm)

    def path_bw(self, gpus: int, sm: int) -> float:
        """The fastest path to one peer (NCCL's ``maxBw``)."""
        if self.kind == "mesh":
            # A bundle of at most two links between neighbours (one between GPUs 0 and 1).
            return min(2 * nccl.nvlink_bw(sm), self.total_bw(gpus, sm))
        return self.total_bw(gpus, sm)

    @property
    def efficiency_kind(self) -> str:
        return "pcie" if self.kind == "pcie" else "nvlink"


@dataclass(frozen=True)
class NetLink:
    """One NIC: its rate (Gb/s) and transport."""

    name: str
    gbit: float
    transport: str
    description: str = ""
    source: str = ""


def _nvswitch(name: str, gpu: str, nvls: bool = False) -> IntraLink:
    sm, links, source = GPUS[gpu]
    return IntraLink(
        name,
        "nvswitch",
        sm,
        links=links,
        nvls=nvls,
        description=f"NVSwitch, {links} NVLinks per {gpu} at NCCL's "
        f"{nccl.nvlink_bw(sm):g} GB/s each" + (" with NVLS (NVLink SHARP)" if nvls else ""),
        source=f"{source}; GB/s per link: {NCCL_TOPO} lines 19-24",
    )


def _pcie(gen: int, sm: int, gpu: str) -> IntraLink:
    return IntraLink(
        f"pcie-gen{gen}",
        "pcie",
        sm,
        pcie_gen=gen,
        description=f"PCIe Gen{gen} x16 between GPUs, no NVLink (GPU generation unless stated: "
        f"{gpu}), NCCL's {nccl.pci_bw(gen):g} GB/s",
        source=f"{nccl.NCCL_SOURCE} src/graph/topo.cc lines 545-556 and 657 (width x speed / 80)",
    )


INTRA_LINKS: dict[str, IntraLink] = {
    link.name: link
    for link in (
        _nvswitch("nvswitch-h100", "H100"),
        _nvswitch("nvswitch-h200", "H200"),
        _nvswitch("nvswitch-h100-nvls", "H100", nvls=True),
        _nvswitch("nvswitch-h200-nvls", "H200", nvls=True),
        _nvswitch("nvswitch-a100", "A100"),
        _nvswitch("nvswitch-v100", "V100"),
        _nvswitch("nvswitch-b200", "B200"),
        _nvswitch("nvswitch-b200-nvls", "B200", nvls=True),
        # DGX-1 (V100): the hybrid cube-mesh. NCCL's topology dump of a DGX-1V (NVIDIA/nccl#671)
        # gives GPU0 one link to GPU1 and GPU2, two to GPU3 and GPU4: a 2-GPU ring gets one
        # 20 GB/s link; four GPUs 0-3 hold 4 link-disjoint directed rings (each GPU has 4 links
        # into its quad); eight use all 6 links of each GPU (estimated: rings that use every
        # link).
        IntraLink(
            "nvlink-mesh-v100",
            "mesh",
            70,
            links=6,
            ring_bw_by_gpus=((2, 20.0), (4, 80.0), (8, 120.0)),
            description="DGX-1 hybrid cube-mesh NVLink 2.0 (8x V100 SXM2): 1 link between "
            "GPUs 0-1, 4 rings on 4 GPUs, 6 links per GPU on 8",
            source="link counts from NCCL's topology of a DGX-1V (NVIDIA/nccl#671) x 20 GB/s "
            f"per V100 link ({NCCL_TOPO} line 20); 8-GPU figure estimated (every link in a ring)",
        ),
        _pcie(3, 70, "V100"),
        _pcie(4, 80, "A100"),
        _pcie(5, 90, "H100"),
    )
}

NET_LINKS: dict[str, NetLink] = {
    link.name: link
    for link in (
        NetLink("ib-ndr400", 400, "rdma", "InfiniBand NDR", "NVIDIA ConnectX-7 / Quantum-2"),
        NetLink("ib-hdr200", 200, "rdma", "InfiniBand HDR", "NVIDIA ConnectX-6 / Quantum"),
        NetLink("ib-edr100", 100, "rdma", "InfiniBand EDR", "Mellanox ConnectX-4/5 EDR"),
        NetLink("roce-400", 400, "rdma", "RoCE v2 Ethernet", "400GbE (IEEE 802.3bs)"),
        NetLink("roce-200", 200, "rdma", "RoCE v2 Ethernet", "200GbE (IEEE 802.3bs)"),
        NetLink("roce-100", 100, "rdma", "RoCE v2 Ethernet", "100GbE (IEEE 802.3ba)"),
        NetLink("eth-100g", 100, "tcp", "Ethernet, NCCL TCP sockets", "100GbE (IEEE 802.3ba)"),
        NetLink("eth-25g", 25, "tcp", "Ethernet, NCCL TCP sockets", "25GbE (IEEE 802.3by)"),
        NetLink("eth-10g", 10, "tcp", "Ethernet, NCCL TCP sockets", "10GbE (IEEE 802.3ae)"),
        NetLink("efa-100", 100, "efa", "AWS Elastic Fabric Adapter (aws-ofi-nccl)", "AWS EFA"),
        NetLink("tcpxo-200", 200, "tcpxo", "GCP GPUDirect-TCPXO", "Google Cloud A3 Mega"),
    )
}
TRANSPORTS = ("rdma", "tcp", "efa", "tcpxo")


@dataclass(frozen=True)
class Fabric:
    """A cluster as NCCL's model sees it (see the module docstring); ``sources`` says where
    each value came from."""

    name: str
    gpu: str
    sm: int
    gpus_per_node: int
    intra: IntraLink
    nics_per_node: int
    net: NetLink
    nic_near_gpu: bool = True
    nvls: bool = False
    collnet: bool = False
    cpu_vendor: str = "intel"
    intra_busbw: float | None = None
    inter_busbw: float | None = None
    efficiency: dict[str, Range] = field(default_factory=lambda: dict(EFFICIENCY))
    sources: dict[str, str] = field(default_factory=dict)

    def system(self, gpus_per_node: int | None = None, ranks: int | None = None) -> nccl.System:
        """NCCL's view of the machine; ``ranks`` on one node (a mesh's rings depend on it)."""
        g = gpus_per_node or self.gpus_per_node
        on_node = min(ranks, g) if ranks else g
        total = self.intra.total_bw(on_node, self.sm)
        return nccl.System(
            sm=self.sm,
            gpus_per_node=g,
            intra_nvlink=self.intra.kind != "pcie",
            intra_total_bw=total,
            intra_path_bw=self.intra.path_bw(on_node, self.sm),
            nvswitch=self.intra.kind == "nvswitch",
            nics=self.nics_per_node,
            nic_bw=nccl.nic_bw(self.net.gbit),
            nic_near_gpu=self.nic_near_gpu,
            nvls=self.nvls,
            collnet=self.collnet,
            cpu_vendor=self.cpu_vendor,
            intra_busbw=self.intra_busbw,
            inter_busbw=self.inter_busbw,
        )

    def sm_count(self) -> tuple[int, str]:
        """The GPU's SMs and their source (an H100 on PCIe is the 114-SM card)."""
        if self.gpu == "H100" and self.intra.kind == "pcie":
            return H100_PCIE_SM_COUNT
        return SM_COUNT[self.gpu]

    def hbm_gbps(self) -> tuple[float, str]:
        """The GPU's HBM bandwidth (GB/s) and its source (an H100 on PCIe has HBM2e)."""
        if self.gpu == "H100" and self.intra.kind == "pcie":
            return H100_PCIE_HBM_GBPS
        return HBM_GBPS[self.gpu]

    def efficiency_for(self, limited_by: str) -> Range:
        """The efficiency range of the link named by NCCL's plan ("intra", "inter", "nvls")."""
        if limited_by == "nvls":
            return self.efficiency["nvls"]
        if limited_by == "inter":
            if self.inter_busbw is not None:
                return Range(1.0, 1.0, 1.0, "--busbw-gbps (an achieved bus bandwidth)")
            return self.efficiency[self.net.transport]
        if self.intra_busbw is not None:
            return Range(1.0, 1.0, 1.0, "--busbw-gbps (an achieved bus bandwidth)")
        return self.efficiency[self.intra.efficiency_kind]

    def describe(self) -> list[str]:
        """One line per property, with its source (what the output prints)."""
        sysd = self.system()
        lines = [
            f"{self.gpus_per_node} x {self.gpu} per node ({self.sources.get('gpu', '')})",
            f"intra-node: {self.intra.description}; NCCL's bandwidth per GPU "
            f"{sysd.intra_total_bw:g} GB/s ({self.intra.source})",
            f"network: {self.nics_per_node} x {self.net.gbit:g} Gb/s {self.net.description} "
            f"({self.net.transport}; {self.sources.get('net', self.net.source)})",
        ]
        if self.intra_busbw is not None:
            lines.append(
                f"intra-node bus bandwidth set to {self.intra_busbw:g} GB/s by --busbw-gbps"
            )
        if self.inter_busbw is not None:
            lines.append(
                f"inter-node bus bandwidth set to {self.inter_busbw:g} GB/s by --busbw-gbps"
            )
        lines.append(
            f"NVLS {'on' if self.nvls else 'off'}, CollNet/SHARP {'on' if self.collnet else 'off'}"
            f", {self.cpu_vendor} CPUs"
        )
        return lines


@dataclass(frozen=True)
class Preset:
    gpu: str
    gpus_per_node: int
    intra: str
    nics: int
    net: str
    nvls: bool
    cpu: str
    source: str
    nic_near_gpu: bool = True


PRESETS: dict[str, Preset] = {
    "dgx-1": Preset(
        "V100", 8, "nvlink-mesh-v100", 4, "ib-edr100", False, "intel",
        "NVIDIA DGX-1 (V100) datasheet: 8x Tesla V100 SXM2 in a hybrid cube-mesh, quad EDR "
        "InfiniBand 100 Gb/s, 2x Intel Xeon E5-2698 v4",
    ),
    "dgx-2": Preset(
        "V100", 16, "nvswitch-v100", 8, "ib-edr100", False, "intel",
        "NVIDIA DGX-2 datasheet: 16x Tesla V100 SXM3 on 12 NVSwitches ('NV6' in nvidia-smi topo, "
        "NVIDIA/nccl-tests#78), 8x 100 Gb/s InfiniBand, 2x Intel Xeon Platinum 8168",
    ),
    "dgx-a100": Preset(
        "A100", 8, "nvswitch-a100", 8, "ib-hdr200", False, "amd",
        "NVIDIA DGX A100 datasheet: 8x A100 SXM4 on 6 NVSwitches, 8x single-port ConnectX-6 "
        "200 Gb/s HDR InfiniBand for compute ('8x200Gbit/s IB cards', NVIDIA/nccl#812), "
        "2x AMD EPYC 7742",
    ),
    "dgx-h100": Preset(
        "H100", 8, "nvswitch-h100", 8, "ib-ndr400", True, "intel",
        "NVIDIA DGX H100 user guide: 8x H100 SXM5 on 4 NVSwitches (NVLS: NCCL's default where "
        "supported), 8x ConnectX-7 400 Gb/s for compute, 2x Intel Xeon Platinum 8480C",
    ),
    "dgx-h200": Preset(
        "H200", 8, "nvswitch-h200", 8, "ib-ndr400", True, "intel",
        "NVIDIA DGX H200: the DGX H100 system with H200 GPUs (same NVSwitch and ConnectX-7 400 "
        "Gb/s networking)",
    ),
    "dgx-b200": Preset(
        "B200", 8, "nvswitch-b200", 8, "ib-ndr400", True, "intel",
        "NVIDIA DGX B200 datasheet: 8x B200 on NVLink 5 NVSwitches (1.8 TB/s per GPU), 8x "
        "ConnectX-7 400 Gb/s for compute, 2x Intel Xeon Platinum 8570",
    ),
    "pcie8-25gbe": Preset(
        "A100", 8, "pcie-gen4", 1, "eth-25g", False, "intel",
        "a generic 8-GPU PCIe Gen4 server (no NVLink) with one 25 GbE NIC, NCCL over TCP",
        nic_near_gpu=False,
    ),
    "pcie8-100gbe": Preset(
        "A100", 8, "pcie-gen4", 1, "eth-100g", False, "intel",
        "a generic 8-GPU PCIe Gen4 server (no NVLink) with one 100 GbE NIC, NCCL over TCP",
        nic_near_gpu=False,
    ),
    "aws-p4d": Preset(
        "A100", 8, "nvswitch-a100", 4, "efa-100", False, "intel",
        "AWS p4d.24xlarge (aws.amazon.com/ec2/instance-types/p4/): 8x A100 40GB on NVSwitch, "
        "400 Gbps EFA (4 EFA interfaces), Intel Xeon Cascade Lake",
    ),
    "aws-p5": Preset(
        "H100", 8, "nvswitch-h100", 32, "efa-100", True, "amd",
        "AWS p5.48xlarge (aws.amazon.com/ec2/instance-types/p5/): 8x H100 on NVSwitch, 3200 "
        "Gbps EFA (32 interfaces), AMD EPYC Milan",
    ),
    "gcp-a3-mega": Preset(
        "H100", 8, "nvswitch-h100", 8, "tcpxo-200", True, "intel",
        "Google Cloud a3-megagpu-8g: 8x H100, 8 GPU NICs with GPUDirect-TCPXO (NVIDIA AI Cluster "
        "Runtime, gke-tcpxo-networking), 200 Gbps each, Intel Sapphire Rapids",
    ),
    "azure-nd-a100-v4": Preset(
        "A100", 8, "nvswitch-a100", 8, "ib-hdr200", False, "amd",
        "Azure ND A100 v4 (learn.microsoft.com/azure/virtual-machines/nda100-v4-series): 8x "
        "A100 40GB, 'each available with a 200 Gigabit Mellanox InfiniBand HDR connection', AMD "
        "EPYC 7V12",
    ),
    "azure-nd-h100-v5": Preset(
        "H100", 8, "nvswitch-h100", 8, "ib-ndr400", True, "intel",
        "Azure ND H100 v5 (MicrosoftDocs/azure-docs "
        "articles/virtual-machines/nd-h100-v5-series.md): 8x H100, 'its own dedicated ... "
        "400 Gb/s NVIDIA Quantum-2 CX7 InfiniBand connection', 4th Gen Intel Xeon",
    ),
    # Kept from the earlier table: DGX A100-style networking behind H100 PCIe cards.
    "pcie-h100-hdr200": Preset(
        "H100", 8, "pcie-gen5", 8, "ib-hdr200", False, "intel",
        "H100 PCIe cards (no NVLink bridges) with one HDR 200 Gb/s NIC per GPU",
    ),
}  # fmt: skip
#: Other names for presets (``dgx-h100-nvls`` from the earlier table: NVLS is now DGX H100's
#: default, as in NCCL).
ALIASES = {
    "dgx-1v": "dgx-1",
    "dgx-2h": "dgx-2",
    "dgx-h100-nvls": "dgx-h100",
    "hgx-h100": "dgx-h100",
    "hgx-h200": "dgx-h200",
    "hgx-a100": "dgx-a100",
    "p4d": "aws-p4d",
    "p5": "aws-p5",
    "a3-mega": "gcp-a3-mega",
    "nd-h100-v5": "azure-nd-h100-v5",
    "nd-a100-v4": "azure-nd-a100-v4",
}
DEFAULT_FABRIC = "dgx-h100"


def known_fabrics() -> list[str]:
    return [*PRESETS, *ALIASES, *INTRA_LINKS, *NET_LINKS]


def _from_preset(name: str) -> Fabric:
    p = PRESETS[name]
    sm = GPUS[p.gpu][0]
    intra = INTRA_LINKS[p.intra]
    return Fabric(
        name=name,
        gpu=p.gpu,
        sm=sm,
        gpus_per_node=p.gpus_per_node,
        intra=intra,
        nics_per_node=p.nics,
        net=NET_LINKS[p.net],
        nic_near_gpu=p.nic_near_gpu,
        nvls=p.nvls and intra.kind == "nvswitch" and sm >= 90,
        cpu_vendor=p.cpu,
        sources={"gpu": p.source, "net": f"{NET_LINKS[p.net].source}; count: the preset's source"},
    )


def resolve_fabric(spec: str) -> Fabric:
    """``NAME`` (a preset, an alias, or one link) or ``INTRA,INTER`` -> Fabric."""
    text = str(spec).strip()
    if not text:
        raise UserError(
            f"--fabric {spec!r}: empty; give a preset ({', '.join(PRESETS)}) or INTRA,INTER"
        )
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1:
        name = ALIASES.get(parts[0], parts[0])
        if name in PRESETS:
            return _from_preset(name)
        if name in INTRA_LINKS:  # one node kind: the network of the default preset
            base = _from_preset(DEFAULT_FABRIC)
            return _with_intra(base, INTRA_LINKS[name], name)
        if name in NET_LINKS:  # a network alone: PCIe Gen4 inside the node
            base = _with_intra(_from_preset(DEFAULT_FABRIC), INTRA_LINKS["pcie-gen4"], "")
            return _with_net(base, NET_LINKS[name], base.nics_per_node, name)
    if len(parts) == 2 and parts[0] in INTRA_LINKS and parts[1] in NET_LINKS:
        base = _with_intra(_from_preset(DEFAULT_FABRIC), INTRA_LINKS[parts[0]], "")
        return _with_net(base, NET_LINKS[parts[1]], base.nics_per_node, ",".join(parts))
    bad = next((p for p in parts if p not in INTRA_LINKS and p not in NET_LINKS), parts[0])
    if len(parts) == 2 and parts[0] in NET_LINKS:
        bad = parts[0]
    raise UserError(
        f"--fabric {spec!r}: unknown fabric {bad!r}; known: {', '.join(known_fabrics())} "
        "(or INTRA,INTER: an intra-node link, then a network link)"
    )


def _with_intra(fabric: Fabric, link: IntraLink, name: str) -> Fabric:
    gpu = fabric.gpu
    sm = link.sm
    if link.kind != "pcie":
        gpu = next((g for g, (s, _, _) in GPUS.items() if s == sm), gpu)
    else:
        gpu = next(g for g, (s, _, _) in GPUS.items() if s == link.sm)
    return replace(
        fabric,
        name=name or fabric.name,
        gpu=gpu,
        sm=sm,
        intra=link,
        nvls=link.nvls or (fabric.nvls and link.kind == "nvswitch" and sm >= 90),
        sources={**fabric.sources, "gpu": link.source or fabric.sources.get("gpu", "")},
    )


def _with_net(fabric: Fabric, link: NetLink, nics: int, name: str) -> Fabric:
    return replace(
        fabric,
        name=name or fabric.name,
        net=link,
        nics_per_node=nics,
        sources={**fabric.sources, "net": link.source},
    )


# -- new flags: one property each -----------------------------------------------------------

MAX_GPUS_PER_NODE = 1024
MAX_NICS = 1024
MAX_NIC_GBIT = 100_000.0  # 100 Tb/s: far above any NIC


def with_options(
    fabric: Fabric,
    *,
    gpus_per_node: int | None = None,
    gpu: str | None = None,
    nvlink: str | None = None,
    pcie_gen: int | None = None,
    nics_per_node: int | None = None,
    nic_gbps: float | None = None,
    transport: str | None = None,
    nvls: bool | None = None,
    sharp: bool | None = None,
) -> Fabric:
    """The fabric with the properties a user stated replaced (each checked, one line if bad)."""
    if gpus_per_node is not None:
        _count("--gpus-per-node", gpus_per_node, MAX_GPUS_PER_NODE)
        fabric = replace(fabric, gpus_per_node=gpus_per_node)
    if gpu is not None:
        key = gpu.strip().upper()
        if key not in GPUS:
            raise UserError(f"--gpu {gpu!r}: unknown GPU; known: {', '.join(GPUS)}")
        sm = GPUS[key][0]
        intra = fabric.intra
        if intra.kind == "nvswitch":
            intra = _nvswitch(f"nvswitch-{key.lower()}", key, nvls=intra.nvls)
        fabric = replace(
            fabric, gpu=key, sm=sm, intra=intra, nvls=fabric.nvls and sm >= 90,
            sources={**fabric.sources, "gpu": f"--gpu {key}: {GPUS[key][2]}"},
        )  # fmt: skip
    if nvlink is not None:
        key = nvlink.strip().upper()
        if key not in GPUS:
            raise UserError(
                f"--nvlink {nvlink!r}: unknown NVLink generation; known: "
                f"{', '.join(NVLINK_GENERATIONS)}"
            )
        link = _nvswitch(f"nvlink-{key.lower()}", key)
        fabric = _with_intra(fabric, link, fabric.name)
        fabric = replace(
            fabric, gpu=key, sources={**fabric.sources, "gpu": f"--nvlink {key}: {GPUS[key][2]}"}
        )
    if pcie_gen is not None:
        if isinstance(pcie_gen, bool) or pcie_gen not in (3, 4, 5):
            raise UserError(f"--pcie-gen {pcie_gen!r}: expected 3, 4 or 5")
        link = replace(INTRA_LINKS[f"pcie-gen{pcie_gen}"], sm=fabric.sm)
        fabric = replace(fabric, intra=link, nvls=False)
    if nics_per_node is not None:
        _count("--nics-per-node", nics_per_node, MAX_NICS)
        fabric = replace(fabric, nics_per_node=nics_per_node)
    if nic_gbps is not None:
        if isinstance(nic_gbps, bool) or not math.isfinite(nic_gbps) or nic_gbps <= 0:
            raise UserError(f"--nic-gbps = {nic_gbps!r} is not allowed; expected a number > 0")
        if nic_gbps > MAX_NIC_GBIT:
            raise UserError(
                f"--nic-gbps = {nic_gbps:g} is not allowed; expected at most {MAX_NIC_GBIT:g} "
                "Gb/s per NIC"
            )
        fabric = replace(
            fabric,
            net=replace(fabric.net, name=f"{nic_gbps:g} Gb/s", gbit=float(nic_gbps)),
            sources={**fabric.sources, "net": f"--nic-gbps {nic_gbps:g}"},
        )
    if transport is not None:
        if transport not in TRANSPORTS:
            raise UserError(f"--transport {transport!r}: expected one of {', '.join(TRANSPORTS)}")
        fabric = replace(fabric, net=replace(fabric.net, transport=transport))
    if nvls is not None:
        if nvls and not (fabric.intra.kind == "nvswitch" and fabric.sm >= 90):
            raise UserError(
                "--nvls on: NVLS needs NVSwitch and Hopper or later GPUs; this fabric has "
                f"{fabric.intra.kind} and {fabric.gpu}"
            )
        fabric = replace(fabric, nvls=bool(nvls))
    if sharp is not None:
        fabric = replace(fabric, collnet=bool(sharp))
    return fabric


def _count(option: str, value: int, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{option} = {value!r} is not allowed; expected an integer >= 1")
    if value > most:
        raise UserError(f"{option} = {value} is not allowed; expected at most {most:,}")


def with_busbw(fabric: Fabric, intra: float | None, inter: float | None) -> Fabric:
    """``--busbw-gbps``: achieved bus bandwidths replace NCCL's modelled ones (and their
    efficiency ranges: a stated bus bandwidth is already what is reached)."""
    return replace(fabric, intra_busbw=intra, inter_busbw=inter)


def with_efficiency(fabric: Fabric, kind: str, value: Range) -> Fabric:
    return replace(fabric, efficiency={**fabric.efficiency, kind: value})
