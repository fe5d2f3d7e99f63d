"""Shared test fixtures: offline hub, real data when at hand, and process-group hygiene."""

from __future__ import annotations

import os
import sys
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
# Bytecode caches on, for this run and every process it starts: a machine that sets
# PYTHONDONTWRITEBYTECODE (this project's 2-core box does) otherwise has every pytest worker
# rewrite and compile all test modules from source (about 4 s of CPU of its 9 s collection)
# and every rank compile distrinews again. The caches go to __pycache__, which git ignores.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISTRINEWS_SHARED_DATA", ROOT.parent / "shared" / "data"))
AGNEWS_CSV = SHARED_DATA / "ag_news_test.csv"
VOCAB_TXT = SHARED_DATA / "distilbert-base-uncased-vocab.txt"


#: Wall seconds assumed for a slow test without a ``seconds`` hint (most take 5 to 20).
SLOW_DEFAULT_S = 10.0


def slow_seconds(item) -> float | None:
    """The wall time a slow test declares (``@pytest.mark.slow(seconds=...)``, measured on the
    2-core box under the parallel suite), the default without one; None for a quick test."""
    mark = item.get_closest_marker("slow")
    return None if mark is None else float(mark.kwargs.get("seconds", SLOW_DEFAULT_S))


def shared_fixture(item) -> str | None:
    """The module-scoped fixture a test shares with others in its module (a served model, one
    launch whose results several tests check), or None."""
    # pytest's own record of the test's fixture definitions (private: read defensively, so a
    # pytest without it only loses the grouping).
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        defs = info.name2fixturedefs.get(name) if info is not None else None
        if defs and defs[-1].scope in ("module", "package"):
            return f"{item.nodeid.split('::')[0]}::{name}"
    return None


def deal(items: list, workers: int, group=shared_fixture) -> list:
    """The collection reordered so that each pytest-xdist worker starts on its share of the slow
    tests, longest first (pure, given ``group``).

    ``--dist worksteal`` hands worker i the i-th of ``workers`` contiguous, near-equal slices
    of the collection to start with; idle workers then steal the tail half of the longest
    queue. So the slow tests are dealt into the slices by longest-processing-time (each in
    turn, longest first, to the slice with the least declared seconds) at each slice's head,
    and the quick tests fill the slices' tails, where stealing balances the end. Slow tests
    that share a module-scoped fixture (``group``) are dealt as one, so that one worker pays
    for it: a fixture is built once per worker that runs one of its tests.
    """
    units: dict[object, list] = {}
    for item in items:
        if slow_seconds(item) is not None:
            units.setdefault(group(item) or id(item), []).append(item)
    quick = [it for it in items if slow_seconds(it) is None]

    def seconds(unit: list) -> float:
        return sum(slow_seconds(it) for it in unit)

    ordered = sorted(units.values(), key=seconds, reverse=True)  # stable: ties in file order
    if workers <= 1:
        return [it for unit in ordered for it in unit] + quick
    heads: list[list] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for unit in ordered:
        i = load.index(min(load))
        heads[i] += unit
        load[i] += seconds(unit)
    # xdist's split: worker i gets len(pending) // (workers - i) of what is left.
    out: list = []
    left = len(items)
    for i, head in enumerate(heads):
        size = left // (workers - i)
        left -= size
        fill = max(0, size - len(head))
        out += head + quick[:fill]
        quick = quick[fill:]
    return out + quick


def pytest_collection_modifyitems(config, items):
    """Slow tests (real processes, training) first, dealt across pytest-xdist's workers."""
    items[:] = deal(items, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


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
def _scenario_box_share(request, tmp_path_factory):
    """Scenario tests share the box with each other (a shared lock); one marked
    ``box_alone`` (it loads every core on purpose, a planted busy neighbour, or it compares two
    timings that the others' load would skew) takes it alone, so its load moves no other
    scenario's timing and theirs do not move its own. The lock lives
    in the run's base temporary directory, which every xdist worker shares."""
    if request.node.get_closest_marker("scenario") is None:
        yield
        return
    import fcntl

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    alone = request.node.get_closest_marker("box_alone") is not None
    with open(base / "scenario-box.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        yield


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
#: libc, Slurm's hostname expansion, ``platform.platform()``'s ``uname -p`` for env.json, made
#: once per process by whichever test gets there first): milliseconds each, not what "slow"
#: is about.
CHEAP_TOOLS = {"git", "ldconfig", "scontrol", "uname"}


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


# -- the history store on SQLite and on a real PostgreSQL server ---------------------------------
#: Set by .ci/run (.ci/local-postgres.sh up): a PostgreSQL server the store tests may use.
POSTGRES_URL = os.environ.get("DISTRINEWS_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def history_db(request, tmp_path):
    """A fresh, empty history store: an SQLite file, then the same test on PostgreSQL (a schema
    of its own on the CI server, dropped afterwards); that variant skips without a server."""
    if request.param == "sqlite":
        yield str(tmp_path / "history.db")
        return
    if not POSTGRES_URL:
        pytest.skip(
            "no PostgreSQL server: set DISTRINEWS_TEST_POSTGRES_URL "
            '(eval "$(bash .ci/local-postgres.sh up)")'
        )
    import uuid

    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()
