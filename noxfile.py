"""nox sessions: tests (default), lint, bench, gpu (opt-in).

Every session installs the pinned CPU build of torch first: a plain `torch` requirement resolved
on a clean machine would pull a multi-GB CUDA build.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = "torch==2.13.0"


def install(session: nox.Session, extras: str = "serve,gpu,test") -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite as CI runs it: the README's test command, then the scenarios."""
    install(session)
    xdist = ("-n", "3", "--dist", "worksteal")
    session.run("python", "-m", "pytest", "-q", *xdist, "-m", "not scenario", *session.posargs)
    session.run("python", "-m", "pytest", "-q", *xdist, "-m", "scenario", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "distrinews", "harness", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "distrinews", "harness", "tests", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Micro-benchmarks with figures; pass --benchmark-compare to gate against a saved run."""
    install(session)
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/bench",
        "--benchmark-enable",
        "--benchmark-autosave",
        "-s",
        *session.posargs,
    )


@nox.session(default=False)
def gpu(session: nox.Session) -> None:
    """GPU tests (need CUDA; install a CUDA torch yourself on the node)."""
    session.install("-e", ".[serve,gpu,test]")
    session.run("python", "-m", "pytest", "-q", "tests/gpu", *session.posargs)
