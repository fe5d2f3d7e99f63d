"""Failure classes: what went wrong in a rank, the exit code that says it, and the error file.

A failing worker leaves two pieces of evidence, so the harness can tell what happened even when
one is missing:

- **the exit code** (:data:`EXIT_CODES`, this table's only home): 2 invalid spec, 3 out of
  memory, 4 NaN/inf loss, 5 a collective failed or a peer died, 1 anything else. torchrun
  reports it per rank in its summary, so it survives when no file could be written.
- **the error file**: the first failing rank writes ``error.json``, later ones
  ``error.rank<N>.json`` (:func:`write_error_file`): ``failure`` (the class), ``message`` (one
  line), ``rank``, ``traceback_tail`` and ``exit_code``.

The harness's launcher (``harness/launch.py``) derives its exit-code -> ledger-status map from
:data:`EXIT_CODES`; the table with the ledger statuses is in notes/contracts.md section 2. This
module imports torch only to classify, so the harness reads the table without loading it.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

from .errors import UserError
from .files import atomic_write_text
from .layout import ERROR_JSON, error_rank_json

#: Failure class -> worker exit code. Exit 1 is also what any uncaught Python exception and
#: torchrun's own failures give, so only the other codes name a class on their own.
EXIT_CODES = {
    "invalid_spec": 2,
    "oom": 3,
    "nan_loss": 4,
    "nccl_error": 5,
    "rank_died": 5,
    "crashed": 1,
}
#: The exit code that names no class by itself (see EXIT_CODES).
GENERIC_EXIT_CODE = EXIT_CODES["crashed"]

TERMINATED = "terminated by SIGTERM (another rank died, or the harness timed out)"


class Terminated(Exception):
    """SIGTERM arrived: torchrun stops the surviving ranks this way when one of them died."""


#: Text that means the allocator gave up (the CPU allocator under RLIMIT_AS, CUDA, cuBLAS).
_OUT_OF_MEMORY = ("can't allocate memory", "CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED")
#: Text that means the other end of a connection went away: a peer rank died.
_PEER_GONE = ("closed by peer", "reset by peer", "Broken pipe", "Connection refused")
#: Text that means a collective (process group) failed.
_COLLECTIVE = ("NCCL", "Gloo", "gloo", "ProcessGroup", "Timed out", "timed out")


def failure_class_of(exc: BaseException) -> str:
    """The failure class (a key of :data:`EXIT_CODES`) of an exception a rank raised."""
    # Imported here: the table above is read by the harness, which need not load torch for it.
    import torch

    from .train import NonFiniteLossError

    text = str(exc)
    if isinstance(exc, UserError):
        return "invalid_spec"
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or any(
        s in text for s in _OUT_OF_MEMORY
    ):
        return "oom"
    if isinstance(exc, NonFiniteLossError):
        return "nan_loss"
    if isinstance(exc, Terminated):
        return "rank_died"
    if isinstance(exc, torch.distributed.DistError) or any(s in text for s in _COLLECTIVE):
        return "rank_died" if any(s in text for s in _PEER_GONE) else "nccl_error"
    if any(s in text for s in _PEER_GONE):
        return "rank_died"
    return "crashed"


def write_error_file(out: Path, exc: BaseException, rank: int) -> int:
    """error.json (first failing rank) or error.rank<N>.json; returns the exit code."""
    failure = failure_class_of(exc)
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()
    body = {
        "failure": failure,
        "message": message,
        "rank": rank,
        "traceback_tail": "".join(traceback.format_exception(exc))[-4000:],
        "exit_code": EXIT_CODES[failure],
    }
    text = json.dumps(body, indent=2)
    # Created, never replaced: the first failing rank wins error.json, later ones keep theirs.
    try:
        claimed = atomic_write_text(out / ERROR_JSON, text, replace=False)
    except UserError:  # a symlink planted there: not written through; the rank's own file is
        claimed = False
    if not claimed:
        atomic_write_text(out / error_rank_json(rank), text)
    return EXIT_CODES[failure]
