"""Fabricate nights of sweeps for the history tests: the same small sweep, run night after night.

Each night is a real sweep folder in the contracts.md format (rows built by
``harness.store.make_row`` through :mod:`tests.helpers_results`), its runs moved to that
night's date, its env.json carrying that night's software and commit. A step (a slowdown from
night k on) and an environment change (torch upgraded at night k) are planted by arguments.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from distrinews.layout import ENV_JSON, SWEEP_JSON
from tests.helpers_results import T0, FakeSweep, fake_rows, write_ledger


def night_sweep(
    root: Path,
    night: int,
    *,
    spec: FakeSweep | None = None,
    scale: float = 1.0,
    env: dict[str, Any] | None = None,
    definition: dict[str, Any] | None = None,
    fault_ms: float | None = None,
) -> Path:
    """Night ``night`` of the sweep: ``root/n<night>/<name>/``; returns the folder.

    ``scale`` multiplies every throughput (0.8 plants a 20% slowdown); ``env`` overrides
    env.json fields (``{"torch": "2.14.0"}``); ``fault_ms`` sets that column on every row (a
    planted cause: it does not split a series).
    """
    spec = spec or FakeSweep(
        name="nightly", world_sizes=(1, 2), batches=(16,), precisions=("bf16",), failures=False
    )
    spec = replace(spec, seed=1000 + night, throughput_scale=scale, telemetry=False)
    rows, side = fake_rows(spec)
    shift = timedelta(days=night)
    for row in rows:
        for key in ("started_at", "finished_at"):
            when = datetime.fromisoformat(row[key].replace("Z", "+00:00")) + shift
            row[key] = when.isoformat()
        if fault_ms is not None:
            row["fault"], row["fault_ms"] = "slow_comm", fault_ms
    folder = root / f"n{night:03d}" / spec.name
    folder.mkdir(parents=True)
    write_ledger(folder, rows)
    fields = side["env"]["fingerprint_fields"]
    env_json = {**side["env"], **fields, "git_sha": f"{night:07x}" + "0" * 33, **(env or {})}
    (folder / ENV_JSON).write_text(json.dumps(env_json, indent=2))
    body = {
        "name": spec.name,
        "spec": {"name": spec.name, "repeats": spec.repeats, **(definition or {})},
    }
    (folder / SWEEP_JSON).write_text(json.dumps(body))
    return folder


def night_time(night: int) -> datetime:
    return T0 + timedelta(days=night)
