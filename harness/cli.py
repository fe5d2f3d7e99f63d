"""``distrinews-bench``: the command line. Parses options and calls typed functions; no logic.

Every command turns a :class:`~distrinews.errors.UserError` into one line on stderr and exit
status 2, with no traceback. Every option can also come from the environment as
``DISTRINEWS_<COMMAND>_<FLAG>``, the flag's own name (``--format`` of ``report``:
``DISTRINEWS_REPORT_FORMAT``), whatever the Python parameter is called: :class:`FlagEnvGroup`
names them (click's own ``auto_envvar_prefix`` would use the parameter's name, ``..._FMT``).
"""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from distrinews.errors import UserError
from distrinews.layout import LEDGER_NAME, SERVING_LEDGER


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report UserError and file-system errors as one line and exit 2, instead of a traceback.

    A file-system error (disk full, read-only folder, a path under a regular file, a folder
    where a file belongs) is the user's environment, not a bug: the line names the path and
    what went wrong. Ledger rows are committed one by one, so every finished row survives.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except BrokenPipeError:
            if not reader_gone(sys.stdout):
                raise  # a socket or a child's pipe broke: a real error, reported below
            quiet_pipe_exit()
        except OSError as exc:
            click.echo(f"error: {describe_os_error(exc)}", err=True)
            sys.exit(2)

    return wrapper


#: Exit status of a command whose reader went away (``... | head -1``): what a shell reports
#: for a process that SIGPIPE ended (128 + 13), as ``yes | head -1`` gives.
SIGPIPE_EXIT = 128 + signal.SIGPIPE


def reader_gone(stream: Any) -> bool:
    """Whether ``stream`` is a pipe whose reading end is closed (poll says POLLERR)."""
    import select

    try:
        fd = stream.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real file behind it (a test's buffer)
        return False


def quiet_pipe_exit() -> None:
    """End like a process that SIGPIPE stopped: no message, status 141. stdout is pointed at
    /dev/null first, so the interpreter's last flush has nowhere to fail."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(SIGPIPE_EXIT)


def describe_os_error(exc: OSError) -> str:
    """``path: what went wrong`` for an OSError (one line, whichever path it carries)."""
    where = exc.filename if exc.filename is not None else "file system"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{where}: {what}".replace("\n", " ")


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (``nan > 0`` is False, so it passed)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        import math

        rv = super().convert(value, param, ctx)
        if rv is not None and not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


#: Every option's environment variable starts with this, then the command path, then the flag.
ENV_PREFIX = "DISTRINEWS"


def envvar_name(prefix: str, option: click.Option) -> str:
    """``PREFIX_FLAG``: the option's first long flag as typed (``--format`` -> ``FORMAT``,
    ``--progress/--no-progress`` -> ``PROGRESS``), dashes as underscores, upper case."""
    longs = [o for o in option.opts if o.startswith("--")]
    flag = (longs[0] if longs else max(option.opts, key=len)).lstrip("-")
    return f"{prefix}_{flag}".replace("-", "_").upper()


def name_envvars(command: click.Command, prefix: str) -> None:
    """Give each option of ``command`` the variable :func:`envvar_name` spells, and that one
    only (click's automatic ``PREFIX_<parameter name>`` is switched off for it)."""
    for param in command.params:
        if isinstance(param, click.Option) and param.expose_value:
            param.envvar = envvar_name(prefix, param)
            param.allow_from_autoenv = False


def command_prefix(parent_prefix: str, name: str) -> str:
    """The variable prefix of a subcommand: ``DISTRINEWS`` + ``bench-serve`` ->
    ``DISTRINEWS_BENCH_SERVE`` (click's own rule for a context's prefix)."""
    return f"{parent_prefix}_{name}".replace("-", "_").upper()


class FlagEnvGroup(click.Group):
    """A command group whose commands read ``DISTRINEWS_<COMMAND>_<FLAG>``.

    The names are given when a command is looked up to run (or to show its help), so a command
    added later, by any module, gets them too; ``@cli.group()`` makes groups of this class, so
    nested commands follow the same rule (``DISTRINEWS_<GROUP>_<COMMAND>_<FLAG>``).
    """

    group_class = type

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and name is not None:
            name_envvars(command, command_prefix(ctx.auto_envvar_prefix or ENV_PREFIX, name))
        return name, command, rest


class OutputFile(click.Path):
    """The type of every ``-o/--output`` option: refuses, while the command line is parsed, a path
    whose file the command did not write (harness.outputs; a test walks the CLI for it).

    ``kind`` is the command's :class:`~harness.outputs.OutputKind`, or ``"module:NAME"`` naming
    one, imported only when the option is given (a report's kind lives with the report).
    """

    def __init__(self, kind: Any, *, allow_dash: bool = False) -> None:
        super().__init__(dir_okay=False, path_type=Path, allow_dash=allow_dash)
        self._kind = kind

    @property
    def kind(self) -> Any:
        if isinstance(self._kind, str):
            import importlib

            module, name = self._kind.split(":")
            self._kind = getattr(importlib.import_module(module), name)
        return self._kind

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from harness.outputs import check_output

        rv = super().convert(value, param, ctx)
        if self.allow_dash and str(rv) == "-":
            return rv
        try:
            check_output(rv, self.kind)
        except UserError as exc:
            self.fail(str(exc), param, ctx)
        except OSError as exc:  # a folder on the way we may not read: user_errors is not on yet
            self.fail(describe_os_error(exc), param, ctx)
        return rv


@click.group(
    cls=FlagEnvGroup,
    context_settings={"auto_envvar_prefix": ENV_PREFIX, "help_option_names": ["-h", "--help"]},
    epilog="Every option can also be set in the environment as DISTRINEWS_<COMMAND>_<FLAG>, "
    "e.g. DISTRINEWS_REPORT_FORMAT=text or DISTRINEWS_SWEEP_TIMEOUT_S=600. "
    "Reference: docs/cli.md.",
)
@click.version_option(package_name="distrinews")
def cli() -> None:
    """Measure how DistilBERT fine-tuning on AG News scales under PyTorch DDP, and why."""


@cli.command()
@click.option(
    "--data",
    default="hub",
    show_default=True,
    help="hub, synthetic[:N], or a .csv/.parquet/.jsonl file.",
)
@click.option(
    "--tokenizer",
    default="distilbert-base-uncased",
    show_default=True,
    help="Hub name, tokenizer directory, or a bare vocab.txt.",
)
@click.option(
    "--model",
    default="tiny",
    show_default=True,
    help="Random-init shape (tiny, base) or, with --init pretrained, a hub name or local dir.",
)
@click.option(
    "--init",
    type=click.Choice(["random", "pretrained"]),
    default="random",
    show_default=True,
)
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many optimizer steps in total (default: run all epochs).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Per rank."
)
@click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--lr",
    type=FiniteFloatRange(min=0, min_open=True),
    default=None,
    help="AdamW learning rate [default: 5e-5 pretrained, 1e-3 random init].",
)
@click.option("--max-length", type=click.IntRange(min=8, max=512), default=128, show_default=True)
@click.option(
    "--seq-policy", type=click.Choice(["dynamic", "fixed"]), default="dynamic", show_default=True
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "tf32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
)
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--nproc-per-node",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Ranks on this machine; more than 1 launches them through torchrun.",
)
@click.option(
    "--eval-fraction",
    type=FiniteFloatRange(0, 1, min_open=True, max_open=True),
    default=0.1,
    show_default=True,
    help="Held-out share for the accuracy check after each epoch.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also checkpoint every N steps (0: at each epoch end only).",
)
@click.option("--keep-checkpoints", type=click.IntRange(min=0), default=2, show_default=True)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Continue from the latest checkpoint in --out.",
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results/train"),
    show_default=True,
    help="Checkpoints, history.jsonl and fit_result.json go here.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Tokenization cache (default: $DISTRINEWS_CACHE or ~/.cache/distrinews).",
)
@user_errors
def train(
    data: str,
    tokenizer: str,
    model: str,
    init: str,
    epochs: int,
    steps: int | None,
    batch_size: int,
    grad_accum: int,
    lr: float | None,
    max_length: int,
    seq_policy: str,
    precision: str,
    compile_: bool,
    device: str,
    nproc_per_node: int,
    eval_fraction: float,
    checkpoint_every: int,
    keep_checkpoints: int,
    resume: bool,
    seed: int,
    out: Path,
    cache_dir: Path | None,
) -> None:
    """Fine-tune with held-out accuracy each epoch and atomic, exactly resumable checkpoints.

    \b
    Offline example (real AG News test split, tiny random-init model, 2 gloo ranks):
      distrinews-bench train --data ../shared/data/ag_news_test.csv \\
        --tokenizer ../shared/data/distilbert-base-uncased-vocab.txt \\
        --model tiny --epochs 2 --nproc-per-node 2 --out results/train-tiny
    """
    import os

    from distrinews.checkpoint import latest_checkpoint
    from distrinews.layout import FIT_RESULT_JSON
    from distrinews.runspec import DEFAULT_LR, RunSpec
    from distrinews.train import FitSpec
    from harness.train_local import run_fit_local

    if cache_dir is not None:
        os.environ["DISTRINEWS_CACHE"] = str(cache_dir)  # read by every rank's dataset cache
    run = RunSpec(
        nproc_per_node=nproc_per_node,
        device=device,
        model=model,
        init=init,
        data=data,
        tokenizer=tokenizer,
        max_length=max_length,
        seq_policy=seq_policy,
        per_device_batch=batch_size,
        grad_accum=grad_accum,
        precision=precision,
        compile=compile_,
        lr=lr if lr is not None else DEFAULT_LR[init],
        seed=seed,
    )
    spec = FitSpec(
        run=run,
        epochs=epochs,
        eval_fraction=eval_fraction,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        resume=resume,
        stop_after_steps=steps,
    )
    try:
        result = run_fit_local(spec, out, on_log=lambda m: click.echo(m, err=True))
    except RuntimeError as exc:  # a multi-rank run failed; its error.json is in --out
        click.echo(f"error: training failed: {exc}", err=True)
        sys.exit(1)
    if result.losses:
        head = [v for _, v in result.losses[:10]]
        tail = [v for _, v in result.losses[-10:]]
        click.echo(
            f"loss {sum(head) / len(head):.4f} -> {sum(tail) / len(tail):.4f} over "
            f"{len(result.losses)} steps in {result.seconds:.1f} s "
            f"({result.samples_per_s:.0f} samples/s, {nproc_per_node} rank(s))"
        )
    for epoch, acc in result.accuracies:
        click.echo(f"epoch {epoch}: held-out accuracy {acc:.3f} (chance 0.250)")
    # Only paths that exist: --steps can stop before the first checkpoint is written.
    latest = latest_checkpoint(out)
    if latest is not None:
        click.echo(f"checkpoint: {latest} (serve it: distrinews-bench serve --checkpoint {out})")
    else:
        click.echo(
            "no checkpoint yet: the run stopped (--steps) before an epoch ended; "
            "--checkpoint-every N also saves every N steps"
        )
    if (out / FIT_RESULT_JSON).is_file():
        click.echo(f"results: {out / FIT_RESULT_JSON}")


# -- sweep, sbatch, export (harness helper) --------------------------------------------------


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _after_sweep(sweep_dir: Path) -> None:
    """Render the HTML report of a finished sweep and print its path."""
    from harness.report import render_report

    try:
        click.echo(f"report: {render_report(sweep_dir)}")
    except UserError as exc:
        # The results are already safe in the ledger: a report problem must not fail the sweep.
        click.echo(f"warning: no report: {exc}", err=True)
    except OSError as exc:  # disk full, read-only folder: same -- warn, the sweep succeeded
        click.echo(f"warning: no report: {describe_os_error(exc)}", err=True)


class SweepCommand(click.Command):
    """``sweep``, whose help ends with the built-in sweeps (read from harness/sweeps/ when the
    help is shown, so a new sweep file appears without editing the help)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from harness.spec import DEFAULT_CPU_SWEEP, DEFAULT_GPU_SWEEP, builtin_sweeps, load_builtin

        defaults = {
            DEFAULT_CPU_SWEEP: "default without a GPU",
            DEFAULT_GPU_SWEEP: "default on a GPU node",
        }
        rows = []
        for name in builtin_sweeps():
            description = load_builtin(name).description
            tag = f" [{defaults[name]}]" if name in defaults else ""
            rows.append((name, f"{description}{tag}"))
        with formatter.section("Built-in sweeps (harness/sweeps/; give the name or a .toml file)"):
            formatter.write_dl(rows)
        super().format_epilog(ctx, formatter)


@cli.command(cls=SweepCommand)
@click.argument("sweep_file", required=False)
@click.option(
    "--results",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Root folder; the sweep writes RESULTS/<name>/.",
)
@click.option("--name", default=None, help="Folder name under --results (default: the sweep's).")
@click.option("--data", default=None, help="Override every point's data source.")
@click.option("--tokenizer", default=None, help="Override every point's tokenizer.")
@click.option(
    "--timeout-s",
    type=FiniteFloatRange(min=0, min_open=True),
    default=None,
    help="Per-point limit in seconds (default: the sweep file's timeout_s).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=None,
    help="Runs per configuration (default: the sweep file's; 1 is quick but cannot be gated).",
)
@click.option("--retry-failed", is_flag=True, help="Re-run points whose last attempt failed.")
@click.option("--dry-run", is_flag=True, help="Print the points and what would happen; exit.")
@click.option(
    "--launcher",
    type=click.Choice(["local", "slurm"]),
    default="local",
    show_default=True,
    help="local: torchrun here; slurm: srun + torchrun per point inside an allocation.",
)
@click.option(
    "--nodes",
    type=click.IntRange(min=1),
    default=None,
    help="Nodes available to --launcher slurm (default: the allocation's).",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    help="Progress bar on stderr when it is a terminal (redirected: plain lines only).",
)
@click.option(
    "--max-points",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Refuse a grid with more points than this (a guard against a typo in an axis).",
)
@click.option(
    "--find-max-batch/--no-find-max-batch",
    default=None,
    help="Before the points, search each configuration's largest per-device batch that fits "
    "(doubling, then bisection; bounds from the sweep file's [max_batch]). Default: as the "
    "sweep file says.",
)
@click.option(
    "--no-predict-oom",
    is_flag=True,
    help="Launch CUDA points even when the memory model predicts they run out of memory.",
)
@click.option(
    "--history/--no-history",
    default=True,
    show_default=True,
    help="At the end, ingest the sweep into the history store (DISTRINEWS_HISTORY_DB, else "
    "RESULTS/history.db).",
)
@user_errors
def sweep(
    sweep_file: str | None,
    results: Path,
    name: str | None,
    data: str | None,
    tokenizer: str | None,
    timeout_s: float | None,
    repeats: int | None,
    retry_failed: bool,
    dry_run: bool,
    launcher: str,
    nodes: int | None,
    progress: bool,
    max_points: int,
    find_max_batch: bool | None,
    no_predict_oom: bool,
    history: bool,
) -> None:
    """Run a sweep (a TOML file, or a built-in name) and record every point.

    With no SWEEP_FILE, a default fitted to this machine: every local GPU count 1..N with
    distilbert-base bf16, or a small gloo sweep of the tiny model on CPU. Re-running resumes.
    """
    import dataclasses

    import torch

    from harness import sweep as sweeps
    from harness.spec import resolve_sweep

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    spec = resolve_sweep(sweep_file, gpu_count=gpus)
    chosen = sweeps.chosen_because(sweep_file, gpu_count=gpus)
    overrides = {k: v for k, v in (("data", data), ("tokenizer", tokenizer)) if v is not None}
    if overrides:
        spec = spec.with_run(**overrides)
    if repeats is not None:
        spec = dataclasses.replace(spec, repeats=repeats)
    options = sweeps.SweepOptions(
        results=results,
        name=name,
        timeout_s=timeout_s,
        retry_failed=retry_failed,
        launcher=launcher,
        nodes=nodes,
        progress=progress,
        max_points=max_points,
        find_max_batch=find_max_batch,
        predict_oom=not no_predict_oom,
    )
    if dry_run:
        click.echo(sweeps.dry_run(spec, options, chosen=chosen))
        return
    # SIGTERM (scancel, a CI runner stopping, `kill`) stops the sweep as Ctrl-C does: the point
    # in flight is killed with its whole tree and gets no row, so the next run resumes it.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = sweeps.run_sweep(spec, options, echo=click.echo, chosen=chosen)
    except KeyboardInterrupt as exc:
        why = f" ({exc})" if str(exc) else ""
        click.echo(
            f"interrupted{why}: finished points are in the ledger; run again to resume", err=True
        )
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.statuses.items()))
    click.echo(f"ran {result.ran} point(s); sweep now: {counts or 'no points'}")
    ledger = result.sweep_dir / LEDGER_NAME
    where = f" (ledger: {ledger})" if ledger.is_file() else ""
    click.echo(f"results: {result.sweep_dir}{where}")
    _after_sweep(result.sweep_dir)
    if history:
        _ingest_after_sweep(result.sweep_dir)


@cli.command()
@click.argument("sweep_file")
@click.option("--nodes", type=click.IntRange(min=1), required=True, help="Nodes to allocate.")
@click.option(
    "--gpus-per-node",
    type=click.IntRange(min=1),
    default=None,
    help="GPUs to allocate per node; required when the sweep runs on cuda, refused on cpu.",
)
@click.option("--partition", default=None, help="SLURM partition.")
@click.option("--account", default=None, help="SLURM account.")
@click.option("--time", "time_limit", default="04:00:00", show_default=True, help="Time limit.")
@click.option("--results", default="results", show_default=True, help="Results root folder.")
@click.option("--name", default=None, help="Sweep folder name under --results.")
@click.option("--data", default=None, help="Override every point's data source.")
@click.option("--tokenizer", default=None, help="Override every point's tokenizer.")
@click.option(
    "--timeout-s",
    type=FiniteFloatRange(min=0, min_open=True),
    default=None,
    help="Per-point limit in seconds (default: the sweep file's timeout_s).",
)
@click.option(
    "-o",
    "--output",
    type=OutputFile("harness.launch:SBATCH_KIND", allow_dash=True),
    required=True,
    help="Where to write the sbatch script ('-' for stdout).",
)
@user_errors
def sbatch(
    sweep_file: str,
    nodes: int,
    gpus_per_node: int | None,
    partition: str | None,
    account: str | None,
    time_limit: str,
    results: str,
    name: str | None,
    data: str | None,
    tokenizer: str | None,
    timeout_s: float | None,
    output: Path,
) -> None:
    """Write an sbatch script that runs SWEEP_FILE across an allocation of N nodes.

    The script runs as written from a login shell: it activates this environment, cd's to
    this folder and runs the sweep with --launcher slurm. Submit it with `sbatch FILE`.
    """
    import dataclasses

    from harness.launch import SBATCH_KIND, build_sbatch_script, sbatch_job_here
    from harness.outputs import write_output
    from harness.spec import Resources, resolve_sweep

    spec = resolve_sweep(sweep_file, gpu_count=gpus_per_node or 0)  # a bad file fails now
    overrides = {k: v for k, v in (("data", data), ("tokenizer", tokenizer)) if v is not None}
    if overrides:
        spec = spec.with_run(**overrides)
    if name is not None:
        spec = dataclasses.replace(spec, name=name)  # validated like a name in the file
    points = spec.expand(Resources(nodes=nodes, gpus_per_node=gpus_per_node or 0, launcher="slurm"))
    uses_gpus = any(p.spec.device == "cuda" for p in points)
    if uses_gpus and gpus_per_node is None:
        raise UserError(f"{spec.source} runs on cuda: give --gpus-per-node")
    if not uses_gpus and gpus_per_node is not None:
        raise UserError(f"{spec.source} runs on cpu only: --gpus-per-node does not apply")
    sweep_args: list[str] = []
    for option, value in (
        ("--name", name), ("--data", data), ("--tokenizer", tokenizer), ("--timeout-s", timeout_s),
    ):  # fmt: skip
        if value is not None:
            sweep_args += [option, f"{value:g}" if isinstance(value, float) else value]
    job = sbatch_job_here(
        sweep_file,
        nodes=nodes,
        gpus_per_node=gpus_per_node or 0,
        results=results,
        partition=partition,
        account=account,
        time_limit=time_limit,
        job_name=f"distrinews-{spec.name}",
        sweep_args=tuple(sweep_args),
    )
    script = build_sbatch_script(job)
    if str(output) == "-":
        click.echo(script, nl=False)
        return
    write_output(output, script, SBATCH_KIND)
    runnable = sum(p.skip_reason is None for p in points)
    click.echo(f"wrote {output}: {runnable}/{len(points)} points fit; submit with: sbatch {output}")


@cli.command()
@click.argument("results_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=OutputFile("harness.store:EXPORT_KIND"),
    required=True,
    help="A .parquet or .csv file.",
)
@user_errors
def export(results_dir: Path, output: Path) -> None:
    """Export the latest row per point of one sweep folder (or all under a root) to a table."""
    from harness.store import export_ledger

    n = export_ledger(results_dir, output)
    click.echo(f"wrote {n} rows to {output}")


@cli.command()
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(path_type=Path),
    help="A checkpoint directory, or a train --out directory (its latest checkpoint is used).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on; 0.0.0.0 exposes the service to the network.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    default=None,
    help="Tokenizer directory or vocab.txt, for a checkpoint saved without one.",
)
@click.option(
    "--max-texts", type=click.IntRange(min=1), default=64, show_default=True, help="Per request."
)
@click.option(
    "--max-chars", type=click.IntRange(min=1), default=2000, show_default=True, help="Per text."
)
@click.option(
    "--batch-window-ms",
    type=FiniteFloatRange(0, 1000),
    default=0.0,
    show_default=True,
    help="Micro-batching: requests arriving within this window share one forward pass (0: off).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@user_errors
def serve(
    checkpoint: Path,
    host: str,
    port: int,
    device: str,
    tokenizer: Path | None,
    max_texts: int,
    max_chars: int,
    batch_window_ms: float,
    log_level: str,
) -> None:
    """Serve a trained checkpoint over HTTP: POST /predict, GET /healthz, /readyz, /docs.

    \b
    Query it with curl:
      curl -s http://127.0.0.1:8000/predict -H 'content-type: application/json' \\
        -d '{"texts": ["Stocks rallied after the central bank held rates."]}'
    """
    try:
        import uvicorn

        from distrinews.serve import ServeLimits, create_app
    except ImportError as exc:
        raise UserError(
            f"serve needs the 'serve' extra ({exc.name} is missing): "
            "pip install 'distrinews[serve]'"
        ) from None
    import logging

    # The service logs model loading and inference failures (with tracebacks) under
    # "distrinews"; uvicorn configures only its own loggers, so give ours a handler.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logging.getLogger("distrinews").addHandler(handler)
    logging.getLogger("distrinews").setLevel(log_level.upper())
    limits = ServeLimits(max_texts=max_texts, max_chars=max_chars)
    app = create_app(
        checkpoint,
        device=device,
        tokenizer=tokenizer,
        limits=limits,
        batch_window_s=batch_window_ms / 1000.0,
    )
    click.echo(f"serving {checkpoint} at http://{host}:{port} (API docs: /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


@cli.command("bench-serve")
@click.option("--url", required=True, help="Base URL of a running server (loopback only).")
@click.option(
    "--concurrency",
    default="1,4,16",
    show_default=True,
    help="Comma-separated concurrency levels (requests in flight at once).",
)
@click.option(
    "--requests",
    "n_requests",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Most requests per level.",
)
@click.option(
    "--max-seconds",
    type=FiniteFloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Most wall time per level.",
)
@click.option("--texts-per-request", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Unrecorded requests before the first level.",
)
@click.option(
    "--data",
    default=None,
    help="Texts from a .csv/.jsonl/.parquet AG News file (default: built-in sample sentences).",
)
@click.option(
    "--results",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
)
@click.option(
    "--name",
    default="serving",
    show_default=True,
    help="Rows go to RESULTS/NAME/serving.jsonl (appended).",
)
@click.option("--allow-remote", is_flag=True, help="Permit a non-loopback --url.")
@user_errors
def bench_serve(
    url: str,
    concurrency: str,
    n_requests: int,
    max_seconds: float,
    texts_per_request: int,
    warmup: int,
    data: str | None,
    results: Path,
    name: str,
    allow_remote: bool,
) -> None:
    """Requests/s and latency p50/p95/p99 of a running server over a concurrency sweep.

    \b
      distrinews-bench serve --checkpoint results/train-tiny --port 8000 &
      distrinews-bench bench-serve --url http://127.0.0.1:8000 --concurrency 1,4,16

    Exit status 1 when any request failed (the rows are still recorded).
    """
    from harness.bench_serve import (
        BenchServeSpec,
        bench_serve,
        format_table,
        load_texts,
        parse_concurrency,
    )
    from harness.spec import check_name

    check_name(name, where="--name")
    spec = BenchServeSpec(
        url=url,
        concurrency=parse_concurrency(concurrency),
        requests=n_requests,
        max_seconds=max_seconds,
        texts_per_request=texts_per_request,
        warmup_requests=warmup,
        allow_remote=allow_remote,
    )
    texts = load_texts(data)
    out = results / name

    def progress(row: dict[str, Any], level: Any) -> None:
        click.echo(
            f"concurrency {row['concurrency']}: {row['requests']} requests, "
            f"{row['errors']} errors in {row['duration_s']:.1f} s",
            err=True,
        )
        for sample in level.error_samples:
            click.echo(f"  error: {sample}", err=True)

    rows = bench_serve(spec, texts, results_dir=out, on_level=progress)
    click.echo(format_table(rows))
    click.echo(f"rows appended to {out / SERVING_LEDGER}")
    if any(row["errors"] for row in rows):
        sys.exit(1)


@cli.command()
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=OutputFile("harness.report.load:REPORT_KIND"),
    default=None,
    help="File to write (html default: RESULTS_DIR/report.html; text and json default: stdout).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "text", "json"]),
    default="html",
    show_default=True,
    help="html: write one self-contained file; text: print the headline tables; json: print "
    "the report's numbers (headline, curves, decomposition) as one JSON object.",
)
@user_errors
def report(results_dir: Path, output: Path | None, fmt: str) -> None:
    """Render the scaling report of one sweep folder."""
    from harness.outputs import write_output
    from harness.report import load_report, render_json, render_report, render_text
    from harness.report.load import REPORT_KIND

    if fmt == "html":
        click.echo(f"report: {render_report(results_dir, output)}")
        return
    text = render_json(results_dir) if fmt == "json" else render_text(load_report(results_dir))
    if output is None:
        click.echo(text, nl=False)
        return
    click.echo(f"report: {write_output(output, text, REPORT_KIND)}")


@cli.command("compare")
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("current", type=click.Path(path_type=Path))
@click.option(
    "--rtol",
    type=FiniteFloatRange(0, 1, max_open=True),
    default=None,
    help="Relative throughput change that counts as a regression "
    "[default: the baseline sweep's [gate] rtol, else 0.05].",
)
@click.option(
    "--efficiency-tol-pp",
    type=FiniteFloatRange(min=0),
    default=None,
    help="Scaling-efficiency drop (percentage points) that counts as a regression "
    "[default: the baseline sweep's [gate] efficiency_tol_pp, else 5].",
)
@click.option(
    "--alpha",
    type=FiniteFloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="Significance level of the one-sided tests on repeats.",
)
@click.option("--metric", default="samples_per_s", show_default=True, help="Ledger column.")
@click.option("--allow-env-change", is_flag=True, help="Compare across environment changes.")
@click.option("--fail-on-missing", is_flag=True, help="Missing baseline points fail the gate.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
)
@user_errors
def compare_cmd(
    baseline: Path,
    current: Path,
    rtol: float | None,
    efficiency_tol_pp: float | None,
    alpha: float,
    metric: str,
    allow_env_change: bool,
    fail_on_missing: bool,
    fmt: str,
) -> None:
    """Gate CURRENT against BASELINE (results folders or exported tables).

    Exit 0: no regression; 1: regression; 2: unusable input.
    """
    from harness.compare import run_compare

    text, result = run_compare(
        baseline,
        current,
        fmt,
        rtol=rtol,
        efficiency_tol_pp=efficiency_tol_pp,
        alpha=alpha,
        metric=metric,
        allow_env_change=allow_env_change,
        fail_on_missing=fail_on_missing,
    )
    click.echo(text, nl=False)
    sys.exit(1 if result.regressed else 0)


@cli.command("project")
@click.argument("results_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--gpus",
    default=None,
    help="GPU counts to predict: 8,16,32 or 8,16,...,1024 [default: 8,16,...,1024; a CPU "
    "sweep: its own host's rank counts].",
)
@click.option(
    "--gpus-per-node",
    type=click.IntRange(min=1),
    default=None,
    help="GPUs per node [default: the fabric's, 8 for the DGX/HGX presets].",
)
@click.option(
    "--fabric",
    default=None,
    help="Interconnect: a preset (dgx-h100, dgx-a100, dgx-1, dgx-2, aws-p5, ...), a link, or "
    "INTRA,INTER links [default: dgx-h100]. An unknown name lists the known ones.",
)
@click.option(
    "--busbw-gbps",
    default=None,
    help="Achieved all-reduce bus bandwidth INTRA[,INTER] in GB/s; replaces NCCL's modelled "
    "one (and, with a sweep, the measured one). One value sets the intra-node link only.",
)
@click.option("--gpu", default=None, help="GPU generation (P100, V100, A100, H100, H200, B200).")
@click.option(
    "--nvlink",
    default=None,
    help="Intra-node NVLink generation (P100, V100, A100, H100, H200, B200): all links usable.",
)
@click.option("--pcie-gen", type=int, default=None, help="Intra-node PCIe generation (3, 4, 5).")
@click.option("--nics-per-node", type=int, default=None, help="Network cards per node.")
@click.option("--nic-gbps", type=float, default=None, help="Each NIC's rate in Gb/s.")
@click.option(
    "--transport",
    default=None,
    help="How NCCL uses the network: rdma (InfiniBand/RoCE), tcp (sockets), efa, tcpxo.",
)
@click.option("--nvls", type=click.Choice(["on", "off"]), default=None, help="NVLink SHARP.")
@click.option(
    "--sharp/--no-sharp", default=None, help="In-network reduction (NCCL CollNet) [default: off]."
)
@click.option(
    "--link-efficiency",
    default=None,
    help="Achieved / NCCL-modelled bus bandwidth INTRA[,INTER], each a value or LO:HI "
    "[default: the fabric table's stated ranges].",
)
@click.option(
    "--step-time-ms",
    default=None,
    help="Pure-input mode: compute-only step time in ms (several, comma-separated: repeats).",
)
@click.option("--grad-mb", type=float, default=None, help="Pure-input mode: gradient MiB.")
@click.option(
    "--bucket-mb",
    default="25",
    show_default=True,
    help="Pure-input mode: DDP bucket cap in MiB, or the bucket sizes in DDP order.",
)
@click.option(
    "--ready-share",
    default=None,
    help="Pure-input mode: when each bucket is ready, as shares of the hide window, DDP order "
    "[default: reverse layer order, compute in proportion to parameters].",
)
@click.option(
    "--overlap",
    default=None,
    help="Pure-input mode: share of the compute step backward spans (all-reduces hide behind "
    "it), a value or LO:HI [default: 2/3, range 0.55:0.75].",
)
@click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--comm-hook",
    type=click.Choice(["none", "fp16", "bf16", "powersgd"]),
    default="none",
    show_default=True,
    help="Pure-input mode: DDP communication hook.",
)
@click.option("--powersgd-rank", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--matrix-dim",
    type=click.IntRange(min=1),
    default=768,
    show_default=True,
    help="Pure-input PowerSGD: the gradient counts as square matrices of this size.",
)
@click.option(
    "--jitter",
    default=None,
    help="Pure-input mode: coefficient of variation of one rank's step time, a value or LO:HI "
    "[default: 0.0165, range 0.003:0.03].",
)
@click.option(
    "--host-overhead-ms",
    default=None,
    help="Pure-input mode: per-step cost at N > 1 that is not the all-reduce, a value or LO:HI "
    "[default: 1, range 0:2; on GPUs DDP's bucket copies through HBM come on top].",
)
@click.option(
    "--loader-samples-per-s",
    default=None,
    help="Pure-input mode: the most samples/s one node's input pipeline delivers (value or LO:HI).",
)
@click.option(
    "--scaling",
    type=click.Choice(["weak", "strong"]),
    default="weak",
    show_default=True,
    help="Pure-input mode: keep each GPU's batch (weak) or the global batch (strong).",
)
@click.option(
    "--fixed-step-ms",
    default=None,
    help="Pure-input strong scaling: per-step cost that does not shrink with N (e.g. the "
    "optimizer), a value or LO:HI [default: 0].",
)
@click.option(
    "--per-device-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Pure-input mode: samples per GPU per micro-step (for samples/s).",
)
@click.option(
    "--what-if",
    is_flag=True,
    default=False,
    help="Show projections onto a machine the sweep did not run on (a CPU sweep on a GPU "
    "fabric), labelled what-if on every row.",
)
@click.option(
    "--draws",
    type=int,
    default=400,
    show_default=True,
    help="Monte Carlo draws per input for the 95% intervals (10 to 100,000).",
)
@click.option(
    "--validate",
    "validate_",
    is_flag=True,
    default=False,
    help="Hold the model against the published scaling tables (harness/projection/"
    "published.toml) and print each row's error and the summary.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=OutputFile("harness.projection.render:PROJECTION_KIND"),
    default=None,
    help="Write to this file (atomically) instead of stdout; never replaces a file this "
    "command did not write.",
)
@user_errors
def project_cmd(
    results_dir: Path | None,
    gpus: str | None,
    gpus_per_node: int | None,
    fabric: str | None,
    busbw_gbps: str | None,
    gpu: str | None,
    nvlink: str | None,
    pcie_gen: int | None,
    nics_per_node: int | None,
    nic_gbps: float | None,
    transport: str | None,
    nvls: str | None,
    sharp: bool | None,
    link_efficiency: str | None,
    step_time_ms: str | None,
    grad_mb: float | None,
    bucket_mb: str,
    ready_share: str | None,
    overlap: str | None,
    grad_accum: int,
    comm_hook: str,
    powersgd_rank: int,
    matrix_dim: int,
    jitter: str | None,
    host_overhead_ms: str | None,
    loader_samples_per_s: str | None,
    scaling: str,
    fixed_step_ms: str | None,
    per_device_batch: int | None,
    what_if: bool,
    draws: int,
    validate_: bool,
    fmt: str,
    output: Path | None,
) -> None:
    """Predict step time, samples/s and scaling efficiency at 8...1024 GPUs.

    \b
    From a sweep (every scaling curve with an N = 1 point):
      distrinews-bench project results/h100x8-scaling --gpus 8,16,...,1024 --fabric dgx-h100
    From plain numbers (any model, no sweep):
      distrinews-bench project --step-time-ms 120 --grad-mb 255 --bucket-mb 25 \\
        --overlap 0.6 --fabric dgx-a100 --gpus 8,16,...,1024
    Against the published scaling tables:
      distrinews-bench project --validate

    The model: step = compute + host overhead + the all-reduce backward cannot hide (NCCL's own
    cost model) + a straggler allowance (docs/projection.md). Intervals: 95% Monte Carlo over
    every input (measured spreads and stated ranges).
    """
    from harness.outputs import write_output
    from harness.projection import render, run_project
    from harness.projection.render import PROJECTION_KIND

    if validate_:
        if results_dir is not None or step_time_ms is not None or grad_mb is not None:
            raise UserError("--validate takes no RESULTS_DIR and no pure-input flags")
        from harness.projection import validate

        text = validate.render(validate.validate(n_draws=draws))
    else:
        pure_flags = step_time_ms is not None or grad_mb is not None
        if results_dir is not None and pure_flags:
            raise UserError("give RESULTS_DIR or --step-time-ms/--grad-mb, not both")
        pure = None
        if results_dir is None:
            if step_time_ms is None or grad_mb is None:
                raise UserError(
                    "give RESULTS_DIR (a sweep) or both --step-time-ms and --grad-mb (pure inputs)"
                )
            pure = {
                "step_time_ms": step_time_ms,
                "grad_mb": grad_mb,
                "bucket_mb": bucket_mb,
                "overlap": overlap,
                "grad_accum": grad_accum,
                "comm_hook": comm_hook,
                "powersgd_rank": powersgd_rank,
                "matrix_dim": matrix_dim,
                "jitter": jitter,
                "per_device_batch": per_device_batch,
                "ready_share": ready_share,
                "host_overhead_ms": host_overhead_ms,
                "loader_samples_per_s": loader_samples_per_s,
                "scaling": scaling,
                "fixed_step_ms": fixed_step_ms,
            }
        else:
            given = {
                "--overlap": overlap, "--jitter": jitter, "--ready-share": ready_share,
                "--host-overhead-ms": host_overhead_ms, "--fixed-step-ms": fixed_step_ms,
                "--loader-samples-per-s": loader_samples_per_s,
            }  # fmt: skip
            stray = [k for k, v in given.items() if v is not None]
            if stray:
                raise UserError(
                    f"{', '.join(stray)}: pure-input flags; with a sweep these are measured"
                )
        options = {
            "gpu": gpu, "nvlink": nvlink, "pcie_gen": pcie_gen, "nics_per_node": nics_per_node,
            "nic_gbps": nic_gbps, "transport": transport,
            "nvls": None if nvls is None else nvls == "on", "sharp": sharp,
        }  # fmt: skip
        result = run_project(
            results_dir,
            gpus=gpus,
            gpus_per_node=gpus_per_node,
            fabric=fabric,
            busbw_gbps=busbw_gbps,
            pure=pure,
            n_draws=draws,
            fabric_options={k: v for k, v in options.items() if v is not None},
            link_efficiency=link_efficiency,
            what_if=what_if,
        )
        text = render(result, fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    write_output(output, text, PROJECTION_KIND)
    click.echo(f"wrote {output}", err=True)


# -- history: every sweep of every night in one store (harness.history) ----------------------

_DB_OPTION = click.option(
    "--db",
    envvar="DISTRINEWS_HISTORY_DB",
    default=None,
    help="The history store: a file path (SQLite) or postgresql+psycopg://USER@HOST/DB "
    "[env DISTRINEWS_HISTORY_DB; default: results/history.db].",
)
_METRIC_OPTION = click.option(
    "--metric",
    default="samples_per_s",
    show_default=True,
    help="The ledger column to follow (or efficiency: each run's scaling efficiency).",
)
_PVALUE_OPTION = click.option(
    "--max-pvalue",
    type=FiniteFloatRange(0, 0.5, min_open=True),
    default=0.001,
    show_default=True,
    help="Significance level of a change point (lower: fewer, surer changes).",
)


@cli.group()
def history() -> None:
    """Every sweep of every night in one store; when throughput changed, and what changed.

    \b
      distrinews-bench history ingest results/          # every sweep folder under results/
      distrinews-bench history changes --format markdown
      distrinews-bench history check results/cpu-smoke  # exit 1: this sweep opens a regression
      distrinews-bench history report -o history.html

    A finished sweep ingests itself (sweep --no-history: not). docs/history.md says how
    series and change points are defined.
    """


@history.command("ingest")
@click.argument("results_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@_DB_OPTION
@user_errors
def history_ingest(results_dirs: tuple[Path, ...], db: str | None) -> None:
    """Store every run of each sweep folder (a results root: every sweep in it).

    Ingesting a folder again adds nothing; every folder is checked before anything is stored.
    """
    from harness.history import commands

    results = commands.ingest(db, results_dirs)
    click.echo(commands.describe_ingest(results, _masked_store(db)), nl=False)


@history.command("changes")
@_DB_OPTION
@_METRIC_OPTION
@_PVALUE_OPTION
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
    help='json: {"changes": [...]}, each with the series\' configuration columns, metric, '
    "git_sha, started_at, sweep_dir, change_pct, change_pct_ci and what_changed.",
)
@user_errors
def history_changes(db: str | None, metric: str, max_pvalue: float, fmt: str) -> None:
    """Every change point of every series, newest first, with what changed with it."""
    from harness.history import commands

    click.echo(commands.changes(db, metric=metric, fmt=fmt, max_pvalue=max_pvalue), nl=False)


@history.command("check")
@click.argument("results_dir", type=click.Path(path_type=Path))
@_DB_OPTION
@_METRIC_OPTION
@_PVALUE_OPTION
@user_errors
def history_check(results_dir: Path, db: str | None, metric: str, max_pvalue: float) -> None:
    """Ingest one sweep and judge it against its series' history (Markdown for a CI summary).

    Exit 0: no regression opens at this sweep; 1: one does; 2: unusable input.
    """
    from harness.history import commands

    verdict = commands.check(db, results_dir, metric=metric, max_pvalue=max_pvalue)
    click.echo(verdict.text, nl=False)
    sys.exit(1 if verdict.regressed else 0)


@history.command("report")
@_DB_OPTION
@_METRIC_OPTION
@click.option(
    "-o",
    "--output",
    type=OutputFile("harness.history.render:HISTORY_PAGE_KIND"),
    default=None,
    help="HTML file to write [default: history.html beside an SQLite store, else ./history.html].",
)
@user_errors
def history_report(db: str | None, metric: str, output: Path | None) -> None:
    """One self-contained HTML page: a chart per series, change points marked and labelled."""
    from harness.history import commands

    click.echo(f"history report: {commands.report(db, output, metric=metric)}")


def _masked_store(db: str | None) -> str:
    from harness.history import schema

    url = schema.resolve(db)
    return str(url.database) if url.get_backend_name() == "sqlite" else schema.mask(url)


def _ingest_after_sweep(sweep_dir: Path) -> None:
    """A finished sweep ingests itself into the history; a failure only warns (one line): the
    results are safe in the ledger, and `history ingest` can add them later."""
    from harness.history import commands

    try:
        click.echo(commands.ingest_after_sweep(sweep_dir))
    except UserError as exc:
        click.echo(f"warning: not in the history: {exc}", err=True)
    except OSError as exc:
        click.echo(f"warning: not in the history: {describe_os_error(exc)}", err=True)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
