"""Process-group setup and teardown: the only module that touches torchrun's environment.

Data-parallel training runs one *process* (a *rank*) per device. The ranks form a *process
group* through which collectives (all-reduce of gradients, barriers, gathers) run: NCCL between
CUDA GPUs, gloo between CPU processes. ``torchrun`` starts the ranks and tells each who it is
through environment variables (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT); :func:`process_group` reads them, binds the rank to its device, joins the group
with a timeout, and always leaves it — also when the body raises.

The group meets through a *store* (a small key-value server) that rank 0 hosts. A c10d store
listens on every interface unless handed a socket bound to one address, so this module binds
it to MASTER_ADDR's address (:func:`bound_tcp_store`; loopback when every rank is on one host):
nothing a run starts is reachable from other machines unless it must be.

Without torchrun (``python -m distrinews.worker ...``) the process is a group of one, built on an
in-memory store, so the same code path (DDP included) runs everywhere. Tests spawn ranks
themselves and pass ``rank``, ``world_size`` and a ``file://`` ``init_method``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .errors import UserError

#: Collectives that do not finish within this many seconds fail instead of hanging forever
#: (a dead or stuck rank). Generous: the first step of a compiled model can take minutes.
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True, kw_only=True)
class DistContext:
    """Who this process is in the job, and its device."""

    rank: int
    """Global rank, 0..world_size-1; rank 0 writes the results."""
    local_rank: int
    """Rank on this machine: the index of the GPU it drives."""
    world_size: int
    """Ranks in the job."""
    local_world_size: int
    """Ranks on this machine."""
    device: torch.device
    """cuda:<local_rank> or cpu."""
    backend: str
    """nccl or gloo."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_ranks(environ: Mapping[str, str]) -> tuple[int, int, int, int] | None:
    """(rank, local_rank, world_size, local_world_size) from torchrun's env, or None outside it."""
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local_rank = int(environ.get("LOCAL_RANK", rank))
        local_world = int(environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError as exc:
        raise UserError(f"malformed torchrun environment ({exc})") from None
    return rank, local_rank, world, local_world


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``'s address (the first getaddrinfo gives, as clients try
    first) and ``port`` -- never to every interface. Port 0: the OS picks a free one."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def bound_tcp_store(
    host: str,
    port: int,
    *,
    is_master: bool,
    world_size: int | None,
    timeout_s: float,
    wait_for_workers: bool = True,
) -> dist.TCPStore:
    """A c10d TCPStore whose server listens on ``host``'s address only.

    A TCPStore server binds the wildcard address (``[::]``, every interface) unless it is
    handed a socket already bound (``master_listen_fd``); torchrun's own stores never are, so
    the launch (distrinews.torchrun) and the ranks (:func:`rank_store`) build theirs here. A
    client (``is_master`` False) just connects to ``host:port``. Port 0 with ``is_master``:
    the OS picks a free port (``store.port`` says which).
    """
    timeout = timedelta(seconds=timeout_s)
    if not is_master:
        return dist.TCPStore(host, port, world_size, False, timeout, multi_tenant=True)
    sock = listening_socket(host, port)
    bound_port = sock.getsockname()[1]
    fd = sock.detach()  # the store's server owns the socket from here
    kwargs: dict[str, Any] = {
        "wait_for_workers": wait_for_workers,
        "multi_tenant": True,
        "master_listen_fd": fd,
    }
    try:
        return dist.TCPStore(host, bound_port, world_size, True, timeout, **kwargs)
    except RuntimeError as exc:
        if "libuv" not in str(exc).lower():
            os.close(fd)
            raise
        # torch < 2.8: the libuv server cannot take over a bound socket; the classic one can.
        return dist.TCPStore(host, bound_port, world_size, True, timeout, use_libuv=False, **kwargs)


def rank_store(
    environ: Mapping[str, str], *, rank: int, world_size: int, timeout_s: float
) -> dist.TCPStore:
    """The process group's store under torchrun without the agent's store: rank 0 hosts it on
    MASTER_ADDR's address and MASTER_PORT (both set by torchrun), the others connect there."""
    try:
        host, port = environ["MASTER_ADDR"], int(environ["MASTER_PORT"])
    except (KeyError, ValueError) as exc:
        raise UserError(
            f"malformed torchrun environment (MASTER_ADDR/MASTER_PORT: {exc})"
        ) from None
    return bound_tcp_store(
        host, port, is_master=rank == 0, world_size=world_size, timeout_s=timeout_s
    )


def resolve_device(device: str, local_rank: int) -> torch.device:
    """One device per local rank: cuda:<local_rank>, or the CPU."""
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("device = 'cuda' but CUDA is not available here; use device = 'cpu'")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise UserError(f"local rank {local_rank} has no GPU: this machine has {count}")
    return torch.device("cuda", local_rank)


@contextmanager
def process_group(
    *,
    device: str,
    backend: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    rank: int | None = None,
    world_size: int | None = None,
    init_method: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Iterator[DistContext]:
    """Join the process group for the body of the ``with``; always leave it afterwards.

    ``rank``/``world_size``/``init_method`` override torchrun's environment (spawned tests).
    """
    environ = os.environ if environ is None else environ
    store: Any = None
    if rank is not None and world_size is not None:
        local_rank, local_world = rank, world_size
        init_method = init_method or "env://"
    elif (found := torchrun_ranks(environ)) is not None:
        rank, local_rank, world_size, local_world = found
        if environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":
            init_method = "env://"  # a client of the agent's store: nothing listens here
        else:
            # env:// would make rank 0 host the group's store on every interface; this store
            # listens on MASTER_ADDR's address only (loopback for a single-host launch).
            store = rank_store(environ, rank=rank, world_size=world_size, timeout_s=timeout_s)
    else:
        # A group of one: an in-memory store needs no address, port or rendezvous.
        rank, local_rank, world_size, local_world = 0, 0, 1, 1
        store, init_method = dist.HashStore(), None
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # before init: NCCL binds the communicator to this device
    if backend == "nccl" and dev.type != "cuda":
        raise UserError("backend 'nccl' needs CUDA devices; use gloo on CPU")
    kwargs: dict[str, Any] = {
        "backend": backend,
        "rank": rank,
        "world_size": world_size,
        "timeout": timedelta(seconds=timeout_s),
    }
    if store is not None:
        kwargs["store"] = store
    else:
        kwargs["init_method"] = init_method
    if backend == "nccl":
        kwargs["device_id"] = dev  # eager NCCL init: a bad GPU fails here, not in step 1
    dist.init_process_group(**kwargs)
    try:
        yield DistContext(
            rank=rank,
            local_rank=local_rank,
            world_size=world_size,
            local_world_size=local_world,
            device=dev,
            backend=backend,
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def synchronize(device: torch.device) -> None:
    """Wait until every queued kernel on ``device`` has finished (no-op on CPU: ops are eager)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def barrier(ctx: DistContext) -> None:
    if ctx.world_size > 1:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), index = rank. Outside timed regions only."""
    if ctx.world_size == 1:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """In-place sum over ranks; returns the tensor."""
    if ctx.world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def collective_versions() -> dict[str, str | None]:
    """CUDA and NCCL versions of this torch build (None where absent)."""
    nccl = None
    if torch.cuda.is_available() and dist.is_nccl_available():
        version = torch.cuda.nccl.version()
        nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    return {"cuda": torch.version.cuda, "nccl": nccl}
