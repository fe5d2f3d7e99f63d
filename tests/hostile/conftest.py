"""Helpers for the hostile-input tests (issue 12): run a command, check it refused cleanly.

Every hostile case asserts three things: the exit code, the one line that names the file,
field or value, and that the files written before are byte-identical after.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import harness.tools
from harness.cli import cli
from tests.helpers_results import FakeSweep, write_sweep


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file under ``root`` -> its bytes (symlinks -> their target, never followed)."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = f"-> {os.readlink(path)}"
            elif path.is_file():
                out[rel] = path.read_bytes()
    return out


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """Run ``distrinews-bench ARGS`` in-process (stderr kept apart from stdout)."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True, env=env)


# -- what the generic tests walk: every command of the CLI and every tool ---------------------


def cli_commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple]:
    """(("history", "report"), command) for every command of the CLI, subgroups included."""
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            yield from cli_commands(command, (*path, name))
        else:
            yield (*path, name), command


def tool_commands() -> Iterator[tuple]:
    """(("tool:perturb",), command) for every ``python -m harness.tools.X`` with a click main."""
    for info in pkgutil.iter_modules(harness.tools.__path__):
        main = getattr(importlib.import_module(f"harness.tools.{info.name}"), "main", None)
        if isinstance(main, click.Group):  # a tool of several commands: each is walked
            for name in sorted(main.commands):
                yield (f"tool:{info.name}", name), main.commands[name]
        elif isinstance(main, click.Command):
            yield (f"tool:{info.name}",), main


def every_command() -> list[tuple]:
    """Every command a user can run: the CLI's, then the tools'."""
    return [*cli_commands(), *tool_commands()]


def run_command(path: tuple[str, ...], *args: str | Path) -> Result:
    """Run a command from :func:`every_command` with ``args``, in-process."""
    if path[0].startswith("tool:"):
        main = importlib.import_module(f"harness.tools.{path[0][5:]}").main
        return CliRunner().invoke(main, [*path[1:], *map(str, args)], catch_exceptions=True)
    return invoke(*path, *args)


def options_of(command: click.Command, kind: type) -> list[click.Option]:
    """The command's options whose type is a ``kind`` (click.types.FloatParamType, ...)."""
    return [p for p in command.params if isinstance(p, click.Option) and isinstance(p.type, kind)]


def assert_refused(result: Result, *needles: str, code: int = 2) -> str:
    """Exit ``code``, no traceback, and exactly one error line holding every needle."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"raised {result.exception!r}: {result.output}"
    )
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.lower().startswith("error")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


SMALL_SWEEP = FakeSweep(name="s", world_sizes=(1, 2), batches=(16,), repeats=2, failures=False)


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """A small finished sweep: 2 world sizes x 1 batch x 2 precisions, 2 repeats."""
    return write_sweep(tmp_path / "results", SMALL_SWEEP)


@pytest.fixture(scope="module")
def shared_sweep(tmp_path_factory) -> Path:
    """The same sweep, written once per module, for the many tests that only aim at it (each
    checks that it is unchanged, so a test that changed it fails itself)."""
    return write_sweep(tmp_path_factory.mktemp("shared") / "results", SMALL_SWEEP)
