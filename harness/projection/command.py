"""``distrinews-bench project``: gather inputs, build the fabric, run the projection.

:func:`run_project` is what the command does, minus writing; every bound and bad value is a
one-line :class:`~distrinews.errors.UserError` raised before the work it bounds.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from distrinews.errors import UserError
from harness.projection import fabrics, model_error
from harness.projection.fabrics import Fabric
from harness.projection.inputs import (
    MAX_TARGETS,
    parse_gpus,
    parse_numbers,
    parse_range,
    pure_inputs,
    sweep_inputs,
)
from harness.projection.project import MAX_DRAWS, N_DRAWS, Projection, project

DEFAULT_GPUS = (8, 16, 32, 64, 128, 256, 512, 1024)
MAX_BUSBW_GBPS = 100_000.0


def fabric_for(
    name: str | None,
    busbw: str | None,
    options: dict[str, Any] | None = None,
    link_efficiency: str | None = None,
) -> tuple[Fabric, list[str]]:
    """--fabric (default dgx-h100), the new one-property flags, then --busbw-gbps INTRA[,INTER]
    (achieved bus bandwidths; a single value sets the intra-node link only, and says so)."""
    notes: list[str] = []
    fabric = fabrics.resolve_fabric(fabrics.DEFAULT_FABRIC if name is None else name)
    fabric = fabrics.with_options(fabric, **(options or {}))
    if link_efficiency is not None:
        parts = str(link_efficiency).split(",")
        if len(parts) > 2:
            raise UserError(f"--link-efficiency {link_efficiency!r}: give INTRA or INTRA,INTER")
        kinds = [fabric.intra.efficiency_kind, fabric.net.transport][: len(parts)]
        for kind, part in zip(kinds, parts, strict=False):
            r = parse_range("--link-efficiency", part, hi=2.0)
            if r.lo <= 0:
                raise UserError(
                    f"--link-efficiency {part.strip()}: expected an efficiency > 0 (achieved / "
                    "modelled bus bandwidth)"
                )
            fabric = fabrics.with_efficiency(fabric, kind, r)
    if busbw is not None:
        values = parse_numbers("--busbw-gbps", busbw, at_most=MAX_BUSBW_GBPS)
        if len(values) > 2:
            raise UserError(f"--busbw-gbps {busbw!r}: give INTRA or INTRA,INTER (GB/s)")
        inter = values[1] if len(values) == 2 else None
        fabric = fabrics.with_busbw(fabric, values[0], inter)
        if inter is None:
            notes.append(
                f"--busbw-gbps {values[0]:g} set the intra-node bus bandwidth only; the "
                f"inter-node link is the fabric's ({fabric.nics_per_node} x "
                f"{fabric.net.gbit:g} Gb/s {fabric.net.transport}); give INTRA,INTER to set both"
            )
    return fabric, notes


def run_project(
    results_dir: Path | None,
    *,
    gpus: str | None,
    gpus_per_node: int | None,
    fabric: str | None,
    busbw_gbps: str | None,
    pure: dict[str, Any] | None,
    n_draws: int = N_DRAWS,
    fabric_options: dict[str, Any] | None = None,
    link_efficiency: str | None = None,
    what_if: bool = False,
    seed: int = 0,
    model_error_sigma: float = model_error.SIGMA,
) -> Projection:
    """What the command does, minus writing: the fabric, the inputs, then the projection.
    ``model_error_sigma`` is the model's own error (0 leaves it out: tests of the fit's
    mechanics, where the planted truth is the model's)."""
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or not 10 <= n_draws <= MAX_DRAWS:
        raise UserError(f"--draws = {n_draws!r} is not allowed; expected 10 to {MAX_DRAWS:,}")
    options = dict(fabric_options or {})
    if gpus_per_node is not None:
        options["gpus_per_node"] = gpus_per_node
    fab, notes = fabric_for(fabric, busbw_gbps, options, link_efficiency)
    g = fab.gpus_per_node
    targets = parse_gpus(gpus, g) if gpus else None
    if pure is not None:
        inputs = [pure_inputs(**pure)]
        if targets is None:
            targets = tuple(n for n in DEFAULT_GPUS if n <= g or n % g == 0)
    else:
        assert results_dir is not None
        inputs, more = sweep_inputs(results_dir)
        notes.extend(more)
        if targets is None:
            measured = {m.gpus for i in inputs for m in i.measured}
            if all(i.device != "cuda" for i in inputs):
                # A CPU host: its own rank counts (powers of two up to a node), nothing past it.
                targets = tuple(sorted({n for n in (2, 4, 8, 16, 32, 64) if n <= g} | measured))
            else:
                targets = tuple(n for n in DEFAULT_GPUS if n <= g or n % g == 0)
        if busbw_gbps is not None:
            # A stated bus bandwidth outranks a measured one: the sweep's link measurements are
            # dropped, its exposure and straggler measurements still feed the fit.
            inputs = [
                replace(i, measured=tuple(replace(m, busbw_gbps=(), bucket_times=())
                                          for m in i.measured))
                for i in inputs
            ]  # fmt: skip
            notes.append("--busbw-gbps given: it replaces the measured all-reduce bandwidths")
    if len(targets) > MAX_TARGETS:
        raise UserError(f"--gpus: {len(targets):,} GPU counts; at most {MAX_TARGETS:,}")
    for n in targets:
        if n > g and n % g:
            raise UserError(f"GPU count {n} is not a multiple of --gpus-per-node {g}; pass --gpus")
    return project(inputs, targets, fab, g, n_draws=n_draws, notes=notes, what_if=what_if,
                   seed=seed, model_error_sigma=model_error_sigma)  # fmt: skip
