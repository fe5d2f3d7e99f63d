"""What a sweep measured and how well it scaled, for the top of every report (pure).

A reader must know what the numbers are *of* before reading them: a gloo run of the tiny
model on synthetic tokens says nothing about DistilBERT-base on GPUs. :func:`measured_facts`
collects that from the ledger frame and env.json -- devices and how many, model shape and
parameters, data (synthetic said so), sequence length and policy, precision, backend, hosts,
the machine class (CPU model, cores, GPU model) and the load on it during the windows -- as
plain values (the JSON report's ``measured`` object); :func:`measured_table` spells them for
the page and the terminal.

:func:`how_well` is the first screen's answer in one sentence per scaling curve shown: the
speedup and the scaling efficiency at the largest device count, each with its interval. The
"why" sentence beside it comes from :func:`harness.attribution.biggest_cause` (through
:func:`harness.report.sections.why_sentence`); :func:`why_unknown` says why there is none.

Env.json fields are read defensively: sweeps recorded before a field existed lack it, and the
page says "not recorded" rather than guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness import fmt
from harness.analysis import THROUGHPUT
from harness.report.model import Table

#: The ledger column of the 1-minute load average at the end of each run's measured window.
LOAD_COLUMN = "load_avg_1m"

#: Bytes per gradient element: gradients are fp32 (mixed precision keeps fp32 master weights),
#: so the all-reduced gradient's bytes / 4 is the parameter count.
GRAD_BYTES_PER_PARAM = 4


def _values(frame: pd.DataFrame, column: str) -> list[Any]:
    """The distinct values of ``column`` over ok runs (all runs when none is ok), sorted."""
    if column not in frame or not len(frame):
        return []
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    part = ok if len(ok) else frame
    values = [v for v in pd.unique(part[column]) if not _missing(v)]
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not np.isfinite(value))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _one_or_list(values: Sequence[Any]) -> Any:
    """One value as itself, several as a list (the sweep varies it), none as None."""
    values = [_plain(v) for v in values]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def describe_data(source: str) -> tuple[str, bool]:
    """A data source in words, and whether it is synthetic (random tokens, not text)."""
    if source == "synthetic" or source.startswith("synthetic:"):
        size = source.partition(":")[2]
        count = f"{int(size):,} " if size.isdigit() else ""
        return (
            f"SYNTHETIC: {count}random token sequences with AG News' length distribution "
            "(not real text: throughput only, no accuracy)",
            True,
        )
    if source == "hub":
        return "AG News from the Hugging Face hub (real text)", False
    return f"{source} (real text)", False


def describe_sequence(max_length: Any, policy: Any) -> str:
    """``64 tokens, fixed (every sequence padded to 64)`` or the dynamic policy in words."""
    n = fmt.num(max_length)
    if policy == "fixed":
        return f"{n} tokens, fixed: every sequence padded or cut to {n}"
    if policy == "dynamic":
        return f"up to {n} tokens, dynamic: each batch padded to its longest, length-grouped"
    return f"{n} tokens, {policy}"


def measured_facts(frame: pd.DataFrame, env: dict[str, Any] | None) -> dict[str, Any]:
    """What the sweep measured, as plain values (lists where the sweep varies a setting)."""
    env = env or {}
    unit = fmt.device_unit(frame)
    devices = _values(frame, "device")
    facts: dict[str, Any] = {
        "device": _one_or_list(devices),
        "device_unit": unit,
        "device_counts": [int(v) for v in _values(frame, "world_size")],
        "backend": _one_or_list(_values(frame, "backend")),
        "model": _one_or_list(_values(frame, "model")),
        "init": _one_or_list(_values(frame, "init")),
        "parameters": None,
        "data": _one_or_list(_values(frame, "data")),
        "synthetic_data": None,
        "max_length": _one_or_list([int(v) for v in _values(frame, "max_length")]),
        "seq_policy": _one_or_list(_values(frame, "seq_policy")),
        "precision": _one_or_list(_values(frame, "precision")),
        "compile": _one_or_list([bool(v) for v in _values(frame, "compile")]),
        "per_device_batch": _one_or_list([int(v) for v in _values(frame, "per_device_batch")]),
        "scaling_mode": _one_or_list(_values(frame, "scaling_mode")),
        "nodes": [int(v) for v in _values(frame, "nodes")],
        "hostname": env.get("hostname"),
        "warmup_steps": _one_or_list([int(v) for v in _values(frame, "warmup_steps")]),
        "measured_steps": _one_or_list([int(v) for v in _values(frame, "measured_steps")]),
        "runs_per_configuration": _one_or_list(
            sorted({int(n) for n in frame.groupby("config_key").size()})
            if "config_key" in frame and len(frame)
            else []
        ),
        "cpu_model": env.get("cpu_model"),
        "cpu_count_logical": env.get("cpu_count_logical", env.get("cpu_count")),
        "cpu_count_physical": env.get("cpu_count_physical"),
        "mem_total_gib": env.get("mem_total_gib"),
        "gpu_names": sorted(set(env.get("gpu_names") or [])) or None,
        "load_avg_1m": None,
    }
    sources = _values(frame, "data")
    if sources:
        facts["synthetic_data"] = any(describe_data(str(s))[1] for s in sources)
    grads = _values(frame, "grad_bytes")
    if grads:
        facts["parameters"] = int(max(grads)) // GRAD_BYTES_PER_PARAM
    if LOAD_COLUMN in frame and len(frame):
        loads = pd.to_numeric(frame[LOAD_COLUMN], errors="coerce").dropna()
        loads = loads[np.isfinite(loads)]
        if len(loads):
            facts["load_avg_1m"] = {
                "median": float(loads.median()),
                "min": float(loads.min()),
                "max": float(loads.max()),
                "runs": len(loads),
            }
    return facts


def _list(value: Any, spell: Any = fmt.num) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, list):
        return (
            " and ".join(spell(v) for v in value)
            if len(value) <= 2
            else ", ".join(spell(v) for v in value)
        )
    return spell(value)


def _plural(unit: str, n: int) -> str:
    return unit if n == 1 else f"{unit}s"


def measured_table(facts: dict[str, Any]) -> Table:
    """The facts as rows a reader scans: what, then the value in words."""
    unit = facts["device_unit"]
    counts = facts["device_counts"]
    rows: list[tuple[str, str]] = []
    one = counts == [1]
    if unit == "CPU rank":
        kind = "CPU process (rank)" if one else "CPU processes (ranks)"
    else:
        kind = "GPU" if one else "GPUs"
    names = facts.get("gpu_names")
    on = f" ({', '.join(names)})" if names and unit == "GPU" else ""
    rows.append(
        (
            "devices",
            f"{_list(counts)} {kind}{on}" if counts else "none ran",
        )
    )
    rows.append(("backend", _list(facts["backend"], str)))
    nodes = facts["nodes"] or [1]
    host = facts.get("hostname")
    rows.append(
        (
            "hosts",
            f"{_list(nodes)} {_plural('node', max(nodes))}"
            + (f" (sweep started on {host})" if host else ""),
        )
    )
    model = facts["model"]
    params = facts["parameters"]
    model_text = f"{_list(model, str)}{shape_text(model)}, {_list(facts['init'], str)} init"
    if params:
        model_text += f", {params / 1e6:,.1f}M parameters (from the gradient's size)"
    rows.append(("model", model_text))
    data = facts["data"]
    if data is None:
        rows.append(("data", "not recorded"))
    else:
        sources = data if isinstance(data, list) else [data]
        rows.append(("data", "; ".join(describe_data(str(s))[0] for s in sources)))
    lengths = facts["max_length"]
    policies = facts["seq_policy"]
    if isinstance(lengths, list) or isinstance(policies, list):
        rows.append(
            ("sequence", f"max length {_list(lengths)}; padding {_list(policies, str)} (varies)")
        )
    elif lengths is not None:
        rows.append(("sequence", describe_sequence(lengths, policies)))
    compiled = facts["compile"]
    compile_text = {True: "torch.compile", False: "eager (no torch.compile)"}
    rows.append(
        (
            "precision",
            f"{_list(facts['precision'], str)}; "
            + (
                "eager and torch.compile"
                if isinstance(compiled, list)
                else compile_text.get(compiled, "not recorded")
            ),
        )
    )
    batch = facts["per_device_batch"]
    mode = facts["scaling_mode"]
    rows.append(
        (
            "batch",
            f"{_list(batch)} per {unit}"
            + (f", {_list(mode, str)} scaling" if mode is not None else ""),
        )
    )
    rows.append(
        (
            "window",
            f"{_list(facts['warmup_steps'])} warmup + {_list(facts['measured_steps'])} measured "
            f"steps a run, {_list(facts['runs_per_configuration'])} run(s) a configuration "
            "(medians over them)",
        )
    )
    rows.append(("machine", machine_text(facts)))
    rows.append(("load", load_text(facts)))
    return Table(columns=("", ""), rows=tuple(rows))


def shape_text(model: Any) -> str:
    """``: 2 layers, dim 32, 2 heads, FFN 64`` for a named random-init shape; "" otherwise."""
    from distrinews.model import SHAPES  # torch; the report's projection has it loaded anyway

    if not isinstance(model, str) or model not in SHAPES:
        return ""
    s = SHAPES[model]
    what = (
        "DistilBERT-base's shape" if model == "base" else "DistilBERT's architecture, far smaller"
    )
    return (
        f" ({what}: {s['n_layers']} layers, dim {s['dim']}, {s['n_heads']} heads, "
        f"FFN {s['hidden_dim']})"
    )


def machine_text(facts: dict[str, Any]) -> str:
    """``Intel Xeon ... (2 logical cores, 1 physical), 24 GiB; no GPU``: the machine class."""
    parts = []
    cpu = facts.get("cpu_model")
    logical, physical = facts.get("cpu_count_logical"), facts.get("cpu_count_physical")
    cores = []
    if isinstance(logical, (int, float)):
        cores.append(f"{fmt.num(logical)} logical")
    if isinstance(physical, (int, float)):
        cores.append(f"{fmt.num(physical)} physical")
    cpu_text = str(cpu) if cpu else "CPU model not recorded"
    if cores:
        cpu_text += f" ({', '.join(cores)} cores)"
    parts.append(cpu_text)
    mem = facts.get("mem_total_gib")
    if isinstance(mem, (int, float)) and np.isfinite(mem):
        parts.append(f"{mem:,.0f} GiB memory")
    names = facts.get("gpu_names")
    parts.append(", ".join(names) if names else "no GPU")
    return "; ".join(parts)


def load_text(facts: dict[str, Any]) -> str:
    """The 1-minute load average at the end of the windows, against the machine's cores."""
    load = facts.get("load_avg_1m")
    if not load:
        return "not recorded by this sweep (1-minute load average per run)"
    cores = facts.get("cpu_count_logical")
    spread = (
        f"{load['median']:.1f}"
        if load["min"] == load["max"]
        else f"median {load['median']:.1f} (from {load['min']:.1f} to {load['max']:.1f})"
    )
    against = f" on {fmt.num(cores)} cores" if isinstance(cores, (int, float)) else ""
    busy = (
        "; above the core count: other work competed with the ranks"
        if isinstance(cores, (int, float)) and load["max"] > cores
        else ""
    )
    return (
        f"1-minute load average {spread}{against} at the end of the windows of "
        f"{load['runs']} run(s){busy}"
    )


def how_well(curves: pd.DataFrame, summary: pd.DataFrame, unit: str, limit: int = 3) -> list[str]:
    """One sentence per curve (the fastest ``limit``): speedup and efficiency at its largest
    device count against its reference, each with its interval, and the throughput there."""
    if curves.empty:
        return []
    last = curves.sort_values("world_size").groupby("curve_id", sort=False).tail(1)
    last = last[last["world_size"] > last["base_world_size"]]
    last = last.sort_values(THROUGHPUT, ascending=False).head(limit)
    several = curves["curve_id"].nunique() > 1
    out = []
    for r in last.to_dict("records"):
        n, n0 = int(r["world_size"]), int(r["base_world_size"])
        speedup = fmt.ci(r["speedup"], r["speedup_lo"], r["speedup_hi"], digits=2)
        speedup = speedup.replace(" [", "× [", 1) if "[" in speedup else f"{speedup}×"
        efficiency = fmt.pct(r["efficiency"], r["efficiency_lo"], r["efficiency_hi"])
        # The curve's name is "<mode>: <settings>"; the settings say which curve this is.
        settings = str(r["curve"]).partition(": ")[2] if several else ""
        which = f", {settings}" if settings else ""
        out.append(
            f"{n} {_plural(unit, n)} against {n0}{which} ({r['scaling_mode']} scaling): "
            f"speedup {speedup} (ideal {n / n0:g}×), scaling efficiency {efficiency}, "
            f"{fmt.ci(r[THROUGHPUT], r[f'{THROUGHPUT}_lo'], r[f'{THROUGHPUT}_hi'])} samples/s."
        )
    return out


def why_unknown(summary: pd.DataFrame, curves: pd.DataFrame, unit: str) -> str:
    """Why the report cannot say why efficiency is what it is (no decomposition)."""
    if curves.empty:
        return (
            f"Why: cannot be said: only one {unit} count ran ok, so there is no scaling to explain."
        )
    if "compute_step_time_s" not in summary or summary["compute_step_time_s"].isna().all():
        return (
            "Why: cannot be said: no run measured its parts (explain = false, or a sweep "
            "recorded before the explain phase existed)."
        )
    return "Why: cannot be said: the decomposition has no point above a curve's reference."
