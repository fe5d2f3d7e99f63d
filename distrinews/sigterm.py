"""SIGTERM in a rank: an error file and exit 5, even while the main thread is stuck.

torchrun sends SIGTERM to the surviving ranks when one dies (and the harness does when a point
times out). A Python signal handler runs only when the main thread returns to the interpreter,
which never happens while it waits in ``cuda.synchronize()`` for an NCCL collective that will
not complete. So :class:`SigtermWatch` blocks SIGTERM in the main thread (and every thread it
starts later), and a watcher thread takes it with ``sigwait``, writes the rank's error file
(class ``rank_died``) and exits.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from .failures import TERMINATED, Terminated, write_error_file
from .log import log


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(TERMINATED)


class SigtermWatch:
    """Turns SIGTERM into an error file and an exit (see the module docstring).

    ``lock`` keeps it from racing a failure the main thread is reporting: the main thread takes
    it while writing its own error file and then sets ``exit_code``, which a later SIGTERM
    just exits with.
    """

    def __init__(self, out: Path, rank: int) -> None:
        self.out, self.rank = out, rank
        self.lock = threading.Lock()
        #: Set once the main thread has reported a failure: SIGTERM then just exits with it.
        self.exit_code: int | None = None

    def start(self) -> None:
        # Threads started before us (torch starts one at import) do not block SIGTERM; should
        # the kernel hand it to one of them, this handler (not the default: instant death)
        # raises Terminated in the main thread as soon as it runs Python again.
        signal.signal(signal.SIGTERM, _raise_terminated)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=self._wait, name="sigterm-watch", daemon=True).start()

    def _wait(self) -> None:
        signal.sigwait({signal.SIGTERM})
        with self.lock:
            code = self.exit_code
            if code is None:
                code = write_error_file(self.out, Terminated(TERMINATED), self.rank)
                log(f"rank {self.rank} failed: rank_died (SIGTERM, exit {code})")
            os._exit(code)
