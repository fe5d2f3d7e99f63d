"""The largest per-device batch that fits: a bounded search by real trial runs.

The first failure a sweep meets is usually out-of-memory, and the batch that just fits is the
one that uses a GPU best. For each *configuration* of a sweep (its points with the per-device
batch and the repeat index set aside) the search launches short trial runs of the real worker
and reads only one thing from each: did it run (ok) or run out of memory (oom)?

1. **Doubling**: from the smallest batch the sweep lists for that configuration, double while
   trials succeed (or halve while they run out of memory), until one trial of each kind
   brackets the answer;
2. **bisection** between the largest batch that ran and the smallest that did not, until they
   are 1 apart (then the answer is exact) --

bounded by ``max_trials`` trials and ``budget_s`` seconds per configuration (no trial starts past
the budget), and by ``limit`` (the batch never grows past it). A trial failing any other way
(crash, timeout, ...) ends that configuration's search with the reason: it says nothing about
memory.

Trials are ordinary points of a side sweep, ``results/<sweep>/max_batch/`` (their own ledger,
folders and logs; ``warmup_steps`` at most 1 and ``trial_steps`` measured steps: enough for the
optimizer state and the peak of a step), so a resumed search reuses their results instead of
launching them again. One row per configuration goes to ``results/<sweep>/max_batch.jsonl``.

:func:`search` is the pure algorithm (the trial is a function argument);
:func:`run_searches` drives it through real launches.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distrinews.errors import UserError
from distrinews.layout import MAX_BATCH_DIR, MAX_BATCH_LEDGER
from distrinews.runspec import RunSpec

from . import store

#: How a search ended.
STOPS = ("converged", "limit", "nothing_fits", "max_trials", "budget", "failed")

_KEYS = ("search", "max_trials", "budget_s", "trial_steps", "limit")


@dataclass(frozen=True, kw_only=True)
class MaxBatchSearch:
    """The sweep file's ``[max_batch]`` table (and the CLI's --find-max-batch)."""

    search: bool = False
    """Run the search for every configuration before the sweep's points."""
    max_trials: int = 12
    """Trial launches per configuration at most."""
    budget_s: float = 1800.0
    """Seconds per configuration: no trial starts after this much time has gone."""
    trial_steps: int = 2
    """Measured steps per trial (after at most one warmup step)."""
    limit: int = 65536
    """The batch never grows past this."""

    def __post_init__(self) -> None:
        if not isinstance(self.search, bool):
            raise UserError(f"max_batch.search = {self.search!r}: expected true or false")
        for name in ("max_trials", "trial_steps", "limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"max_batch.{name} = {value!r}: expected an integer >= 1")
        b = self.budget_s
        if not isinstance(b, (int, float)) or isinstance(b, bool) or not 0 < b < float("inf"):
            raise UserError(f"max_batch.budget_s = {b!r}: expected a number of seconds > 0")

    @classmethod
    def from_table(cls, table: Any, *, source: str) -> MaxBatchSearch:
        """Parse ``[max_batch]``; one UserError line naming the file and key when wrong."""
        if not isinstance(table, dict):
            raise UserError(f"{source}: max_batch must be a table ([max_batch])")
        for key in table:
            if key not in _KEYS:
                raise UserError(
                    f"{source}: unknown key 'max_batch.{key}'; allowed: {', '.join(_KEYS)}"
                )
        try:
            return cls(**table)
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """How one configuration's search went."""

    largest_ok: int | None
    """The largest batch that ran (None: none did)."""
    smallest_oom: int | None
    """The smallest batch that ran out of memory (None: none did, up to the limit)."""
    trials: tuple[tuple[int, str], ...]
    """(batch, status) in the order they ran."""
    stopped: str
    """One of STOPS."""
    reason: str | None = None
    """Why a ``failed`` search failed (the trial's status and reason)."""
    elapsed_s: float = 0.0
    """Wall-clock seconds the search took."""

    @property
    def exact(self) -> bool:
        """True when the answer is exact: the next batch up ran out of memory."""
        return (
            self.largest_ok is not None
            and self.smallest_oom is not None
            and self.smallest_oom == self.largest_ok + 1
        )


Trial = Callable[[int], tuple[str, str | None]]
"""Runs one batch size; returns (status, reason): "ok", "oom", or any other ledger status."""


def search(
    start: int,
    trial: Trial,
    *,
    max_trials: int,
    budget_s: float,
    limit: int,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """Doubling, then bisection, for the largest batch where ``trial`` says ok (module doc).

    Assumes memory grows with the batch (a batch that runs out of memory means every larger
    one does too), which holds for training.
    """
    t0 = clock()
    lo: int | None = None  # largest batch seen ok
    hi: int | None = None  # smallest batch seen oom
    trials: list[tuple[int, str]] = []
    batch = max(1, min(start, limit))

    def done(stopped: str, reason: str | None = None) -> SearchResult:
        return SearchResult(
            largest_ok=lo,
            smallest_oom=hi,
            trials=tuple(trials),
            stopped=stopped,
            reason=reason,
            elapsed_s=clock() - t0,
        )

    while True:
        if len(trials) >= max_trials:
            return done("max_trials")
        if clock() - t0 >= budget_s:
            return done("budget")
        status, reason = trial(batch)
        trials.append((batch, status))
        if status == "ok":
            lo = batch if lo is None else max(lo, batch)
        elif status == "oom":
            hi = batch if hi is None else min(hi, batch)
        else:
            return done("failed", f"batch {batch}: {status}" + (f": {reason}" if reason else ""))
        if hi is None:  # everything so far ran: keep doubling
            if lo >= limit:
                return done("limit")
            batch = min(2 * lo, limit)
        elif lo is None:  # everything so far ran out of memory: keep halving
            if hi == 1:
                return done("nothing_fits")
            batch = hi // 2
        else:
            if hi - lo <= 1:
                return done("converged")
            batch = (lo + hi) // 2


# -- the searches of a sweep -----------------------------------------------------------------


def search_key(spec: RunSpec) -> str:
    """The configuration a search is for: the spec with its batch and repeat set aside."""
    return dataclasses.replace(spec, per_device_batch=1, repeat=0).config_key


def trial_spec(spec: RunSpec, batch: int, options: MaxBatchSearch) -> RunSpec:
    """The short run that tries one batch size for ``spec``'s configuration."""
    return dataclasses.replace(
        spec,
        per_device_batch=batch,
        repeat=0,
        warmup_steps=min(spec.warmup_steps, 1),
        measured_steps=options.trial_steps,
    )


def configurations(specs: Sequence[RunSpec]) -> list[tuple[str, RunSpec]]:
    """(search key, representative spec) per configuration; the spec has the smallest batch."""
    best: dict[str, RunSpec] = {}
    for spec in specs:
        key = search_key(spec)
        if key not in best or spec.per_device_batch < best[key].per_device_batch:
            best[key] = spec
    return list(best.items())


def result_row(key: str, spec: RunSpec, result: SearchResult, options: MaxBatchSearch) -> dict:
    """The max_batch.jsonl row of one search: configuration columns, answer, how it went."""
    config = store.config_columns(spec)
    for name in ("per_device_batch", "global_batch", "warmup_steps", "measured_steps"):
        config.pop(name)
    return {
        "search_key": key,
        **config,
        "start_batch": spec.per_device_batch,
        "largest_batch_ok": result.largest_ok,
        "smallest_batch_oom": result.smallest_oom,
        "exact": result.exact,
        "stopped": result.stopped,
        "reason": result.reason,
        "trials": len(result.trials),
        "trial_log": " ".join(f"{b}:{s}" for b, s in result.trials),
        "search_s": round(result.elapsed_s, 3),
        "max_trials": options.max_trials,
        "budget_s": float(options.budget_s),
        "limit": options.limit,
        "trial_steps": options.trial_steps,
    }


def read_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """The latest search row per configuration of a sweep folder ([] when none ran)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in store.read_jsonl(Path(sweep_dir) / MAX_BATCH_LEDGER):
        if isinstance(row.get("search_key"), str):
            latest[row["search_key"]] = row
    return list(latest.values())


def run_searches(
    specs: Sequence[RunSpec],
    sweep_dir: Path,
    options: MaxBatchSearch,
    *,
    run_trial: Callable[[RunSpec, Path], dict[str, Any]],
    echo: Callable[[str], None] = print,
    redo: bool = False,
) -> list[dict[str, Any]]:
    """Search every configuration of ``specs`` not searched before; returns the new rows.

    ``run_trial(spec, trials_dir)`` launches one trial point into the side sweep and returns
    its ledger row (the sweep's run_point). A trial whose ok/oom row is already in the side
    ledger is not launched again. ``redo`` searches configurations that have a row already.
    """
    sweep_dir = Path(sweep_dir)
    trials_dir = sweep_dir / MAX_BATCH_DIR
    done = {r["search_key"] for r in read_results(sweep_dir)}
    rows = []
    for key, spec in configurations(specs):
        if key in done and not redo:
            continue
        known = store.latest_by_run_id(store.read_ledger(trials_dir))

        def trial(
            batch: int, spec: RunSpec = spec, known: dict = known, key: str = key
        ) -> tuple[str, str | None]:
            tspec = trial_spec(spec, batch, options)
            prev = known.get(tspec.run_id)
            if prev is not None and prev.get("status") in ("ok", "oom"):
                return prev["status"], prev.get("reason")
            row = run_trial(tspec, trials_dir)
            echo(f"max-batch trial {key} batch {batch}: {row['status']}")
            return row["status"], row.get("reason")

        result = search(
            spec.per_device_batch,
            trial,
            max_trials=options.max_trials,
            budget_s=options.budget_s,
            limit=options.limit,
        )
        row = result_row(key, spec, result, options)
        store.append_jsonl(sweep_dir / MAX_BATCH_LEDGER, row)
        echo(
            f"max-batch {key}: largest batch that ran {result.largest_ok}, smallest out of "
            f"memory {result.smallest_oom} ({result.stopped}, {len(result.trials)} trials, "
            f"{result.elapsed_s:.1f} s)"
        )
        rows.append(row)
    return rows
