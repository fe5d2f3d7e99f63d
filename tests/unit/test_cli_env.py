"""Every option of every command reads ``DISTRINEWS_<COMMAND>_<FLAG>``, the flag's own name.

The test walks the click group (:func:`harness.tools.cli_reference.walk`), so a command added
later is checked without editing this file; for each option it sets that variable alone and
parses the command line exactly as ``distrinews-bench`` does, then asserts the value arrived
from the environment. Also here: the generated reference page (docs/cli.md) stays current, and
``sweep --help`` lists the built-in sweeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.core import ParameterSource
from click.testing import CliRunner

from harness import cli as cli_module
from harness.cli import FiniteFloatRange, cli
from harness.spec import builtin_sweeps
from harness.tools import cli_reference

CLI_PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def flag_variable(path: tuple[str, ...], option: click.Option) -> str:
    """The rule, spelled independently of the code under test."""
    longs = [o for o in option.opts if o.startswith("--")]
    flag = longs[0][2:]
    return "_".join(("DISTRINEWS", *path, flag)).replace("-", "_").upper()


def sample(param: click.Parameter) -> tuple[str, Any]:
    """A valid value for ``param`` as text, and what click should make of it."""
    kind = param.type
    if isinstance(param, click.Option) and param.is_flag:
        # Away from the default, so the value can only have come from the variable.
        return ("false", False) if param.default is True else ("true", True)
    if isinstance(kind, click.Choice):
        choice = next(c for c in reversed(kind.choices) if c != param.default)
        return choice, choice
    if isinstance(kind, click.IntRange):
        low = kind.min if kind.min is not None else 0
        value = low + 1 if kind.max is None or low + 1 <= kind.max else low
        return str(value), value
    if isinstance(kind, (click.FloatRange, FiniteFloatRange)):
        low = kind.min if kind.min is not None else 0.0
        value = (low + kind.max) / 2 if kind.max is not None else low + 0.5
        return repr(value), value
    if kind is click.INT:
        return "7", 7
    if kind is click.FLOAT:
        return "0.25", 0.25
    if isinstance(kind, click.Path):
        return "from-env", Path("from-env") if kind.type is Path else "from-env"
    return "from-env", "from-env"


def required_args(command: click.Command, skip: click.Parameter) -> list[str]:
    """Command-line arguments for every required parameter but ``skip``."""
    args: list[str] = []
    for param in command.params:
        if param is skip or not param.required:
            continue
        text, _ = sample(param)
        if isinstance(param, click.Option):
            args += [param.opts[0], text]
        else:
            args.append(text)
    return args


def parse(path: tuple[str, ...], args: list[str]) -> click.Context:
    """The context ``distrinews-bench PATH ARGS`` would invoke, parsed but not run."""
    ctx = cli.make_context("distrinews-bench", [*path, *args])
    group: click.Command = cli
    rest = [*ctx._protected_args, *ctx.args]
    while isinstance(group, click.Group) and rest:
        name, command, rest = group.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
        group = command
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    return ctx


def options_of(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and p.expose_value]


def check_every_option(monkeypatch: pytest.MonkeyPatch) -> int:
    checked = 0
    for path, command, _prefix in cli_reference.walk():
        if isinstance(command, click.Group):
            continue
        for option in options_of(command):
            variable = flag_variable(path, option)
            assert option.envvar == variable, (path, option.opts)
            text, want = sample(option)
            monkeypatch.setenv(variable, text)
            try:
                ctx = parse(path, required_args(command, option))
            finally:
                monkeypatch.delenv(variable)
            assert ctx.params[option.name] == want, (variable, ctx.params[option.name])
            assert ctx.get_parameter_source(option.name) == ParameterSource.ENVIRONMENT
            checked += 1
    return checked


def test_every_option_of_every_command_reads_its_flag_named_variable(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("DISTRINEWS_"):
            monkeypatch.delenv(name)
    assert check_every_option(monkeypatch) >= 80  # every command's options, not a sample


@pytest.mark.parametrize(
    ("path", "variable", "parameter", "value"),
    [
        # The four whose Python parameter is named otherwise than the flag.
        (("report", "RESULTS"), "DISTRINEWS_REPORT_FORMAT", "fmt", "json"),
        (("sbatch", "S.toml", "--nodes", "1", "-o", "x"), "DISTRINEWS_SBATCH_TIME", "time_limit",
         "01:00:00"),
        (("bench-serve", "--url", "u"), "DISTRINEWS_BENCH_SERVE_REQUESTS", "n_requests", 9),
        (("train",), "DISTRINEWS_TRAIN_COMPILE", "compile_", True),
    ],
)  # fmt: skip
def test_the_flag_name_is_read_and_the_parameter_name_is_not(
    monkeypatch, path, variable, parameter, value
):
    monkeypatch.setenv(variable, str(value).lower() if value is True else str(value))
    assert parse(path[:1], list(path[1:])).params[parameter] == value
    monkeypatch.delenv(variable)
    old = f"DISTRINEWS_{path[0].replace('-', '_').upper()}_{parameter.upper()}"
    monkeypatch.setenv(old, str(value).lower() if value is True else str(value))
    ctx = parse(path[:1], list(path[1:]))
    assert ctx.get_parameter_source(parameter) == ParameterSource.DEFAULT, old


def test_a_command_added_later_follows_the_rule(monkeypatch):
    # A command (and a group of subcommands) registered after import, as another module
    # would add one: the walk finds it and its variables follow the same rule.
    @cli.command("probe-later")
    @click.option("--max-things", "things", type=int, default=1)
    def probe_later(things: int) -> None: ...

    @cli.group("probe-group")
    def probe_group() -> None: ...

    @probe_group.command("inner")
    @click.option("--out-file", "dest", default="a")
    def inner(dest: str) -> None: ...

    try:
        monkeypatch.setenv("DISTRINEWS_PROBE_LATER_MAX_THINGS", "5")
        assert parse(("probe-later",), []).params["things"] == 5
        monkeypatch.setenv("DISTRINEWS_PROBE_GROUP_INNER_OUT_FILE", "b")
        assert parse(("probe-group", "inner"), []).params["dest"] == "b"
        names = {" ".join(p) for p, _, _ in cli_reference.walk()}
        assert {"probe-later", "probe-group", "probe-group inner"} <= names
        assert check_every_option(monkeypatch) >= 82
    finally:
        cli.commands.pop("probe-later")
        cli.commands.pop("probe-group")


def test_the_cli_page_carries_the_generated_reference_verbatim():
    text = CLI_PAGE.read_text()
    assert f"{cli_reference.MARKER}\n\n{cli_reference.markdown()}" in text, (
        "docs/cli.md is out of date: replace everything from the marker line on with "
        "`python -m harness.tools.cli_reference`"
    )


def test_the_reference_names_every_command_and_variable():
    page = cli_reference.markdown()
    for path, command, _ in cli_reference.walk():
        assert f"### `distrinews-bench {' '.join(path)}`" in page
        for option in options_of(command):
            assert f"`{flag_variable(path, option)}`" in page


def test_sweep_help_lists_the_built_in_sweeps_and_the_defaults():
    out = CliRunner().invoke(cli, ["sweep", "--help"]).output
    assert "Built-in sweeps" in out
    for name in builtin_sweeps():
        assert f"  {name} " in out
    assert "[default without a GPU]" in out and "[default on a GPU node]" in out
    group = CliRunner().invoke(cli, ["--help"]).output
    assert "DISTRINEWS_<COMMAND>_<FLAG>" in group


def test_the_variable_rule_itself():
    option = click.Option(["--progress/--no-progress"], default=True)
    assert cli_module.envvar_name("DISTRINEWS_SWEEP", option) == "DISTRINEWS_SWEEP_PROGRESS"
    assert cli_module.command_prefix("DISTRINEWS", "bench-serve") == "DISTRINEWS_BENCH_SERVE"


@pytest.mark.slow
def test_a_closed_pipe_ends_a_command_quietly():
    # `distrinews-bench sweep --dry-run | head -1`, made certain: the reading end is closed
    # before the command writes anything, so its first line meets a broken pipe.
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", "sweep", "cpu-smoke", "--dry-run"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert proc.stderr == ""  # no "error: file system: Broken pipe", no traceback
    assert proc.returncode == cli_module.SIGPIPE_EXIT == 141
