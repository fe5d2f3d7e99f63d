"""``distrinews-bench``: the command line. Parses options and calls typed functions; no logic.

Every command turns a :class:`~distrinews.errors.UserError` into one line on stderr and exit
status 2, with no traceback. Options can also come from the environment as
``DISTRINEWS_<COMMAND>_<OPTION>`` (click's ``auto_envvar_prefix``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from distrinews.errors import UserError


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report UserError as one line and exit 2, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(
    context_settings={"auto_envvar_prefix": "DISTRINEWS", "help_option_names": ["-h", "--help"]}
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
    "shape",
    type=click.Choice(["tiny", "base"]),
    default="tiny",
    show_default=True,
    help="Random-init model shape.",
)
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--max-length", type=click.IntRange(min=8, max=512), default=128, show_default=True)
@click.option(
    "--eval-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.1,
    show_default=True,
    help="Held-out share for the accuracy check.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
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
    shape: str,
    steps: int,
    batch_size: int,
    lr: float,
    max_length: int,
    eval_fraction: float,
    seed: int,
    cache_dir: Path | None,
) -> None:
    """A short single-process fine-tuning run with a held-out accuracy check."""
    from distrinews.dataset import AGNewsDataset, get_tokenizer, load_agnews
    from distrinews.model import NewsClassifier
    from distrinews.train import fit

    news = load_agnews(data, seed=seed)
    tok = None if news.synthetic else get_tokenizer(tokenizer)
    train_part, heldout_part = news.split(eval_fraction, seed=seed)
    train_ds = AGNewsDataset.from_data(train_part, tok, max_length=max_length, cache_dir=cache_dir)
    heldout_ds = AGNewsDataset.from_data(
        heldout_part, tok, max_length=max_length, cache_dir=cache_dir
    )
    kind = "SYNTHETIC data (throughput only, accuracy meaningless)" if news.synthetic else "data"
    click.echo(f"{kind}: {news.source}: {len(train_ds)} train / {len(heldout_ds)} held-out")
    model = NewsClassifier.from_config(shape, seed=seed)
    with click.progressbar(length=steps, label="training", file=sys.stderr) as bar:
        result = fit(
            model,
            train_ds,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            heldout=heldout_ds,
            on_step=lambda _s, _l: bar.update(1),
        )
    head = sum(result.losses[:10]) / min(10, len(result.losses))
    tail = sum(result.losses[-10:]) / min(10, len(result.losses))
    click.echo(
        f"loss {head:.4f} -> {tail:.4f} over {steps} steps in {result.seconds:.1f} s "
        f"({steps * batch_size / result.seconds:.0f} samples/s)"
    )
    click.echo(f"held-out accuracy {result.accuracy:.3f} (chance 0.250)")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
