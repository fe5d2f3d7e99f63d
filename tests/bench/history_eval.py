"""Precision and recall of the history's change detection on real run rows of this machine.

    python tests/bench/history_eval.py [SWEEP_FOLDER ...] [--trials 200] [--seed 0]
                                       [--no-baseline] [--upgrades RATE]

Every real cpu-smoke session given (a sweep folder; a pooled baseline's pool.json splits it
back into its sessions; results/baselines/cpu-smoke is included unless ``--no-baseline``:
its sessions change when the baseline is re-pooled, so a table in the docs names the
sessions it came from) contributes, per
configuration (1 and 2 CPU ranks), one *night*: its five runs, with this shared 2-core box's
bimodal noise inside the session and its drift between sessions. A series is built by drawing
nights at random: a session (with replacement), then that session's runs with replacement (so
a few sessions still give varied nights); then a step is planted: every run from night
``before`` on is scaled by (1 - size). The detector is the one ``history changes``
runs (:func:`harness.history.changes.series_changes`, default significance level).

Per cell (step size x nights before/after) it prints: recall (the change found at the planted
night, and within one night), the power of a t-test of the nights at the planted night itself
(what no detector that respects night-to-night noise can beat: it is told where to look),
false changes per 100 series-nights (any other change),
the median estimated size and how often the 95% interval covers the planted size. Targets
(issue 23): recall >= 0.9 for steps >= 10% with 10 nights on each side; <= 1 false change per
100 series-nights.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness import store  # noqa: E402
from harness.history import changes, detect  # noqa: E402

BASELINE = ROOT / "results" / "baselines" / "cpu-smoke"
SIZES = (0.0, 0.05, 0.10, 0.15, 0.20, 0.30)
LAYOUTS = ((10, 10), (5, 15), (15, 5), (20, 20), (10, 3))


def sessions(folder: Path) -> list[dict[int, np.ndarray]]:
    """Per session of ``folder``: world_size -> the ok runs' samples/s, in run order."""
    rows = list(store.latest_by_run_id(store.read_ledger(folder)).values())
    rows.sort(key=lambda r: r["started_at"])
    pool = store.read_json(folder / "pool.json")
    chunks = [s["rows"] for s in pool["sessions"]] if pool else [len(rows)]
    out, at = [], 0
    for n in chunks:
        part, at = rows[at : at + n], at + n
        by_n: dict[int, list[float]] = {}
        for r in part:
            if r["status"] == "ok" and r.get("samples_per_s"):
                by_n.setdefault(int(r["world_size"]), []).append(float(r["samples_per_s"]))
        out.append({k: np.array(v) for k, v in by_n.items()})
    return out


def series_of(nights: list[np.ndarray], stacks: list[str] | None = None) -> changes.Series:
    return changes.Series(
        id=0,
        key="eval",
        label="eval",
        config={},
        machine={},
        nights=[
            changes.Night(
                sweep_id=i,
                values=v,
                median=float(np.median(v)),
                stack=(stacks or [""] * len(nights))[i],
            )
            for i, v in enumerate(nights)
        ],
    )


def stacks_of(before: int, after: int, size: float, rate: float, rng) -> list[str]:
    """Each night's software stack: an upgrade at the planted night (when a step is planted)
    and, at every other night, with probability ``rate``, an upgrade that changes nothing."""
    version, out = 0, []
    for i in range(before + after):
        if i > 0 and ((i == before and size > 0) or rng.random() < rate):
            version += 1
        out.append(f"torch 2.{version}")
    return out


def run_cell(pool, size, before, after, trials, rng, upgrade_rate=None):
    hits = near = false = oracle = 0
    sizes, covered = [], 0
    n_series = 0
    for sess in pool.values():
        for _ in range(trials):
            picks = rng.integers(0, len(sess), before + after)
            # A night: a real session, its runs drawn with replacement (so a few sessions give
            # varied nights, with their own bimodal noise and their own level).
            nights = [
                rng.choice(sess[p], size=len(sess[p])) * (1.0 - size if i >= before else 1.0)
                for i, p in enumerate(picks)
            ]
            stacks = (
                None if upgrade_rate is None else stacks_of(before, after, size, upgrade_rate, rng)
            )
            found = changes.series_changes(series_of(nights, stacks), "samples_per_s")
            # What any test of the nights could do: a t-test at the planted night itself.
            y = np.array([np.log(v).mean() for v in nights])
            level = detect.MAX_PVALUE if upgrade_rate is None else detect.CANDIDATE_PVALUE
            oracle += detect.t_test(y[:before], y[before:]) <= level
            n_series += 1
            match = None
            if size > 0:
                exact = [c for c in found if c.index == before]
                close = [c for c in found if abs(c.index - before) <= 1]
                match = (exact or close or [None])[0]
                hits += bool(exact)
                near += bool(close)
            false += len(found) - (match is not None)
            if match is not None:
                sizes.append(match.change_pct)
                lo, hi = match.change_pct_ci
                covered += lo <= -100 * size <= hi
    nights = n_series * (before + after)
    return {
        "size_pct": round(100 * size),
        "before": before,
        "after": after,
        "series": n_series,
        "recall": hits / n_series if size > 0 else None,
        "recall_within_1": near / n_series if size > 0 else None,
        "oracle": oracle / n_series if size > 0 else None,
        "false_per_100_series_nights": 100 * false / nights,
        "median_estimate_pct": float(np.median(sizes)) if sizes else None,
        "ci_coverage": covered / len(sizes) if sizes else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--trials", type=int, default=200, help="series per configuration/cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument(
        "--upgrades", type=float, default=None, metavar="RATE",
        help="plant each step with a software upgrade at its night (the stack changes), and "
        "upgrades that change nothing at RATE of the other nights (e.g. 0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--no-baseline", action="store_true",
        help="only the folders given, not the committed baseline's sessions",
    )  # fmt: skip
    args = parser.parse_args()
    pool: dict[int, list[np.ndarray]] = {}
    folders = [*([] if args.no_baseline else [BASELINE]), *args.folders]
    if not folders:
        parser.error("--no-baseline needs at least one SWEEP_FOLDER")
    for folder in folders:
        for sess in sessions(folder):
            for world, values in sess.items():
                if len(values) >= 2:
                    pool.setdefault(world, []).append(values)
    spread = {w: float(np.std([np.log(v).mean() for v in s], ddof=1)) for w, s in pool.items()}
    runs = {
        w: float(np.sqrt(np.mean([np.var(np.log(v), ddof=1) for v in s]))) for w, s in pool.items()
    }
    print(
        f"real sessions: {', '.join(f'N={w}: {len(s)}' for w, s in sorted(pool.items()))} from "
        f"{len(folders)} folder(s); sd of log samples/s between sessions' means: "
        + ", ".join(f"N={w}: {v:.3f}" for w, v in sorted(spread.items()))
        + "; between runs of a session: "
        + ", ".join(f"N={w}: {v:.3f}" for w, v in sorted(runs.items()))
    )
    rng = np.random.default_rng(args.seed)
    rows = []
    t0 = time.perf_counter()
    for (before, after), size in itertools.product(LAYOUTS, SIZES):
        rows.append(run_cell(pool, size, before, after, args.trials, rng, args.upgrades))
    elapsed = time.perf_counter() - t0
    print(
        "| step | nights before/after | series | recall (exact) | recall (±1 night) | "
        "t-test at the known night | false changes / 100 series-nights | median estimate | "
        "95% CI covers the step |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rec = "-" if r["recall"] is None else f"{r['recall']:.3f}"
        near = "-" if r["recall_within_1"] is None else f"{r['recall_within_1']:.3f}"
        est = "-" if r["median_estimate_pct"] is None else f"{r['median_estimate_pct']:+.1f}%"
        cov = "-" if r["ci_coverage"] is None else f"{r['ci_coverage']:.2f}"
        orc = "-" if r["oracle"] is None else f"{r['oracle']:.3f}"
        print(
            f"| -{r['size_pct']}% | {r['before']}/{r['after']} | {r['series']} | {rec} | {near} "
            f"| {orc} | {r['false_per_100_series_nights']:.2f} | {est} | {cov} |"
        )
    print(f"({sum(r['series'] for r in rows)} series in {elapsed:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps({"spread": spread, "runs": runs, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
