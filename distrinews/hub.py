"""Is the Hugging Face Hub usable right now? Asked once, answered in a few seconds.

Hub names (``--tokenizer distilbert-base-uncased``, ``--init pretrained``, ``--data hub``) go
through huggingface_hub, which retries an unreachable host five times with back-off: on a
machine without network that is a minute of "Retrying in 8s" lines before the one-line error.
:func:`hub_offline` answers first -- ``HF_HUB_OFFLINE=1`` says so, otherwise one TCP connect to
the Hub's host with a short timeout -- and the callers then read only the local Hugging Face
cache (``local_files_only=True``) or fail at once with the offline alternatives.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

#: Seconds one connection attempt may take before the Hub counts as unreachable.
PROBE_TIMEOUT_S = 3.0


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def offline_mode_set() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def hub_offline() -> bool:
    """True when hub names must not touch the network: offline mode is set, or the Hub's host
    (``HF_ENDPOINT``, default huggingface.co) does not accept a connection within
    :data:`PROBE_TIMEOUT_S`."""
    if offline_mode_set():
        return True
    return not _reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


@functools.lru_cache(maxsize=4)
def _reachable(endpoint: str) -> bool:
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:  # no DNS, refused, timed out: all mean "not now"
        return False
