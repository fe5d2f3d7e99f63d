"""Hold the projection against published scaling results (``distrinews-bench project --validate``).

The data is ``published.toml`` beside this module: every row cites its source (repository and
commit, or issue URL), quotes its numbers and lists the inputs that had to be estimated. Each
scaling case is projected in pure-input mode from its base GPU count only (the compute step is
the published base throughput's step; where the base is a whole node, the compute step is solved
so the model reproduces that node's throughput), then compared at every larger published count:

- ``error_pp`` = predicted − published efficiency (relative to the base count), in points;
- ``covered``: whether the projection's 95% interval holds the published value.

The summary is taken at each case's largest published N (what a user planning a cluster cares
about) and over all points: median |error|, share within 5 pp, interval coverage, median signed
error. ``busbw`` rows check NCCL's cost model alone against nccl-tests' bus bandwidths.

Nothing here tunes anything: the model's constants come from NCCL's source and the fabric table.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.projection import fabrics, model_error, nccl
from harness.projection.fabrics import Fabric
from harness.projection.inputs import pure_inputs
from harness.projection.project import LEVEL, N_DRAWS, project

DATA = Path(__file__).with_name("published.toml")
#: The targets the product owner set (issue 22): on the largest published N of each case.
TARGETS = {
    "median |error| at the largest N": "<= 3 pp",
    "within 5 pp": ">= 80%",
    "interval coverage": ">= 80%",
    "median signed error": "within +-2 pp",
}


@dataclass(frozen=True)
class CaseResult:
    id: str
    fabric: str
    scaling: str
    base_gpus: int
    points: list[dict[str, Any]]  # gpus, published, predicted, ci, error_pp, covered
    source: str
    quoted: str
    estimated: list[str]


@dataclass(frozen=True)
class Validation:
    cases: list[CaseResult]
    busbw: list[dict[str, Any]]
    summary_largest: dict[str, float]
    summary_all: dict[str, float]
    model_error_sigma: float = math.nan
    """σ of the model's own error measured on the whole table (model_error.estimate)."""


def load(path: Path = DATA) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def _fabric(case: dict[str, Any]) -> Fabric:
    fab = fabrics.resolve_fabric(case["fabric"])
    if "nvls" in case:
        fab = replace(fab, nvls=bool(case["nvls"]))
    if "nics_per_node" in case:
        fab = replace(fab, nics_per_node=int(case["nics_per_node"]))
    if "net" in case:
        fab = replace(fab, net=fabrics.NET_LINKS[case["net"]])
    return fab


def _pure(case: dict[str, Any], layout: dict[str, Any], step_ms: float) -> dict[str, Any]:
    sizes = [float(x) for x in layout["bucket_mib"]]
    strong = case.get("scaling", "weak") == "strong"
    accum = int(case["global_batch"] // case["micro_batch"]) if strong else 1
    return {
        "step_time_ms": f"{step_ms!r}",
        "grad_mb": sum(sizes),
        "bucket_mb": ",".join(repr(x) for x in sizes),
        "ready_share": ",".join(repr(float(x)) for x in layout["ready_share"]),
        "grad_accum": accum,
        "per_device_batch": int(case["micro_batch"]) if strong else None,
        "scaling": "strong" if strong else "weak",
        "fixed_step_ms": case.get("fixed_step_ms"),
    }


def _observed_step_s(case: dict[str, Any], n: int, throughput: float) -> float:
    if case.get("scaling", "weak") == "strong":
        return case["global_batch"] / throughput
    return case["samples_per_step"] * n / throughput


def _draws(case, layout, fab, step_ms, gpus, n_draws, seed=0) -> dict[int, tuple]:
    """Per GPU count, the (step, compute) draws with the model's own error left out."""
    inp = pure_inputs(**_pure(case, layout, step_ms))
    result = project([inp], gpus, fab, fab.gpus_per_node, n_draws=n_draws, seed=seed,
                     keep_draws=True, model_error_sigma=0.0)  # fmt: skip
    return {r["gpus"]: (r["_step_draws"], r["_compute_draws"]) for r in result.rows}


def _steps(case, layout, fab, step_ms, gpus, n_draws, seed=0) -> dict[int, np.ndarray]:
    return {n: v[0] for n, v in _draws(case, layout, fab, step_ms, gpus, n_draws, seed).items()}


def _calibrated_step_ms(case, layout, fab, n0: int, observed_s: float) -> float:
    """The N = 1 compute step that makes the model's step at ``n0`` (draw 0, the model's own
    error left out) match the published base throughput (bisection on a log scale; the step
    grows with it). It sets the compute step's scale only: efficiencies are scored against the
    model's own base step, which at n0 > 1 carries the error's mean like every other count."""
    strong = case.get("scaling", "weak") == "strong"
    lo, hi = (
        math.log(observed_s * (n0 * 0.2 if strong else 0.2)),
        math.log(observed_s * (n0 if strong else 1.0)),
    )
    for _ in range(40):
        mid = (lo + hi) / 2
        step = _steps(case, layout, fab, 1e3 * math.exp(mid), [n0], n_draws=10)[n0][0]
        if step > observed_s:
            hi = mid
        else:
            lo = mid
    return 1e3 * math.exp((lo + hi) / 2)


@dataclass(frozen=True)
class RawCase:
    """A case projected with the model's own error left out: its draws, to score at any σ."""

    case: dict[str, Any]
    draws: dict[int, tuple[np.ndarray, np.ndarray]]  # gpus -> (step, compute) draws
    z: np.ndarray  # the model error's standard normals (z[0] = 0: draw 0's place)

    def log_ratios(self) -> list[float]:
        """ln(published loss / predicted loss) at every published N above the base, the
        prediction with the model's own error off (σ = 0: factor 1 in draw 0)."""
        return [
            model_error.log_ratio(p["published"], p["predicted"])
            for p in score_case(self, 0.0).points
        ]


def project_case(case: dict[str, Any], layouts: dict[str, Any], n_draws: int = N_DRAWS) -> RawCase:
    """Project one case from its base count, the model's own error left out."""
    layout = layouts[case["layout"]]
    fab = _fabric(case)
    gpus = [int(g) for g in case["gpus"]]
    n0, x0 = gpus[0], float(case["throughput"][0])
    observed0 = _observed_step_s(case, n0, x0)
    if n0 == 1:
        step_ms = 1e3 * observed0
    else:
        step_ms = _calibrated_step_ms(case, layout, fab, n0, observed0)
    draws = _draws(case, layout, fab, step_ms, gpus, n_draws)
    # The model error's normals, fixed per case (its id), so a rerun scores the same draws.
    z = model_error.normals(n_draws, np.random.default_rng(list(case["id"].encode())))
    return RawCase(case=case, draws=draws, z=z)


def score_case(raw: RawCase, sigma: float) -> CaseResult:
    """Predictions and 95% intervals of one case with the model's error at ``sigma``."""
    case = raw.case
    factor = model_error.from_normals(sigma, raw.z)
    gpus = [int(g) for g in case["gpus"]]
    xs = [float(x) for x in case["throughput"]]
    n0, x0 = gpus[0], xs[0]
    strong = case.get("scaling", "weak") == "strong"

    def step(n: int) -> np.ndarray:
        s, c = raw.draws[n]
        return model_error.apply(s, c, factor) if n > 1 else s

    base = step(n0)
    points = []
    tail = (1 - LEVEL) / 2 * 100
    for n, x in zip(gpus[1:], xs[1:], strict=True):
        rel = base * n0 / (step(n) * n) if strong else base / step(n)
        predicted = float(rel[0])  # draw 0, as project's rows give it
        published = (x / x0) / (n / n0)
        lo, hi = np.percentile(rel[1:], [tail, 100 - tail])
        points.append(
            {
                "gpus": n,
                "published": published,
                "predicted": predicted,
                "ci": [float(lo), float(hi)],
                "error_pp": 100 * (predicted - published),
                "covered": bool(lo <= published <= hi),
                "model_error_sigma": sigma,
            }
        )
    return CaseResult(
        id=case["id"],
        fabric=case["fabric"],
        scaling="strong" if strong else "weak",
        base_gpus=n0,
        points=points,
        source=case["source"],
        quoted=case["quoted"],
        estimated=list(case.get("estimated", [])),
    )


def run_busbw(row: dict[str, Any]) -> dict[str, Any]:
    fab = _fabric(row)
    n, size = int(row["gpus"]), float(row["bytes"])
    system = fab.system(ranks=n)
    plan = nccl.allreduce_plan(system, n, np.array([size]))
    kind = plan.limited_by[int(plan.algo[0])]
    eff = fab.efficiency_for(kind)

    def busbw(e: float) -> float:
        t = plan.latency_s[0] + size / (plan.bytes_per_s[0] * e)
        return size / t / 1e9 * 2 * (n - 1) / n

    pred, lo, hi = busbw(eff.nominal), busbw(eff.lo), busbw(eff.hi)
    published = float(row["busbw_gbps"])
    return {
        "id": row["id"],
        "algorithm": nccl.plan_label(plan),
        "model_busbw": busbw(1.0),
        "predicted": pred,
        "ci": [lo, hi],
        "published": published,
        "error_pct": 100 * (pred - published) / published,
        "covered": bool(lo <= published <= hi),
        "source": row["source"],
        "quoted": row["quoted"],
        "estimated": list(row.get("estimated", [])),
    }


def summarize(points: list[dict[str, Any]]) -> dict[str, float]:
    if not points:
        return {}
    err = np.array([p["error_pp"] for p in points])
    return {
        "rows": len(points),
        "median_abs_error_pp": float(np.median(np.abs(err))),
        "within_5pp": float(np.mean(np.abs(err) <= 5.0)),
        "coverage": float(np.mean([p["covered"] for p in points])),
        "median_signed_error_pp": float(np.median(err)),
    }


def validate(path: Path = DATA, n_draws: int = N_DRAWS) -> Validation:
    data = load(path)
    raws = [project_case(c, data["layouts"], n_draws) for c in data.get("case", [])]
    ratios = [r.log_ratios() for r in raws]

    # Each case is scored with σ measured on the other cases only (leave one case out): the
    # coverage printed is that of intervals the case itself did not shape.
    def others(i: int) -> list[float]:
        return [x for j, rs in enumerate(ratios) if j != i for x in rs]

    cases = [score_case(raw, model_error.estimate(others(i))) for i, raw in enumerate(raws)]
    busbw = [run_busbw(r) for r in data.get("busbw", [])]
    largest = [c.points[-1] for c in cases if c.points]
    every = [p for c in cases for p in c.points]
    sigma = model_error.estimate([x for rs in ratios for x in rs])
    return Validation(cases, busbw, summarize(largest), summarize(every), sigma)


def _summary_lines(name: str, s: dict[str, float]) -> list[str]:
    if not s:
        return [f"{name}: no rows"]
    return [
        f"{name} ({s['rows']} rows): median |error| {s['median_abs_error_pp']:.1f} pp, "
        f"within 5 pp {100 * s['within_5pp']:.0f}%, 95% interval holds the published value "
        f"{100 * s['coverage']:.0f}%, median signed error {s['median_signed_error_pp']:+.1f} pp"
    ]


def render(v: Validation) -> str:
    out = ["# distrinews-bench projection: validation against published scaling results", ""]
    head = (
        f"{'case':34} {'N':>5} {'published':>9} {'predicted [95% interval]':>26} {'error':>7}  in?"
    )
    out.append(head)
    for c in v.cases:
        for p in c.points:
            ci = f"{100 * p['predicted']:.1f} [{100 * p['ci'][0]:.1f}, {100 * p['ci'][1]:.1f}]"
            out.append(
                f"{c.id:34} {p['gpus']:>5} {100 * p['published']:>8.1f}% {ci:>26} "
                f"{p['error_pp']:>+6.1f}  {'yes' if p['covered'] else 'NO'}"
            )
    out.append("")
    out.append("(efficiency relative to each case's base GPU count, %; error in points)")
    out.append("")
    out.extend(_summary_lines("at each case's largest published N", v.summary_largest))
    out.extend(_summary_lines("at every published N above the base", v.summary_all))
    out.append("targets: " + "; ".join(f"{k} {t}" for k, t in TARGETS.items()))
    out.append(
        f"model error: σ = {v.model_error_sigma:.2f} from the whole table (the projection uses "
        f"{model_error.SIGMA:.2f}); each case's interval above uses σ measured on the other "
        "cases only (leave one case out), so its coverage is out of sample"
    )
    out.append("")
    out.append("nccl-tests bus bandwidths (NCCL's cost model x the stated efficiency):")
    for b in v.busbw:
        out.append(
            f"  {b['id']:26} {b['algorithm']:>16}: model {b['model_busbw']:6.1f}, predicted "
            f"{b['predicted']:6.1f} [{b['ci'][0]:.1f}, {b['ci'][1]:.1f}] GB/s, published "
            f"{b['published']:g} ({b['error_pct']:+.0f}%, {'in' if b['covered'] else 'OUT OF'} "
            "interval)"
        )
    out.append("")
    out.append("sources: harness/projection/published.toml (each row: citation, quote, estimated "
               "inputs)")  # fmt: skip
    return "\n".join(out) + "\n"
