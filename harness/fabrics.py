"""The interconnects a scaling projection can assume, each value with where it comes from.

A *link* is one level of the network a DDP all-reduce crosses: inside a node (NVSwitch, PCIe)
or between nodes (InfiniBand, RoCE, Ethernet; one NIC per GPU, the DGX/HGX layout). Each link
carries the two numbers the all-reduce model (:mod:`harness.projection`) needs:

- ``busbw_gbps``: the all-reduce **bus bandwidth** a tuned NCCL reaches on it for large
  messages, in GB/s (1e9 bytes/s) per GPU. Bus bandwidth is the nccl-tests convention
  (algbw·2(N−1)/N): it does not depend on N for a ring, so one number describes the link.
  Where a published nccl-tests figure exists we use it; otherwise the line rate times
  :data:`ACHIEVED_SHARE` (what NCCL reaches of a network link's line rate for large messages).
- ``step_latency_s``: the latency NCCL's own cost model charges per algorithm step on that kind
  of hardware, Simple protocol (NCCL ``src/graph/tuning.cc``, table ``hwLat``: NVLink ring
  3.4 µs, PCI ring 5.7 µs, network ring 9.6 µs, network tree 50 µs, NVLink/PCI tree 28 µs).

A *fabric* is an intra-node link plus an inter-node link: ``--fabric nvswitch-h100,ib-ndr400``,
a preset such as ``dgx-h100``, or one link name used for both levels.
"""

from __future__ import annotations

from dataclasses import dataclass

from distrinews.errors import UserError

#: Share of a network link's line rate that NCCL's all-reduce reaches for large messages
#: (nccl-tests on InfiniBand/RoCE typically reach 90-96% of line rate: NVIDIA nccl-tests
#: doc/PERFORMANCE.md, "bus bandwidth ... should be close to the hardware peak bandwidth"). We
#: take the low end, 0.9, so projections do not flatter a network.
ACHIEVED_SHARE = 0.9

#: NCCL cost-model latencies (µs) per algorithm step, Simple protocol (src/graph/tuning.cc).
_NVLINK_RING_US, _PCI_RING_US, _NET_RING_US = 3.4, 5.7, 9.6
_NVLINK_TREE_US, _PCI_TREE_US, _NET_TREE_US = 28.0, 28.0, 50.0
#: NCCL's fixed per-collective base latency (µs), ring Simple (src/graph/tuning.cc baseLat).
BASE_LATENCY_S = 8.4e-6
#: NCCL's tree reaches 0.9 of the ring's bus bandwidth (tuning.cc: busBw*.9 for Tree).
TREE_BW_SHARE = 0.9


@dataclass(frozen=True)
class Link:
    """One level of the interconnect (see the module docstring for the two numbers)."""

    name: str
    busbw_gbps: float
    ring_step_latency_s: float
    tree_step_latency_s: float
    description: str
    source: str


def _net(name: str, line_gbit: float, what: str, source: str) -> Link:
    """A NIC-per-GPU network link: line rate (Gbit/s) x ACHIEVED_SHARE, network latencies."""
    return Link(
        name=name,
        busbw_gbps=round(line_gbit / 8 * ACHIEVED_SHARE, 2),
        ring_step_latency_s=_NET_RING_US * 1e-6,
        tree_step_latency_s=_NET_TREE_US * 1e-6,
        description=f"{what}, one {line_gbit:g} Gb/s NIC per GPU",
        source=f"{source}; busbw = line rate x {ACHIEVED_SHARE}",
    )


LINKS: dict[str, Link] = {
    link.name: link
    for link in (
        # NVLink 4 through NVSwitch (H100 and H200 SXM share it: 900 GB/s bidirectional, 450 GB/s
        # each way, NVIDIA H100/H200 datasheets). nccl-tests all_reduce on one DGX H100 reaches
        # about 360 GB/s bus bandwidth without NVLS (NVIDIA DGX H100 user guide / nccl-tests
        # reports for 8x H100 SXM).
        Link(
            "nvswitch-h100",
            360.0,
            _NVLINK_RING_US * 1e-6,
            _NVLINK_TREE_US * 1e-6,
            "NVLink 4 + NVSwitch, 8x H100 SXM (ring, no NVLS)",
            "NVIDIA H100 datasheet (NVLink 900 GB/s); nccl-tests all_reduce ~360 GB/s busbw",
        ),
        Link(
            "nvswitch-h200",
            360.0,
            _NVLINK_RING_US * 1e-6,
            _NVLINK_TREE_US * 1e-6,
            "NVLink 4 + NVSwitch, 8x H200 SXM (ring, no NVLS)",
            "NVIDIA H200 datasheet (same NVLink 4, 900 GB/s as H100); same busbw as H100",
        ),
        # NVLS (NVLink SHARP): the switch does the reduction, so each GPU sends its data once.
        # NCCL 2.17+ reaches about 480 GB/s all-reduce bus bandwidth on 8x H100 (NVIDIA
        # technical blog "Fast Multi-GPU collectives with NCCL"/NCCL 2.17 release notes).
        Link(
            "nvswitch-h100-nvls",
            480.0,
            _NVLINK_RING_US * 1e-6,
            _NVLINK_TREE_US * 1e-6,
            "NVLink 4 + NVSwitch with NVLS (NVLink SHARP), 8x H100/H200 SXM",
            "NCCL 2.17+ NVLS all_reduce ~480 GB/s busbw on 8x H100 (NVIDIA NCCL blog)",
        ),
        Link(
            "nvswitch-h200-nvls",
            480.0,
            _NVLINK_RING_US * 1e-6,
            _NVLINK_TREE_US * 1e-6,
            "NVLink 4 + NVSwitch with NVLS, 8x H200 SXM",
            "as nvswitch-h100-nvls: H200 has the same NVLink 4 and NVSwitch generation",
        ),
        # PCIe without NVLink: GPUs talk through the host bridge/switch. Gen4 x16 is 32 GB/s
        # and Gen5 x16 64 GB/s per direction raw (PCI-SIG); after 128b/130b coding and protocol
        # overhead nccl-tests reach about 20-24 GB/s (Gen4) and 40-48 GB/s (Gen5) busbw.
        Link(
            "pcie-gen4",
            22.0,
            _PCI_RING_US * 1e-6,
            _PCI_TREE_US * 1e-6,
            "PCIe Gen4 x16 between GPUs, no NVLink",
            "PCI-SIG Gen4 x16 = 32 GB/s/direction; nccl-tests all_reduce ~20-24 GB/s busbw",
        ),
        Link(
            "pcie-gen5",
            44.0,
            _PCI_RING_US * 1e-6,
            _PCI_TREE_US * 1e-6,
            "PCIe Gen5 x16 between GPUs, no NVLink (e.g. H100 PCIe without bridges)",
            "PCI-SIG Gen5 x16 = 64 GB/s/direction; nccl-tests all_reduce ~40-48 GB/s busbw",
        ),
        _net("ib-ndr400", 400, "InfiniBand NDR", "NVIDIA ConnectX-7 / Quantum-2 NDR 400 Gb/s"),
        _net("ib-hdr200", 200, "InfiniBand HDR", "NVIDIA ConnectX-6 / Quantum HDR 200 Gb/s"),
        _net("roce-400", 400, "RoCE v2 Ethernet", "400GbE (IEEE 802.3bs), ConnectX-7 RoCE"),
        _net("roce-200", 200, "RoCE v2 Ethernet", "200GbE (IEEE 802.3bs), ConnectX-6 RoCE"),
        _net("eth-100g", 100, "Ethernet (TCP sockets)", "100GbE (IEEE 802.3ba)"),
        _net("eth-25g", 25, "Ethernet (TCP sockets)", "25GbE (IEEE 802.3by)"),
    )
}

#: Named machine layouts: (intra-node link, inter-node link).
PRESETS: dict[str, tuple[str, str]] = {
    # DGX H100 / HGX H100: 8 GPUs on NVSwitch, 8x ConnectX-7 NDR 400 (one per GPU), per the
    # NVIDIA DGX H100 user guide.
    "dgx-h100": ("nvswitch-h100", "ib-ndr400"),
    "dgx-h100-nvls": ("nvswitch-h100-nvls", "ib-ndr400"),
    # HGX H200: same NVSwitch generation, NDR 400 per GPU in NVIDIA's reference design.
    "hgx-h200": ("nvswitch-h200", "ib-ndr400"),
    # DGX A100-style networking (HDR 200 per GPU) behind H100 PCIe cards: a common cluster.
    "pcie-h100-hdr200": ("pcie-gen5", "ib-hdr200"),
}
DEFAULT_FABRIC = "dgx-h100"


@dataclass(frozen=True)
class Fabric:
    """The two levels a hierarchical all-reduce crosses: inside a node, then between nodes."""

    name: str
    intra: Link
    inter: Link


def known_fabrics() -> list[str]:
    return [*PRESETS, *LINKS]


def resolve_fabric(spec: str) -> Fabric:
    """``NAME`` (a preset or one link for both levels) or ``INTRA,INTER`` -> Fabric."""
    parts = [p.strip() for p in str(spec).split(",")]
    if len(parts) == 1 and parts[0] in PRESETS:
        intra, inter = PRESETS[parts[0]]
        return Fabric(parts[0], LINKS[intra], LINKS[inter])
    if len(parts) not in (1, 2) or any(p not in LINKS for p in parts):
        bad = next((p for p in parts if p not in LINKS), spec)
        raise UserError(
            f"--fabric {spec!r}: unknown fabric {bad!r}; known: {', '.join(known_fabrics())} "
            "(or INTRA,INTER from the links)"
        )
    intra = LINKS[parts[0]]
    inter = LINKS[parts[-1]]
    return Fabric(",".join(parts), intra, inter)


def fabric_from_busbw(intra_gbps: float, inter_gbps: float | None, base: Fabric) -> Fabric:
    """``--busbw-gbps INTRA[,INTER]`` over a fabric: bandwidths replaced, latencies kept."""
    intra = Link(
        f"{intra_gbps:g} GB/s",
        intra_gbps,
        base.intra.ring_step_latency_s,
        base.intra.tree_step_latency_s,
        "intra-node bus bandwidth given by --busbw-gbps",
        "flag --busbw-gbps",
    )
    value = intra_gbps if inter_gbps is None else inter_gbps
    inter = Link(
        f"{value:g} GB/s",
        value,
        base.inter.ring_step_latency_s,
        base.inter.tree_step_latency_s,
        "inter-node bus bandwidth given by --busbw-gbps",
        "flag --busbw-gbps",
    )
    return Fabric(f"busbw {intra.name} / {inter.name}", intra, inter)
