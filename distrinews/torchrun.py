"""torchrun, with its rendezvous store listening only where the ranks need it.

``python -m distrinews.torchrun ARGS`` is ``torchrun ARGS`` (``torch.distributed.run``) plus
one rendezvous backend, ``--rdzv-backend=distrinews``. It is PyTorch's own c10d rendezvous
(``torch.distributed.elastic.rendezvous.c10d_rendezvous_backend``, the one ``--standalone``
and ``--rdzv-backend=c10d`` use) except for where its TCP store listens:

- c10d's TCPStore server binds the wildcard address (``[::]``, every interface) -- the
  libuv server in ``TCPStoreLibUvBackend.cpp`` calls ``uv_ip6_addr("::", port)``; the host
  name it is given is only where clients connect. Anyone who can reach the machine could
  talk to the rendezvous (join it, or corrupt its state). The only way to choose the address
  is to hand the server a socket already bound (``master_listen_fd``), and torchrun never does.
- Here the agent that hosts the store binds it to the endpoint's own address: ``127.0.0.1:0``
  when every rank is on this host (harness.launch), the first node's address under Slurm.

The rest of a launch is bound elsewhere: ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (set by
harness.launch) stops the agent from hosting a second, wildcard store for the ranks, whose
rank 0 then hosts one on MASTER_ADDR's address (:func:`distrinews.distributed.rank_store`); gloo
and NCCL bind the interface ``GLOO_SOCKET_IFNAME``/``NCCL_SOCKET_IFNAME`` name (``lo`` on one
host). A test lists a running point's sockets and fails on any wildcard address.

Rendezvous options (``--rdzv-conf``) are c10d's: ``is_host`` (host the store or not; default:
host it when the endpoint's address can be bound here) and ``read_timeout`` (seconds).
"""

from __future__ import annotations

import errno
from typing import Any

#: The ``--rdzv-backend`` name this module registers.
BACKEND = "distrinews"
#: c10d's default rendezvous port, for an endpoint given without one.
DEFAULT_PORT = 29400


def create_handler(params: Any) -> Any:
    """A c10d dynamic-rendezvous handler whose store is :func:`rendezvous_store`."""
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import (
        C10dRendezvousBackend,
    )
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        create_handler as dynamic_handler,
    )

    class Backend(C10dRendezvousBackend):
        """c10d's backend under this module's name (torch checks the handler's backend name
        against ``--rdzv-backend``)."""

        @property
        def name(self) -> str:
            return BACKEND

    store = rendezvous_store(params)
    return dynamic_handler(store, Backend(store, params.run_id), params)


def rendezvous_store(params: Any) -> Any:
    """The rendezvous's TCPStore: hosted on the endpoint's address when this agent can bind it
    (or ``is_host`` says so), else a client of the agent that did."""
    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError
    from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint

    from .distributed import bound_tcp_store

    host, port = parse_rendezvous_endpoint(params.endpoint, default_port=DEFAULT_PORT)
    read_timeout = params.get_as_int("read_timeout", 60)
    if read_timeout is None or read_timeout <= 0:
        raise ValueError("The read timeout must be a positive integer.")
    is_host = params.get_as_bool("is_host")
    if is_host is not False:
        try:
            return bound_tcp_store(
                host, port, is_master=True, world_size=None, timeout_s=read_timeout,
                wait_for_workers=False,
            )  # fmt: skip
        except OSError as exc:
            # Another machine's address (EADDRNOTAVAIL) or another agent here got there first
            # (EADDRINUSE, several nodes on one machine): join as a client, as c10d does.
            if is_host or exc.errno not in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
                raise RendezvousConnectionError(f"cannot host the rendezvous store: {exc}") from exc
    try:
        return bound_tcp_store(host, port, is_master=False, world_size=None, timeout_s=read_timeout)
    except (RuntimeError, TimeoutError, ValueError) as exc:
        raise RendezvousConnectionError(f"cannot reach the rendezvous store: {exc}") from exc


def main() -> None:
    """torchrun's main with this module's backend registered; a failed rank ends it with
    torch's per-rank summary (what the harness reads from launcher.log) instead of the agent's
    Python traceback, and with nothing more when the first failure was the rank refusing its
    input: that rank said what was wrong in one line (and in error.json)."""
    import sys

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry
    from torch.distributed.run import main as torchrun_main

    from .failures import EXIT_CODES

    rendezvous_handler_registry.register(BACKEND, create_handler)
    try:
        torchrun_main()
    except ChildFailedError as exc:
        _, first = exc.get_first_failure()
        if first.exitcode != EXIT_CODES["invalid_spec"]:
            print(exc.format_msg(), file=sys.stderr, flush=True)
        sys.exit(1)  # what an uncaught ChildFailedError gave: callers read the ranks' files


if __name__ == "__main__":
    main()
