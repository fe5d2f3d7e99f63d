"""Shared test fixtures: offline hub, real data when at hand, and process-group hygiene."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the network: the hub code paths must fail fast, not retry for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread per process, as the harness gives every CPU rank (harness.launch): the
# suite runs three pytest workers and their rank processes on two cores, where a second
# OpenMP thread per process only spins waiting for a core (the two-rank resume test: 44 s of
# CPU with two threads, 17 s with one, on the loaded box). Set before anything imports torch;
# spawned ranks inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISTRINEWS_SHARED_DATA", ROOT.parent / "shared" / "data"))
AGNEWS_CSV = SHARED_DATA / "ag_news_test.csv"
VOCAB_TXT = SHARED_DATA / "distilbert-base-uncased-vocab.txt"


def pytest_collection_modifyitems(config, items):
    """Slow tests (real processes, training) first, each group in file order.

    Under pytest-xdist (the README's ``-n 3 --dist worksteal``) the long tests then start at
    once on every worker and the quick ones fill the gaps, instead of one long test starting
    last and running alone. A new slow test needs only its ``slow`` marker to take part.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def agnews_csv() -> Path:
    """The real AG News test split (7,600 rows); skips on a clone without ../shared."""
    if not AGNEWS_CSV.is_file():
        pytest.skip(f"real AG News data not at hand ({AGNEWS_CSV})")
    return AGNEWS_CSV


@pytest.fixture(scope="session")
def vocab_txt() -> Path:
    """The real distilbert-base-uncased vocab; skips on a clone without ../shared."""
    if not VOCAB_TXT.is_file():
        pytest.skip(f"real vocab not at hand ({VOCAB_TXT})")
    return VOCAB_TXT


@pytest.fixture(scope="session")
def tokenizer(vocab_txt):
    from distrinews.dataset import get_tokenizer

    return get_tokenizer(vocab_txt)


@pytest.fixture(autouse=True)
def _destroy_leftover_process_group():
    """A failing test must not leave a process group behind for the next one."""
    yield
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Each test gets its own tokenization cache, so cache hits are never accidental."""
    monkeypatch.setenv("DISTRINEWS_CACHE", str(tmp_path / "cache"))


# -- a test that starts real processes is marked slow -------------------------------------------
# Every way this suite starts a process (subprocess, asyncio's subprocesses, multiprocessing's
# spawn, torchrun) ends in _posixsubprocess.fork_exec (subprocess never takes its posix_spawn
# path here: that needs close_fds=False); counting its calls per test tells which tests start
# processes, so the `slow` marker (what `-m "not slow"` leaves out) cannot lie.
_spawned: list[str] = []
#: Quick system lookups the product itself makes (the git sha for env.json, ctypes finding
#: libc, Slurm's hostname expansion): milliseconds each, not what "slow" is about.
CHEAP_TOOLS = {"git", "ldconfig", "scontrol"}


def _counting_fork_exec(real):
    def fork_exec(*args, **kwargs):
        exe = os.fsdecode(args[0][0]) if args and args[0] else "?"
        if os.path.basename(exe) not in CHEAP_TOOLS:
            _spawned.append(exe)
        return real(*args, **kwargs)

    return fork_exec


def pytest_configure(config):
    import _posixsubprocess
    import subprocess

    # subprocess keeps its own reference (``_fork_exec``); multiprocessing looks it up each time.
    for owner, name in ((_posixsubprocess, "fork_exec"), (subprocess, "_fork_exec")):
        real = getattr(owner, name, None)
        if real is not None and not getattr(real, "_distrinews_counting", False):
            wrapped = _counting_fork_exec(real)
            wrapped._distrinews_counting = True
            setattr(owner, name, wrapped)


@pytest.fixture(autouse=True)
def _processes_need_the_slow_marker(request):
    """Fails a test that started a process without ``@pytest.mark.slow``."""
    _spawned.clear()
    yield
    if _spawned and request.node.get_closest_marker("slow") is None:
        pytest.fail(
            f"started {len(_spawned)} process(es) ({_spawned[0]}, ...) without "
            "@pytest.mark.slow: mark it, so -m 'not slow' stays in-process"
        )
