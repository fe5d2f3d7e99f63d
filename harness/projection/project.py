"""From inputs to predictions with honest intervals: draws, feeds, bands, verdicts.

**Draws.** Every input becomes ``1 + n_draws`` values (draw 0 its nominal value): a measured
sample its median's sampling distribution (:func:`location_draws`: a bootstrap of the median
with many values; with 2-9 repeats, where a bootstrap of the median covers far less than its
label — [min, max] of 3 values holds the median 75% of the time — the mean's Student-t
distribution, wider and honest for roughly normal repeats), a stated range a uniform draw
(:func:`range_draws`). All of them go through the model together (a Monte Carlo over the
inputs), so the 95% interval carries every input's uncertainty, and the rank correlation of
each input's draws with the efficiency's says which inputs dominate its width. Draw 0 is the
point estimate: every input nominal, the model's own error at its mean (``model_error``).

**Feeds: no peeking.** The prediction at N uses only what was measured at fewer GPUs: the
largest single-node N below it that measured the all-reduce (its bus bandwidth calibrates the
intra-node link's efficiency against NCCL's model, its exposed communication fits the hide
window, its straggler gaps the jitter); with nothing measured below it, the fabric's stated
ranges.

**Device kinds.** A CPU/gloo sweep says nothing about a GPU fabric: past its own host, or
where nothing was measured below N, its projection is refused — or, with ``what_if``, computed
and labelled *what-if* on every row. A GPU sweep projected onto a fabric of another GPU is
labelled the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from distrinews.errors import UserError
from harness.projection import model as mdl
from harness.projection import model_error, nccl
from harness.projection.fabrics import (
    COPY_EFFICIENCY,
    HBM_CONTENTION,
    SM_CONTENTION,
    Fabric,
    Range,
)
from harness.projection.inputs import CurveInputs, Measured

#: Monte Carlo draws per input: a stable 95% percentile interval (the 2.5% tails hold 10 draws
#: each), few enough to project a 1,000-point sweep in about a second.
N_DRAWS = 400
MAX_DRAWS = 100_000
LEVEL = 0.95


# -- draws -----------------------------------------------------------------------------------


def location_draws(values: Sequence[float], n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + n_draws,) values of a sample's centre: its median, then draws of its uncertainty.

    10 values or more: bootstrap medians. 2-9 values (repeats): median + s/√n · t(n−1) draws
    (the mean's Student-t interval, honest at the repeat counts sweeps use). One value: no
    spread. None: NaN.
    """
    arr = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    out = np.empty(n_draws + 1)
    if arr.size == 0:
        out.fill(np.nan)
        return out
    out[0] = np.median(arr)
    if arr.size == 1 or n_draws == 0:
        out[1:] = out[0]
    elif arr.size >= 10:
        idx = rng.integers(0, arr.size, size=(n_draws, arr.size))
        out[1:] = np.median(arr[idx], axis=1)
    else:
        s = float(np.std(arr, ddof=1))
        out[1:] = out[0] + s / math.sqrt(arr.size) * rng.standard_t(arr.size - 1, size=n_draws)
    return out


def bandwidth_draws(values: Sequence[float], n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """:func:`location_draws` of a measured bus bandwidth, floored at a tenth of its median: a
    bandwidth is positive, and the Student-t draws of 2-3 repeats (t(1) at two) reach below
    zero, which would make ring times or a link's calibrated efficiency negative."""
    out = location_draws(values, n_draws, rng)
    if np.isfinite(out[0]) and out[0] > 0:
        out = np.maximum(out, out[0] / 10)
    return out


def range_draws(r: Range, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + n_draws,): the nominal value, then uniform draws over the stated range."""
    out = np.empty(n_draws + 1)
    out[0] = r.nominal
    out[1:] = r.nominal if r.fixed else rng.uniform(r.lo, r.hi, size=n_draws)
    return out


# -- the result ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """The rows (one per curve and GPU count), each curve's inputs for the reader, the
    settings (fabric, interval method) and notes."""

    rows: list[dict[str, Any]]
    curves: list[dict[str, Any]]
    settings: dict[str, Any]
    notes: list[str]


@dataclass(frozen=True)
class _Plan:
    """How one curve's prediction at each target is made."""

    feed: int | None
    what_if: bool
    link: str  # "fabric" | "measured-nccl" | "measured-ring"


def _feed_plan(
    inp: CurveInputs, targets: Sequence[int], fabric: Fabric, g: int, what_if: bool
) -> tuple[dict[int, _Plan], list[str]]:
    """Which measured point feeds each target, and which targets cannot be predicted."""
    notes: list[str] = []
    cpu = inp.device != "cuda"
    # A feed must have measured its link (a CPU host: NCCL's model does not describe it, unless
    # --busbw-gbps states it) or, on GPUs, at least its exposure (the link is then the fabric's).
    stated = fabric.intra_busbw is not None
    usable = sorted(
        m.gpus
        for m in inp.measured
        if m.nodes == 1
        and m.gpus <= g
        and (
            m.busbw_gbps
            or m.bucket_times
            or (cpu and stated and m.exposed_comm_s)
            or (not cpu and m.exposed_comm_s)
        )
    )
    foreign = (
        not cpu and inp.gpu_name is not None and fabric.gpu.upper() not in inp.gpu_name.upper()
    )
    plans: dict[int, _Plan] = {}
    skipped: list[int] = []
    unfed: list[int] = []
    for n in targets:
        below = [x for x in usable if x < n]
        feed = below[-1] if below else None
        if cpu:
            if n <= g and feed is not None:
                plans[n] = _Plan(feed, False, "measured-ring")
            elif what_if:
                plans[n] = _Plan(None, True, "fabric")
            elif n <= g:
                unfed.append(n)  # on its own host, but nothing below it measured the ring
            else:
                skipped.append(n)
            continue
        beyond = n > max(usable, default=1)
        plans[n] = _Plan(feed, foreign and beyond, "measured-nccl" if feed else "fabric")
    if unfed:
        measured = {m.gpus for m in inp.measured} | {1}
        notes.append(
            f"{inp.curve or 'curve'}: N = {', '.join(map(str, unfed))} not projected: no "
            f"smaller N of this {inp.device} sweep measured the all-reduce its ring is fitted to"
            + (" (the sweep measured it)" if set(unfed) <= measured else "")
        )
    if skipped:
        notes.append(
            f"{inp.curve or 'curve'}: N = {', '.join(map(str, skipped))} not projected: this is "
            f"a {inp.device} sweep, and a GPU fabric ({fabric.name}) would be a what-if "
            "(--what-if shows it, labelled)"
        )
    # Past the cores of the host its feed ran on (ledger cpu_cores), a CPU ring's hops are
    # scaled (model.oversubscription); its compute step cannot be, so the words say so.
    cores_at = {m.gpus: m.cpu_cores for m in inp.measured}
    past = [
        (n, c)
        for n, plan in sorted(plans.items())
        if plan.link == "measured-ring" and (c := cores_at.get(plan.feed)) and n > c
    ]
    if past:
        cores = past[0][1]
        notes.append(
            f"{inp.curve or 'curve'}: N = {', '.join(str(n) for n, _ in past)} "
            f"{'exceeds' if len(past) == 1 else 'exceed'} this host's "
            f"{cores} cores: the measured ring's hops are scaled for it "
            "(model.oversubscription), the compute step is not — a compute step that is "
            f"CPU work would take up to N / {cores} times as long there, the efficiency "
            f"at most {cores} / N"
        )
    return plans, notes


def project(
    inputs: Sequence[CurveInputs],
    gpus: Sequence[int],
    fabric: Fabric,
    gpus_per_node: int,
    *,
    n_draws: int = N_DRAWS,
    seed: int = 0,
    notes: Sequence[str] = (),
    what_if: bool = False,
    keep_draws: bool = False,
    model_error_sigma: float = model_error.SIGMA,
) -> Projection:
    """Predict every curve at ``gpus`` and at each N it measured (validation, no peeking).

    Curves whose predictions share a plan (bucket layout, feed, link) are evaluated together,
    their draws stacked: that keeps a 1,000-point sweep fast. ``model_error_sigma``: the
    model's own error (:mod:`harness.projection.model_error`); 0 leaves it out (validation
    does, to measure it).
    """
    notes = list(notes)
    rng = np.random.default_rng(seed)
    # The model error's factors from a stream of their own: the other inputs' draws stay the
    # same draws with it on or off.
    error_rng = np.random.default_rng([seed, 1])
    groups: dict[tuple, list[tuple[int, list[int]]]] = {}
    infos = [_curve_info(inp) for inp in inputs]
    for ci, inp in enumerate(inputs):
        targets = sorted(set(gpus) | {m.gpus for m in inp.measured})
        plans, why = _feed_plan(inp, targets, fabric, gpus_per_node, what_if)
        notes.extend(why)
        by_plan: dict[_Plan, list[int]] = {}
        for n, plan in plans.items():
            by_plan.setdefault(plan, []).append(n)
        for plan, ns in by_plan.items():
            m = next((x for x in inp.measured if x.gpus == plan.feed), None)
            key = (
                plan,
                ci if (m is not None and plan.link == "measured-ring") else None,
                inp.bucket_bytes,
                inp.ready,
                inp.wire_share,
                inp.collectives_per_bucket,
                inp.grad_accum,
                inp.scaling,
                inp.strong_by,
                inp.hide,
                inp.host,
                inp.fixed,
                inp.loader,
                bool(m and m.exposed_comm_s),
                bool(m and m.ready_share),
                tuple(ns),
            )
            groups.setdefault(key, []).append((ci, ns))
    rows: list[dict[str, Any]] = []
    for key, members in groups.items():
        plan, ns = key[0], list(key[-1])
        rows.extend(_evaluate(inputs, infos, members, plan, ns, fabric, gpus_per_node,
                              n_draws, rng, keep_draws, error_rng,
                              model_error_sigma))  # fmt: skip
    rows.sort(key=lambda r: (r.get("curve") or "", r["gpus"]))
    if not rows:
        raise UserError(
            "nothing to project: "
            + ("; ".join(n for n in notes if "not projected" in n) or "no GPU counts")
        )
    settings = {
        "fabric": fabric.name,
        "fabric_lines": fabric.describe(),
        "gpus_per_node": gpus_per_node,
        "gpus": list(gpus),
        "draws": n_draws,
        "interval": (
            f"{LEVEL:.0%} Monte Carlo interval over every input ({n_draws} draws: measured "
            "spreads, stated ranges"
            + (", and the model's own error)" if model_error_sigma > 0 else ")")
        ),
        "model_error": {
            "sigma": model_error_sigma,
            "source": model_error.SOURCE.format(sigma=model_error_sigma),
        },
        "nccl_source": nccl.NCCL_SOURCE,
        "efficiency": {
            k: {"nominal": v.nominal, "lo": v.lo, "hi": v.hi, "source": v.source}
            for k, v in fabric.efficiency.items()
        },
        "sm_count": {"value": fabric.sm_count()[0], "source": fabric.sm_count()[1]},
        "sm_contention": _range_json(SM_CONTENTION),
        "hbm_gbps": {"value": fabric.hbm_gbps()[0], "source": fabric.hbm_gbps()[1]},
        "hbm_contention": _range_json(HBM_CONTENTION),
        "ddp_copy_efficiency": _range_json(COPY_EFFICIENCY),
        "what_if": what_if,
    }
    return Projection(rows=rows, curves=infos, settings=settings, notes=notes)


# -- one group of curves ---------------------------------------------------------------------


def _evaluate(
    inputs: Sequence[CurveInputs],
    infos: list[dict[str, Any]],
    members: list[tuple[int, list[int]]],
    plan: _Plan,
    ns: list[int],
    fabric: Fabric,
    g: int,
    n_draws: int,
    rng: np.random.Generator,
    keep_draws: bool,
    error_rng: np.random.Generator,
    error_sigma: float,
) -> list[dict[str, Any]]:
    d = n_draws + 1
    first = inputs[members[0][0]]
    c = len(members)
    # Per-member draws of every input, stacked along one axis of C * d.
    draws: dict[str, list[np.ndarray]] = {}

    def add(name: str, value: np.ndarray) -> None:
        draws.setdefault(name, []).append(np.broadcast_to(np.asarray(value, dtype=float), (d,)))

    used_all: list[dict[str, Any]] = []
    for ci, _ in members:
        inp = inputs[ci]
        m = next((x for x in inp.measured if x.gpus == plan.feed), None)
        compute = location_draws(inp.compute_step_s, n_draws, rng)
        add("compute step", compute)
        add("fixed", range_draws(inp.fixed, n_draws, rng))
        used: dict[str, Any] = {"fed_by_gpus": plan.feed, "what_if": plan.what_if}
        # Jitter: the straggler gaps measured at the feed (median-consistent), else stated.
        if m is not None and m.straggler_gaps_s:
            wait = location_draws(m.straggler_gaps_s, n_draws, rng)
            jitter = mdl.jitter_from_wait(wait, compute, m.gpus)
            used["jitter_source"] = (
                f"straggler gaps measured at N = {m.gpus} "
                f"({len(m.straggler_gaps_s)} {'steps' if m.gaps_are_steps else 'runs'}), "
                "divided by the median gap of N normals"
            )
        else:
            jitter = range_draws(inp.jitter, n_draws, rng)
            used["jitter_source"] = inp.jitter.source
        add("jitter", jitter)
        add("loader", range_draws(inp.loader, n_draws, rng) if inp.loader else np.full(d, np.nan))
        used_all.append(used)
    stacked = {k: np.concatenate(v) for k, v in draws.items()}
    compute = stacked["compute step"]
    effs: dict[str, np.ndarray] = {}
    for kind in ("intra", "inter", "nvls"):
        r = fabric.efficiency_for(kind)
        effs[kind] = np.concatenate([range_draws(r, n_draws, rng) for _ in members])
    link: mdl.NcclLink | mdl.MeasuredLink = mdl.NcclLink(fabric, g, effs)
    hide = np.concatenate([range_draws(first.hide, n_draws, rng) for _ in members])
    host = np.concatenate([range_draws(first.host, n_draws, rng) for _ in members])
    ready: np.ndarray = np.asarray(first.ready, dtype=float)
    # Contention: NCCL's CTAs take SMs (and its traffic HBM bandwidth) from the backward beside
    # them — on GPU fabrics only (a measured gloo ring runs on CPUs, whose contention the worker
    # measures in the step). Drawn only there, so a CPU sweep's draws stay as they were.
    sm_count = 0 if plan.link == "measured-ring" else fabric.sm_count()[0]
    hbm_gbps = fabric.hbm_gbps()[0] if sm_count else 0.0

    def drawn(r: Range) -> np.ndarray:
        return np.concatenate([range_draws(r, n_draws, rng) for _ in members])

    contention = drawn(SM_CONTENTION) if sm_count else np.zeros(len(compute))
    hbm_contention = drawn(HBM_CONTENTION) if sm_count else np.zeros(len(compute))
    # DDP's bucket copies through HBM at N > 1 (GPUs): part of the stated host overhead where
    # nothing measured it; a feed's measured host overhead below holds them already.
    copy_eff = drawn(COPY_EFFICIENCY) if sm_count else np.ones(len(compute))
    grad_bytes = float(np.sum(first.bucket_bytes))
    copies = mdl.ddp_copy_s(grad_bytes, hbm_gbps, copy_eff)
    host = host + copies
    feed_ms = [next((x for x in inputs[ci].measured if x.gpus == plan.feed), None)
               for ci, _ in members]  # fmt: skip
    if plan.feed is not None and all(m is not None for m in feed_ms):
        ms: list[Measured] = [m for m in feed_ms if m is not None]
        n_f = plan.feed
        wire = np.asarray(first.bucket_bytes) * first.wire_share / first.collectives_per_bucket
        if plan.link == "measured-ring":
            m0 = ms[0]
            fit = None
            if m0.bucket_times:
                sizes, times = zip(*m0.bucket_times, strict=True)
                fit = mdl.fit_latency_bandwidth(sizes, times, n_f)
            busbw = bandwidth_draws(m0.busbw_gbps, n_draws, rng) if m0.busbw_gbps else None
            how = f"fitted to {len(m0.bucket_times)} bucket all-reduces at N = {n_f}"
            if fit is None and m0.ring_ceilings:
                # Buckets of one size: the latency is what K messages cost beyond one message
                # of the same bytes (the two ceilings of each repeat; the median of their fits).
                fits = [
                    f
                    for f in (
                        mdl.fit_latency_from_whole(k, bucketed, grad, whole, n_f)
                        for whole, bucketed, k, grad in m0.ring_ceilings
                    )
                    if f is not None
                ]
                if fits:
                    fit = (float(np.median([f[0] for f in fits])),
                           float(np.median([f[1] for f in fits])))  # fmt: skip
                    how = (
                        f"fitted to the whole gradient's and its buckets' all-reduce ceilings "
                        f"at N = {n_f} ({len(fits)} run(s))"
                    )
            cores = m0.cpu_cores or 0
            if fit is not None:
                alpha, fitted_bw = fit
                scale = busbw / busbw[0] if busbw is not None and busbw[0] > 0 else 1.0
                link = mdl.MeasuredLink(alpha, fitted_bw * scale, g, cores, n_f)
                used_all[0]["link_source"] = (
                    f"{how}: {1e6 * alpha:.0f} µs per ring step, {fitted_bw:.3g} GB/s bus bandwidth"
                )
            elif busbw is not None:
                link = mdl.MeasuredLink(0.0, busbw, g, cores, n_f)
                used_all[0]["link_source"] = (
                    f"bus bandwidth measured at N = {n_f} ({len(m0.busbw_gbps)} run(s)), "
                    "latency included"
                )
            else:  # stated by --busbw-gbps
                link = mdl.MeasuredLink(0.0, float(fabric.intra_busbw or 0.0), g, cores, n_f)
                used_all[0]["link_source"] = "bus bandwidth stated by --busbw-gbps"
            if cores:
                used_all[0]["link_source"] += (
                    f"; on this host's {cores} cores every hop is CPU work of every rank, so "
                    f"beyond {cores} ranks a hop takes N / {cores} turns (model.oversubscription)"
                )
        elif not all(m.busbw_gbps for m in ms):
            what = (
                "the bus bandwidth stated by --busbw-gbps"
                if fabric.intra_busbw is not None
                else "NCCL's model x the stated efficiency"
            )
            for used in used_all:
                used["link_source"] = (
                    f"fabric {fabric.name} ({what}; no bus bandwidth measured at N = {n_f})"
                )
        else:
            # Calibrate the efficiency of the link NCCL's plan uses at the feed, from the
            # measured bus bandwidth of the gradient's all-reduce there.
            system = fabric.system(g, ranks=n_f)
            grad = np.array([float(np.sum(first.bucket_bytes)) * first.wire_share])
            p = nccl.allreduce_plan(system, n_f, grad)
            kind = p.limited_by[int(p.algo[0])]
            model_bw = float(p.busbw_gbps(grad, n_f)[0])
            measured_bw = np.concatenate([bandwidth_draws(m.busbw_gbps, n_draws, rng) for m in ms])
            effs = dict(effs)
            effs[kind] = measured_bw / model_bw
            link = mdl.NcclLink(fabric, g, effs)
            for used, m in zip(used_all, ms, strict=True):
                used["link_source"] = (
                    f"{kind} efficiency {float(np.median(m.busbw_gbps)) / model_bw:.2f} = "
                    f"bus bandwidth measured at N = {n_f} / NCCL's model "
                    f"({model_bw:.3g} GB/s, {nccl.plan_label(p)})"
                )
        if ms[0].ready_share and len(ms[0].ready_share) == len(first.bucket_bytes):
            ready = np.asarray(ms[0].ready_share, dtype=float)
        if all(m.exposed_comm_s for m in ms):
            exposed = np.concatenate([location_draws(m.exposed_comm_s, n_draws, rng) for m in ms])
            one, _, _ = mdl.allreduce_times(link, n_f, wire, len(compute))
            times = one * first.collectives_per_bucket
            # The SM share NCCL took from backward at the feed: in its measured exposure and
            # its measured backward, so the fits below take it out.
            feed_share = mdl.contention_share(
                link, n_f, wire, one, sm_count, contention, hbm_gbps, hbm_contention
            )
            # The hide window at the feed: its last micro-step's backward (strong scaling
            # shrinks the micro-step with N, or only the number of micro-steps).
            per_sample = compute - stacked["fixed"]
            if first.scaling == "strong" and first.strong_by == "accum":
                micro = per_sample / first.grad_accum
            elif first.scaling == "strong":
                micro = per_sample / n_f / first.grad_accum
            else:
                micro = compute / first.grad_accum
            backward = [m.backward_s for m in ms]
            if all(b is not None for b in backward) and ms[0].ready_share:
                # The worker measured backward itself: the hide window is no longer a guess
                # (less the SM contention inside the measured figure).
                measured_back = np.concatenate([np.full(d, float(b)) for b in backward])
                hide = mdl.window_from_backward(times, measured_back, ready, feed_share) / micro
                hide = np.minimum(hide, 1.0)
                clamped = np.zeros(len(compute), dtype=bool)
                for used in used_all:
                    used["hide_source"] = f"backward measured at N = {n_f} by the worker"
            else:
                hide, clamped = mdl.fit_hide_share(
                    times,
                    micro * first.grad_accum,
                    first.grad_accum,
                    exposed,
                    ready,
                    first.hide.nominal,
                    feed_share,
                )
                for used in used_all:
                    used["hide_source"] = f"fitted to the exposed all-reduce at N = {n_f}"
            window = micro * hide
            beyond = np.maximum(exposed - mdl.exposure(times, window, ready, feed_share)[0], 0.0)
            waits = []
            for inp, m in zip((inputs[ci] for ci, _ in members), ms, strict=True):
                extra = float(np.median(m.data_wait_s)) - inp.base_wait_s if m.data_wait_s else 0.0
                waits.append(np.full(d, max(extra, 0.0)))
            host = beyond + np.concatenate(waits)
            copies = np.zeros_like(copies)  # measured: inside ``beyond``
            for k, used in enumerate(used_all):
                used["exposed_comm_s"] = float(exposed[k * d])
                used["clamped"] = bool(clamped[k * d])
                used["host_source"] = (
                    f"measured at N = {n_f}: exposure no all-reduce explains "
                    f"({1e3 * float(beyond[k * d]):.2f} ms) + data wait beyond N = 1 "
                    f"({1e3 * float(waits[k][0]):.2f} ms), carried unchanged"
                )
    for used in used_all:
        used.setdefault("hide_source", first.hide.source)
        used.setdefault(
            "host_source",
            first.host.source
            + (
                f"; plus DDP's bucket copies, 4 x {grad_bytes / 1e6:.4g}"
                f" MB through {hbm_gbps:g} GB/s of HBM x {COPY_EFFICIENCY.text()} "
                "(fabrics.COPY_EFFICIENCY)"
                if sm_count
                else ""
            ),
        )
        used.setdefault("link_source", f"fabric {fabric.name} (NCCL's model x stated efficiency)")
    model = mdl.StepModel(
        compute_s=compute,
        bucket_bytes=first.bucket_bytes,
        ready=ready,
        hide_share=hide,
        jitter=stacked["jitter"],
        link=link,
        wire_share=first.wire_share,
        collectives_per_bucket=first.collectives_per_bucket,
        grad_accum=first.grad_accum,
        host_s=host,
        fixed_s=stacked["fixed"],
        scaling=first.scaling,
        strong_by=first.strong_by,
        samples_per_step=first.samples_per_step,
        loader_samples_per_s=stacked["loader"] if first.loader is not None else None,
        sm_count=sm_count,
        sm_contention=contention,
        hbm_gbps=hbm_gbps,
        hbm_contention=hbm_contention,
    )
    base = np.concatenate([np.full(d, inputs[ci].base_wait_s) for ci, _ in members])
    if error_sigma > 0:
        error = np.concatenate(
            [model_error.factors(error_sigma, n_draws, error_rng) for _ in members]
        )
    else:
        error = np.ones(len(compute))
    pred = mdl.predict_steps(replace(model, compute_s=compute + base, fixed_s=stacked["fixed"],
                                     model_error=error), ns)  # fmt: skip
    # Which inputs moved the efficiency: every drawn input, by its rank correlation.
    named = {
        "compute step": compute,
        "hide window": hide,
        "jitter": stacked["jitter"],
        "host overhead": np.broadcast_to(np.asarray(host, dtype=float), compute.shape),
    }
    if sm_count:
        named["SM contention"] = contention
        named["HBM contention"] = hbm_contention
    link_inputs: dict[str, tuple[str, np.ndarray]] = {}
    if isinstance(link, mdl.NcclLink):
        link_inputs = {
            "intra": ("intra-node efficiency", link.efficiency["intra"]),
            "inter": ("network efficiency", link.efficiency["inter"]),
            "nvls": ("NVLS efficiency", link.efficiency["nvls"]),
        }
    else:
        link_inputs = {"measured": (
            "measured bus bandwidth",
            np.asarray(np.broadcast_to(link.busbw_gbps, compute.shape), dtype=float))}  # fmt: skip
    if first.loader is not None:
        named["loader ceiling"] = stacked["loader"]
    if error_sigma > 0:
        named["model error"] = error
    # Intervals of every (curve, N) of the group at once: (C, G) lows and highs.
    c_steps = pred.step_s.reshape(c, d, len(ns))
    c_effs = pred.efficiency.reshape(c, d, len(ns))
    tail = (1 - LEVEL) / 2 * 100
    step_q = np.percentile(c_steps[:, 1:, :], [tail, 100 - tail], axis=1) if d > 2 else None
    eff_q = np.percentile(c_effs[:, 1:, :], [tail, 100 - tail], axis=1) if d > 2 else None
    rows = []
    all_links = {label: arr for label, arr in link_inputs.values()}
    why_all = _group_drivers({**named, **all_links}, c_effs, c, d, [
        set(named) | {link_inputs[x][0] for x in pred.links_used[j] if x in link_inputs}
        for j in range(len(ns))])  # fmt: skip
    for k, (ci, _) in enumerate(members):
        inp = inputs[ci]
        sl = slice(k * d, (k + 1) * d)
        used = used_all[k]
        used["hide_share"] = float(hide[sl][0])
        used["host_ms"] = 1e3 * float(np.asarray(host)[sl][0])
        used["jitter"] = float(stacked["jitter"][sl][0])
        used["sm_count"] = sm_count
        used["sm_contention"] = float(contention[sl][0])
        used["hbm_gbps"] = hbm_gbps
        used["hbm_contention"] = float(hbm_contention[sl][0])
        used["ddp_copy_ms"] = 1e3 * float(copies[sl][0])
        used["sm_contention_source"] = (
            f"{fabric.sm_count()[1]}; {SM_CONTENTION.source}"
            if sm_count
            else "none: a measured ring on CPUs (no SMs; the worker measures CPU contention)"
        )
        infos[ci]["fits"].append(used)
        measured = {m.gpus: m for m in inp.measured}
        why = why_all[k]
        for j, n in enumerate(ns):
            bands = (
                None if step_q is None else _band(step_q[:, k, j], c_steps[k, 0, j]),
                None if eff_q is None else _band(eff_q[:, k, j], c_effs[k, 0, j]),
            )
            row = _row(inp, n, g, pred, sl, j, measured.get(n), plan, why[j], bands)
            if keep_draws:  # for validation: the step's draws (never rendered)
                row["_step_draws"] = pred.step_s[sl, j].copy()
                row["_compute_draws"] = pred.compute_s[sl, j].copy()
            rows.append(row)
    return rows


def _band(q: np.ndarray, point: float) -> list[float] | None:
    """A percentile interval, or None where the draws did not vary (nothing uncertain)."""
    lo, hi = float(q[0]), float(q[1])
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= 1e-9 * max(abs(point), 1e-300):
        return None
    return [lo, hi]


def _centred_ranks(v: np.ndarray, axis: int = -1) -> np.ndarray:
    """Ranks along ``axis`` scaled to mean 0 and norm 1 (their dot product is Spearman's
    correlation); all zeros where the values do not vary."""
    v = np.asarray(v, dtype=float)
    order = np.argsort(v, axis=axis)
    shape = [1] * v.ndim
    shape[axis] = v.shape[axis]
    r = np.empty(v.shape)
    np.put_along_axis(r, order, np.arange(v.shape[axis], dtype=float).reshape(shape), axis=axis)
    r -= r.mean(axis=axis, keepdims=True)
    norm = np.sqrt((r * r).sum(axis=axis, keepdims=True))
    flat = np.ptp(v, axis=axis, keepdims=True) <= 0
    return np.where(flat | (norm == 0), 0.0, r / np.where(norm == 0, 1.0, norm))


def _group_drivers(
    named: dict[str, np.ndarray],
    effs: np.ndarray,
    c: int,
    d: int,
    allowed: list[set[str]],
    top: int = 3,
) -> list[list[list]]:
    """For every curve of a group and GPU count, the inputs that dominate the efficiency
    interval: each drawn input's squared rank correlation with the efficiency over the draws,
    as shares of their sum (largest first, 5% or more). ``effs`` is (C, draws, G); only
    ``allowed[j]`` inputs count at count j."""
    g = effs.shape[2]
    if d < 4 or not named:
        return [[[] for _ in range(g)] for _ in range(c)]
    y = effs[:, 1:, :]  # (C, D, G)
    ry = _centred_ranks(y, axis=1)
    names, stacks = [], []
    for name, arr in named.items():
        x = np.broadcast_to(np.asarray(arr, dtype=float), (c * d,)).reshape(c, d)[:, 1:]
        if not np.all(np.isfinite(x)):
            continue
        names.append(name)
        stacks.append(_centred_ranks(x, axis=1))  # (C, D)
    if not names:
        return [[[] for _ in range(g)] for _ in range(c)]
    r2 = np.einsum("icd,cdg->icg", np.stack(stacks), ry) ** 2  # (I, C, G)
    width = np.ptp(y, axis=1)  # (C, G)
    out = []
    for k in range(c):
        per = []
        for j in range(g):
            if width[k, j] <= 1e-4 * max(abs(float(effs[k, 0, j])), 1e-12):
                per.append([])  # an interval this narrow has nothing to attribute
                continue
            scores = {n: float(r2[i, k, j]) for i, n in enumerate(names) if n in allowed[j]}
            total = sum(scores.values())
            best = sorted(scores.items(), key=lambda kv: -kv[1])[:top] if total > 0 else []
            per.append([[n, round(v / total, 3)] for n, v in best if v / total >= 0.05])
        out.append(per)
    return out


def drivers(inputs: dict[str, np.ndarray], output: np.ndarray, top: int = 3) -> list[list]:
    """The inputs that dominate one interval (draw 0 is the point estimate, then the draws)."""
    y = np.asarray(output, dtype=float)
    return _group_drivers(inputs, y[None, :, None], 1, y.size, [set(inputs)], top)[0][0]


def _row(
    inp: CurveInputs,
    n: int,
    g: int,
    pred: mdl.StepPrediction,
    sl: slice,
    j: int,
    measured: Measured | None,
    plan: _Plan,
    why: list[list],
    bands: tuple[list[float] | None, list[float] | None],
) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if inp.curve_id is not None:
        row["curve_id"] = inp.curve_id
        row["curve"] = ("what-if: " if plan.what_if else "") + (inp.curve or "")
        row.update(inp.config)
    nodes = 1 if n <= g else n // g
    # The point estimate is draw 0: every input at its nominal value and the model's own error
    # at its mean (model_error.factors). Its parts carry that factor too, so they add up to it
    # (unless the loader's floor sets the step: loader_bound).
    factor = (
        float(pred.overhead_factor[sl][0]) if pred.overhead_factor is not None and n > 1 else 1.0
    )
    step = float(pred.step_s[sl, j][0])
    eff = float(pred.efficiency[sl, j][0])

    def part_ms(values: np.ndarray | None) -> float:
        return 0.0 if values is None else 1e3 * float(values[sl, j][0]) * factor

    step_ci, eff_ci = bands
    per_step = inp.samples_per_step
    samples = samples_ci = None
    if per_step:
        global_samples = per_step * (n if inp.scaling == "weak" else 1)
        samples = global_samples / step
        if step_ci is not None:  # samples/s falls as the step grows: flip the ends
            samples_ci = [global_samples / step_ci[1], global_samples / step_ci[0]]
    algorithm = pred.algorithm[j]
    row.update(
        {
            "gpus": int(n),
            "nodes": int(nodes),
            "scaling_mode": inp.scaling,
            "step_time_ms": step * 1e3,
            "step_time_ms_ci": None if step_ci is None else [v * 1e3 for v in step_ci],
            "samples_per_s": samples,
            "samples_per_s_ci": samples_ci,
            "speedup": n * eff,
            "speedup_ci": None if eff_ci is None else [v * n for v in eff_ci],
            "efficiency": eff,
            "efficiency_ci": eff_ci,
            # The all-reduce's own time (not a part of the step: exposure is), without the
            # model error's factor.
            "allreduce_ms": 1e3 * float(pred.allreduce_s[sl, j][0]),
            "exposed_comm_ms": part_ms(pred.exposed_comm_s),
            "straggler_ms": part_ms(pred.straggler_s),
            "host_ms": part_ms(pred.host_s),
            "sm_contention_ms": part_ms(pred.contention_s),
            "nccl_ctas": int(pred.ctas[j]) if pred.ctas else 0,
            "loader_bound": bool(pred.loader_bound[sl, j][0]),
            "algorithm": algorithm or None,
            "inter_node_algorithm": (
                None if nodes == 1 or not algorithm else algorithm.split("/")[0]
            ),
            "fed_by_gpus": plan.feed,
            "what_if": plan.what_if,
            "interval_drivers": why,
            "measured_efficiency": None,
            "measured_efficiency_ci": None,
            "error_pp": None,
            "verdict": None,
        }
    )
    if measured is not None and measured.efficiency is not None:
        m = measured.efficiency
        row["measured_efficiency"] = m
        if measured.efficiency_lo is not None and measured.efficiency_hi is not None:
            row["measured_efficiency_ci"] = [measured.efficiency_lo, measured.efficiency_hi]
        row["error_pp"] = (eff - m) * 100.0
        row["verdict"] = verdict(eff, eff_ci, m, row["measured_efficiency_ci"])
    return row


def verdict(
    predicted: float,
    ci: Sequence[float] | None,
    measured: float,
    measured_ci: Sequence[float] | None = None,
) -> str:
    """Words for a prediction against its own measurement (they never call a miss a hit): it
    holds when either interval holds the other's point (or, where the prediction has no
    interval, when they agree to 0.1 pp)."""
    err = (predicted - measured) * 100.0
    if ci is not None and ci[0] <= measured <= ci[1]:
        return f"within the prediction's 95% interval (error {err:+.1f} pp)"
    if measured_ci is not None and measured_ci[0] <= predicted <= measured_ci[1]:
        return f"within the measurement's own interval (error {err:+.1f} pp)"
    if ci is None and abs(err) < 0.1:
        # No spread in the prediction's inputs: agreement to the printed resolution is a hit
        # (a degenerate measured interval [x, x] would otherwise call a 1e-16 difference a miss).
        return f"within 0.1 pp of the measurement (no interval: no spread measured; {err:+.1f})"
    where = "no interval" if ci is None else "outside the prediction's 95% interval"
    return f"misses its own measurement by {err:+.1f} pp ({where})"


def _curve_info(inp: CurveInputs) -> dict[str, Any]:
    """The inputs of one curve as the reader should see them."""
    compute = np.asarray(inp.compute_step_s, dtype=float)
    total = float(sum(inp.bucket_bytes))
    return {
        "curve_id": inp.curve_id,
        "curve": inp.curve,
        "scaling_mode": inp.scaling,
        "device": inp.device,
        "gpu_name": inp.gpu_name,
        "compute_step_time_ms": float(np.median(compute) * 1e3),
        "compute_samples": int(compute.size),
        "grad_bytes": total,
        "bucket_bytes": [float(b) for b in inp.bucket_bytes],
        "ready_share": [float(r) for r in inp.ready],
        "last_bucket_share": float(inp.bucket_bytes[-1] / total) if total else None,
        "comm_hook": inp.comm_hook,
        "wire_share": inp.wire_share,
        "grad_accum": inp.grad_accum,
        "hide": _range_json(inp.hide),
        "jitter": _range_json(inp.jitter),
        "host_s": _range_json(inp.host),
        "fixed_s": _range_json(inp.fixed),
        "loader_samples_per_s": _range_json(inp.loader) if inp.loader else None,
        "samples_per_step_per_gpu": inp.samples_per_step,
        "measured_gpus": [m.gpus for m in inp.measured],
        "sources": dict(inp.sources),
        "fits": [],
    }


def _range_json(r: Range) -> dict[str, Any]:
    return {"nominal": r.nominal, "lo": r.lo, "hi": r.hi, "source": r.source}


__all__ = ["LEVEL", "N_DRAWS", "Projection", "drivers", "location_draws", "project", "verdict"]
