"""The report's numbers for machines: what was measured, headline, scaling curves and the
decomposition, as JSON.

:func:`build_json` computes from the ledger frame the same numbers the page shows (no
formatting: numbers stay numbers, NaN becomes null); :func:`dumps` spells the object.
``distrinews-bench report --format json`` prints it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from harness import analysis, attribution, fmt
from harness.analysis import THROUGHPUT
from harness.definitions import DEFINITIONS
from harness.report.measured import how_well, measured_facts, why_unknown
from harness.report.model import SUMMARY_METRICS
from harness.report.sections import why_sentence

#: Columns of each scaling-curve row in the JSON report.
JSON_CURVE_COLUMNS = (
    "curve_id", "curve", "scaling_mode", "world_size", "base_world_size", "config_key",
    THROUGHPUT, f"{THROUGHPUT}_lo", f"{THROUGHPUT}_hi", f"{THROUGHPUT}_level", "speedup",
    "speedup_lo", "speedup_hi", "speedup_level", "efficiency", "efficiency_lo", "efficiency_hi",
    "efficiency_level",
)  # fmt: skip


#: The headline's figures from the best configuration's point on its scaling curve.
HEADLINE_CURVE_COLUMNS = (
    "base_world_size", "speedup", "speedup_lo", "speedup_hi", "speedup_level",
    "efficiency", "efficiency_lo", "efficiency_hi", "efficiency_level",
)  # fmt: skip


def build_json(
    frame: pd.DataFrame, *, title: str = "sweep", env: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The report's numbers for machines: what was measured, headline, scaling curves and the
    decomposition.

    Numbers stay numbers (NaN -> null); ``measured`` is :func:`measured_facts` (devices, model,
    data, sequence, precision, backend, hosts, machine class, load), ``answer`` the first
    screen's sentences; ``decomposition`` rows carry the configuration columns
    (analysis.CONFIG_COLUMNS, ``fault`` included), ``world_size``, ``efficiency`` and
    ``loss_pp`` = {compute, contention, exposed_comm, data_wait, straggler, unexplained}, and
    ``checks`` (the sentences of the checks that failed, harness.attribution.checks).
    """
    summary = analysis.per_configuration(frame, SUMMARY_METRICS)
    curves = fmt.with_curve_names(analysis.scaling(frame, summary=summary), summary)
    decomp = attribution.decompose(summary, curves, frame)
    unit = fmt.device_unit(frame)
    by_key = summary.set_index("config_key") if len(summary) else summary
    headline: dict[str, Any] = {
        "points": len(summary),
        "runs": len(frame),
        "runs_by_status": frame["status"].value_counts().to_dict() if len(frame) else {},
    }
    ok = summary[summary[THROUGHPUT].notna()] if len(summary) else summary
    if len(ok):
        n_max = ok["world_size"].max()
        top = ok[ok["world_size"] == n_max].sort_values(THROUGHPUT, ascending=False).iloc[0]
        eff = curves[curves["config_key"] == top["config_key"]]
        headline.update(
            {
                "largest_world_size": n_max,
                "best_config_key": top["config_key"],
                THROUGHPUT: top[THROUGHPUT],
                f"{THROUGHPUT}_lo": top[f"{THROUGHPUT}_lo"],
                f"{THROUGHPUT}_hi": top[f"{THROUGHPUT}_hi"],
                f"{THROUGHPUT}_level": top[f"{THROUGHPUT}_level"],
                **{key: eff[key].iloc[0] if len(eff) else None for key in HEADLINE_CURVE_COLUMNS},
                "mfu": top["mfu"],
            }
        )
    headline["why"] = why_sentence(decomp, summary) if len(decomp) else None
    answer = how_well(curves, summary, unit) if len(ok) else []
    if len(ok):
        answer.append(
            f"Why: {headline['why']}" if headline["why"] else why_unknown(summary, curves, unit)
        )
    rows = []
    for r in decomp.to_dict("records"):
        config = by_key.loc[r["config_key"]]
        rows.append(
            {
                **{c: analysis.plain_value(config[c]) for c in analysis.CONFIG_COLUMNS},
                "config_key": r["config_key"],
                "curve_id": r["curve_id"],
                "scaling_mode": r["scaling_mode"],
                "world_size": analysis.plain_value(r["world_size"]),
                "base_world_size": analysis.plain_value(r["base_world_size"]),
                "efficiency": r["efficiency"],
                "loss_pp": attribution.loss_pp_dict(r),
                "total_loss_pp": r["loss_pp"],
                "checks": list(r.get("checks") or ()),
            }
        )
    body = {
        "title": title,
        "measured": measured_facts(frame, env) if len(frame) else None,  # no runs: nothing
        "answer": answer,
        "headline": headline,
        "curves": curves[list(JSON_CURVE_COLUMNS)].to_dict("records"),
        "decomposition": rows,
        "definitions": {t: d for t, d in (*DEFINITIONS, *attribution.DEFINITIONS)},
    }
    return _json_clean(body)


def dumps(body: dict[str, Any]) -> str:
    """One JSON object, pretty-printed, newline-terminated (NaN refused: _json_clean nulls it)."""
    return json.dumps(body, indent=2, allow_nan=False) + "\n"


def _json_clean(value: Any) -> Any:
    """Plain JSON: numpy scalars to Python, NaN/inf to null, whole floats kept as floats."""
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return None if pd.isna(value) else str(value)
