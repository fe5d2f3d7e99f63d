"""Pool several sessions of one sweep into one baseline, so the gate sees between-session noise.

    python -m harness.tools.pool results/baselines/cpu-smoke /tmp/s1/cpu-smoke /tmp/s2/cpu-smoke ...

Why: the repeats of one sweep all come from one session. On a shared machine a whole session
can sit 15-20% off another (a neighbour on the host, clocks), and a baseline made in one lucky
or unlucky session then makes every later session look regressed or improved. Sweeps run at
different times (minutes or hours apart) and pooled into one baseline centre it on the machine's
typical session: its median is the median over sessions. The threshold (the sweep's ``[gate]``
``rtol``) must still cover how far one session strays from that centre -- pooling moves the
baseline to the middle, it does not widen the tolerance -- and ``harness.tools.gate_trials``
measures both on the machine.

The sessions must be the same sweep (same name and configuration keys) in the same environment
(same env.json fingerprint); anything else is refused with the folder and field named. Each
session's ok and failed rows are kept as they are, except: ``repeat`` is renumbered so repeats
stay unique (session k's repeat r becomes k * R + r, R the sweep's repeats), ``run_id`` gets
the session's suffix (``<run_id>.s<k>``: a ledger keeps the latest row per run_id, so equal ids
would hide all sessions but one) and ``point_dir`` is null (a baseline keeps no points/). The
destination gets ``ledger.jsonl``, the first session's ``env.json`` (its ``load_avg_start`` and
``load_avg_end`` replaced by the medians over the sessions that recorded them, so compare reads
the pool's typical load, not one session's) and ``sweep.json``, and ``pool.json`` naming the
sources with their rows and load averages.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import click

from distrinews import layout
from distrinews.errors import UserError
from harness import store
from harness.cli import user_errors


def _session(src: Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    rows = store.read_ledger(src) if store.ledger_path(src).is_file() else None
    if rows is None:
        raise UserError(f"{src}: no {store.LEDGER_NAME} here; not a results folder")
    env, sweep = store.read_json(src / layout.ENV_JSON), store.read_json(src / layout.SWEEP_JSON)
    for name, data in ((layout.ENV_JSON, env), (layout.SWEEP_JSON, sweep)):
        if not isinstance(data, dict):
            raise UserError(f"{src / name}: missing or unreadable; pool whole sweep folders")
    rows = list(store.latest_by_run_id(rows).values())
    return rows, env, sweep  # type: ignore[return-value]


#: env.json's load averages (harness.envinfo): 1, 5 and 15 minutes at the sweep's start / end.
LOAD_KEYS = ("load_avg_start", "load_avg_end")


def pooled_load(envs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per key of :data:`LOAD_KEYS`, the element-wise median over the sessions that have it."""
    out = {}
    for key in LOAD_KEYS:
        values = [
            e[key]
            for e in envs
            if isinstance(e.get(key), list)
            and len(e[key]) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in e[key])
        ]
        if values:
            out[key] = [round(statistics.median(col), 2) for col in zip(*values, strict=True)]
    return out


def pool_rows(sessions: list[list[dict[str, Any]]], repeats: int) -> list[dict[str, Any]]:
    """Every session's rows with repeat, run_id and point_dir made unique across sessions."""
    out = []
    for k, rows in enumerate(sessions):
        for row in rows:
            new = dict(row)
            if isinstance(row.get("repeat"), int):
                new["repeat"] = k * repeats + row["repeat"]
            new["run_id"] = f"{row['run_id']}.s{k}"
            new["point_dir"] = None
            out.append(new)
    return out


def pool(dst: Path, sources: list[Path]) -> int:
    """Write the pooled baseline of ``sources`` into ``dst`` (must not exist); return its rows."""
    if len(sources) < 2:
        raise UserError("give at least two session folders to pool")
    if dst.exists() or dst.is_symlink():
        raise UserError(f"{dst}: already exists; pick a new destination")
    seen: dict[Path, Path] = {}
    for src in sources:  # one session given twice would count as two (its offset twice)
        real = Path(src).resolve()
        if real in seen:
            raise UserError(f"{src}: the same session as {seen[real]}; give each session once")
        seen[real] = Path(src)
    loaded = [_session(Path(s)) for s in sources]
    _, env0, sweep0 = loaded[0]
    keys0 = {r.get("config_key") for r in loaded[0][0]}
    for src, (rows, env, sweep) in zip(sources[1:], loaded[1:], strict=True):
        if sweep.get("name") != sweep0.get("name"):
            raise UserError(
                f"{src}: sweep {sweep.get('name')!r}, but {sources[0]} is {sweep0.get('name')!r}"
            )
        if env.get("fingerprint") != env0.get("fingerprint"):
            raise UserError(
                f"{src / layout.ENV_JSON}: field fingerprint differs from {sources[0]}'s; "
                "pool sessions of one machine class only"
            )
        if {r.get("config_key") for r in rows} != keys0:
            raise UserError(f"{src}: its configurations differ from {sources[0]}'s")
    repeats = sweep0.get("repeats")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        repeats = 1 + max((r.get("repeat") or 0 for s in loaded for r in s[0]), default=0)
    rows = pool_rows([s[0] for s in loaded], repeats)
    env = {**env0, **pooled_load([s[1] for s in loaded])}
    dst.mkdir(parents=True)
    store.atomic_write_json(dst / layout.ENV_JSON, env)
    store.atomic_write_json(dst / layout.SWEEP_JSON, sweep0)
    store.atomic_write_json(
        dst / layout.POOL_JSON,
        {
            "sessions": [
                {
                    "source": str(s),
                    "rows": len(x[0]),
                    **{k: x[1].get(k) for k in LOAD_KEYS if k in x[1]},
                }
                for s, x in zip(sources, loaded, strict=True)
            ]
        },
    )
    store.atomic_write_text(
        store.ledger_path(dst),
        "".join(
            json.dumps(r, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n"
            for r in rows
        ),
    )
    return len(rows)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dst", type=click.Path(path_type=Path))
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@user_errors
def main(dst: Path, sources: tuple[Path, ...]) -> None:
    """Pool the sweep folders SOURCES (one sweep, several sessions) into the baseline DST."""
    n = pool(dst, list(sources))
    click.echo(f"{dst}: {n} rows from {len(sources)} sessions")


if __name__ == "__main__":
    main()
