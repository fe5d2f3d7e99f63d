"""Copy a results folder with throughput scaled: plants a known slowdown to test the gate.

    python -m harness.tools.perturb results/cpu-smoke /tmp/slow --throughput-scale 0.8

Every ok ledger row gets its throughput-like metrics (samples/s, tokens/s, MFU, HFU) multiplied
by the scale and its time metrics (step times, measured time) divided by it, so the row stays
self-consistent. ``--min-world-size N`` touches only points with at least N ranks, which plants
a *scaling-efficiency* regression instead of a uniform one. The copy gets everything else
unchanged (env.json, sweep.json, points/); record.json files keep the original numbers -- the
ledger is what report and compare read.

Like every command, it refuses bad input with one line and exit 2 and writes nothing then: a
scale that is not a finite number > 0, or that would turn a metric into infinity or zero
(1e308, 1e-320); a destination that exists, is a symlink or lies inside the source. The copy
appears whole or not at all.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import click

from distrinews import files, layout
from distrinews.errors import UserError
from harness import compare, store
from harness.cli import FiniteFloatRange, user_errors

#: Higher-is-better rates: multiplied by the scale.
RATE_KEYS = compare.HIGHER_IS_BETTER
#: Durations of the measured work: divided by the scale.
TIME_KEYS = (
    "step_time_s_p50",
    "step_time_s_p90",
    "step_time_s_p99",
    "step_time_s_mean",
    "measured_time_s",
)


def perturb_row(row: dict[str, Any], scale: float, min_world_size: int = 1) -> dict[str, Any]:
    """The row with its rates times ``scale`` and its times over it (non-ok rows unchanged)."""
    if row.get("status") != "ok" or (row.get("world_size") or 1) < min_world_size:
        return dict(row)
    out = dict(row)
    for key in RATE_KEYS:
        if isinstance(out.get(key), (int, float)) and not isinstance(out[key], bool):
            out[key] = out[key] * scale
    for key in TIME_KEYS:
        if isinstance(out.get(key), (int, float)) and not isinstance(out[key], bool):
            out[key] = out[key] / scale
    return out


def perturb(src: Path, dst: Path, *, scale: float, min_world_size: int = 1) -> int:
    """Copy ``src`` to ``dst`` (which must not exist) with a scaled ledger; return rows scaled.

    Everything is checked, and the new ledger computed, before anything is written; the copy is
    made in a hidden folder beside ``dst`` and renamed into place whole, so a failure (a bad
    scale, a full disk, Ctrl-C) leaves no half-made copy. Symlinks inside ``src`` are copied as
    links, never followed (a planted link must not pull outside files into the copy).
    """
    src, dst = Path(src), Path(dst)
    if not store.ledger_path(src).is_file():
        raise UserError(f"{src}: no {layout.LEDGER_NAME} here; not a results folder")
    if dst.exists() or dst.is_symlink():
        raise UserError(f"{dst}: already exists; pick a new destination")
    if dst.resolve().is_relative_to(src.resolve()):
        raise UserError(f"{dst}: is inside {src}; pick a destination outside the folder it copies")
    if not (math.isfinite(scale) and scale > 0):
        raise UserError(f"--throughput-scale {scale!r}: expected a finite number > 0")
    rows = store.read_ledger(src)
    new = [perturb_row(r, scale, min_world_size) for r in rows]
    for line, (old, row) in enumerate(zip(rows, new, strict=True), start=1):
        for key in (*RATE_KEYS, *TIME_KEYS):
            if row.get(key) is old.get(key):
                continue
            if not math.isfinite(row[key]) or (row[key] == 0) != (old[key] == 0):
                raise UserError(
                    f"--throughput-scale {scale!r}: turns {layout.LEDGER_NAME} line {line}'s "
                    f"{key} = {old[key]:g} into {row[key]:g}; pick a scale that keeps every "
                    "metric a finite, non-zero number (a planted change is e.g. 0.5..2)"
                )
    text = "".join(
        json.dumps(r, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n" for r in new
    )
    with files.atomic_folder(dst, replace=False) as tmp:
        shutil.copytree(
            src,
            tmp,
            symlinks=True,
            ignore=shutil.ignore_patterns(layout.LOCK_NAME),
            dirs_exist_ok=True,
        )
        store.ledger_path(tmp).unlink()  # the copied ledger: replaced, never written through
        store.atomic_write_text(store.ledger_path(tmp), text)
    return sum(a != b for a, b in zip(rows, new, strict=True))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--throughput-scale",
    type=FiniteFloatRange(min=0, min_open=True),
    required=True,
    help="Multiply throughput by this (0.8 plants a 20% slowdown).",
)
@click.option(
    "--min-world-size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Only scale points with at least this many ranks (plants an efficiency regression).",
)
@user_errors
def main(src: Path, dst: Path, throughput_scale: float, min_world_size: int) -> None:
    """Copy results folder SRC to DST with a planted throughput change."""
    n = perturb(src, dst, scale=throughput_scale, min_world_size=min_world_size)
    click.echo(f"{dst}: {n} ok row(s) scaled by {throughput_scale:g}")


if __name__ == "__main__":
    main()
