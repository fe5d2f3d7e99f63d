"""The projection as a reader sees it: text, Markdown or JSON, every input with its source.

Every rendering starts with :data:`HEADER` (so ``-o`` can tell a file this command wrote from
one it must not replace), lists the fabric and each curve's inputs with where they came from,
the table, what dominates each interval, and — wherever the sweep measured an N — whether the
prediction held its own measurement, in words that never call a miss a hit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness import fmt
from harness.outputs import OutputKind
from harness.projection import fabrics
from harness.projection.model import MIB
from harness.projection.project import Projection

#: First line of every rendering (and the first key of the JSON).
HEADER = "distrinews-bench projection"

TABLE_COLUMNS = (
    "GPUs",
    "nodes",
    "step ms [95% CI]",
    "samples/s",
    "efficiency [95% CI]",
    "exposed comm ms",
    "SM+HBM contention ms",
    "NCCL",
    "measured",
    "error pp",
)


def table_rows(rows: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    out = []
    for r in rows:
        out.append(
            (
                f"{r['gpus']:,}" + (" (what-if)" if r.get("what_if") else ""),
                f"{r['nodes']:,}",
                fmt.ms_ci(r["step_time_ms"], r["step_time_ms_ci"]),
                "-" if r["samples_per_s"] is None else f"{r['samples_per_s']:,.0f}",
                fmt.pct_ci(r["efficiency"], r["efficiency_ci"]),
                fmt.ms_ci(r["exposed_comm_ms"]),
                fmt.ms_ci(r.get("sm_contention_ms") or 0.0),
                r.get("algorithm") or "",
                fmt.pct_ci(r["measured_efficiency"], r.get("measured_efficiency_ci"))
                if r["measured_efficiency"] is not None
                else "",
                "" if r["error_pp"] is None else f"{r['error_pp']:+.1f}",
            )
        )
    return out


def _range(r: dict[str, Any] | None, scale: float = 1.0, unit: str = "", digits: int = 3) -> str:
    if not r:
        return "-"
    nominal, lo, hi = (r[k] * scale for k in ("nominal", "lo", "hi"))
    text = f"{nominal:.{digits}g}{unit}"
    if lo != hi:
        text += f" [{lo:.{digits}g}-{hi:.{digits}g}{unit}]"
    return text


def input_lines(result: Projection, curve: dict[str, Any]) -> list[str]:
    """The model's inputs for one curve, one readable line each, with their sources."""
    src = curve["sources"]
    lines = [
        f"compute-only step {curve['compute_step_time_ms']:.2f} ms "
        f"({src.get('compute_step', '')}); {curve['scaling_mode']} scaling",
        f"gradient {curve['grad_bytes'] / MIB:,.1f} MiB in {len(curve['bucket_bytes'])} "
        f"bucket(s), last bucket {100 * (curve['last_bucket_share'] or 0):.0f}% of the bytes "
        f"({src.get('buckets', '')})",
        f"bucket readiness: {src.get('ready', '')}",
        f"communication hook {curve['comm_hook']} (bytes on the wire x{curve['wire_share']:.3g}),"
        f" gradient accumulation {curve['grad_accum']}",
    ]
    if curve["scaling_mode"] == "strong":
        lines.append(f"per-step cost that does not shrink with N: {src.get('fixed', '')}")
    if curve.get("loader_samples_per_s"):
        lines.append(
            f"input pipeline ceiling {_range(curve['loader_samples_per_s'])} samples/s per node "
            f"({curve['loader_samples_per_s']['source']})"
        )
    for fit in curve["fits"]:
        who = "the fabric" if fit["fed_by_gpus"] is None else f"N = {fit['fed_by_gpus']}"
        lines.append(
            f"predictions fed by {who}{' (what-if)' if fit.get('what_if') else ''}: link "
            f"{fit['link_source']}; hide window {100 * fit['hide_share']:.0f}% of the compute "
            f"step ({fit['hide_source']}); step jitter {100 * fit['jitter']:.2f}% "
            f"({fit['jitter_source']}); host overhead {fit['host_ms']:.2f} ms per step at N > 1 "
            f"({fit['host_source']}); SM contention "
            + (
                f"x{fit['sm_contention']:.2f} of NCCL's CTAs / {fit['sm_count']} SMs "
                f"({fit['sm_contention_source']}); HBM contention "
                f"x{fit.get('hbm_contention', 0.0):.2f} of bus bandwidth / "
                f"{fit.get('hbm_gbps', 0.0):g} GB/s of HBM ({fabrics.HBM_CONTENTION.source})"
                if fit.get("sm_count")
                else f"0 ({fit.get('sm_contention_source', '')})"
            )
            + ("; measurement outside the model's range, clamped" if fit.get("clamped") else "")
        )
    return lines


def fabric_lines(result: Projection) -> list[str]:
    s = result.settings
    lines = [f"fabric {s['fabric']}: {s['fabric_lines'][0]}", *s["fabric_lines"][1:]]
    eff = s["efficiency"]
    lines.append(
        "stated efficiencies (achieved / NCCL-modelled bus bandwidth): "
        + ", ".join(f"{k} {_range(v, digits=2)}" for k, v in eff.items())
    )
    lines.append(f"all-reduce cost: NCCL's own model ({s['nccl_source']}, src/graph/tuning.cc)")
    lines.append(f"interval: {s['interval']}")
    err = s.get("model_error") or {}
    if err.get("sigma"):
        lines.append(
            f"{err['source']}: a factor {math.exp(-1.96 * err['sigma']):.2f}-"
            f"{math.exp(1.96 * err['sigma']):.2f} on the overhead holds 95%; the point estimate "
            f"takes its mean, {math.exp(err['sigma'] ** 2 / 2):.2f}, with every other input "
            "nominal"
        )
    return lines


def verdict_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if r.get("verdict"):
            out.append(
                f"N = {r['gpus']}: predicted {fmt.pct_ci(r['efficiency'], r['efficiency_ci'])}, "
                f"measured {fmt.pct_ci(r['measured_efficiency'])} — {r['verdict']}"
            )
    return out


def driver_line(rows: Sequence[dict[str, Any]]) -> str | None:
    """What dominates the interval at the largest GPU count of a curve."""
    if not rows:
        return None
    last = max(rows, key=lambda r: r["gpus"])
    if not last.get("interval_drivers"):
        return None
    parts = ", ".join(f"{name} {100 * share:.0f}%" for name, share in last["interval_drivers"])
    return f"the interval at N = {last['gpus']:,} is dominated by: {parts}"


def to_json(result: Projection) -> str:
    body = {
        "kind": HEADER,
        "inputs": {**result.settings, "curves": result.curves},
        "predictions": result.rows,
        "notes": result.notes,
    }
    return json.dumps(_clean(body), indent=2, allow_nan=False) + "\n"


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def to_text(result: Projection, *, markdown: bool = False) -> str:
    out: list[str] = [f"# {HEADER}", ""]
    for line in fabric_lines(result):
        out.append(f"- {line}" if markdown else line)
    out.append("")
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for r in result.rows:
        groups.setdefault(r.get("curve_id"), []).append(r)
    info = {c["curve_id"]: c for c in result.curves}
    for key, rows in groups.items():
        curve = info[key]
        title = curve["curve"] or "pure inputs"
        out.append(f"## {title}" if markdown else f"== {title} ==")
        out.append("")
        for line in input_lines(result, curve):
            out.append(f"- {line}" if markdown else f"  {line}")
        out.append("")
        body = table_rows(rows)
        if markdown:
            out.append("| " + " | ".join(TABLE_COLUMNS) + " |")
            out.append("|" + "|".join("---" for _ in TABLE_COLUMNS) + "|")
            out.extend("| " + " | ".join(r) + " |" for r in body)
        else:
            widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(TABLE_COLUMNS)]
            out.append("  ".join(c.rjust(w) for c, w in zip(TABLE_COLUMNS, widths, strict=True)))
            out.extend("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in body)
        out.append("")
        extra = verdict_lines(rows)
        drive = driver_line(rows)
        if drive:
            extra.append(drive)
        for line in extra:
            out.append(f"- {line}" if markdown else f"  {line}")
        if extra:
            out.append("")
    out.append(
        "efficiency = N = 1 step / predicted step (weak scaling; strong: N = 1 step / "
        "(N x step)); 'measured' and 'error pp' where the sweep ran that N, predicted from "
        "fewer GPUs only. 'what-if' rows project onto a machine the sweep did not run on."
    )
    for note in result.notes:
        out.append(f"note: {note}")
    return "\n".join(out) + "\n"


def render(result: Projection, fmt_name: str) -> str:
    if fmt_name == "json":
        return to_json(result)
    return to_text(result, markdown=fmt_name == "markdown")


def written_by_us(head: bytes) -> bool:
    """Whether a file's first bytes are a projection this command wrote (``-o`` may replace
    it); anything else is refused (harness.outputs.check_output)."""
    return HEADER.encode() in head[:200]


#: What ``project -o`` writes: an earlier projection may be replaced, nothing else.
PROJECTION_KIND = OutputKind(name="projection", recognizes=lambda _path, head: written_by_us(head))
