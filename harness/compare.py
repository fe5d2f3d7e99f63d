"""The regression gate: compare a current sweep against a baseline, point by point, noise-aware.

``distrinews-bench compare BASELINE CURRENT`` (each a results folder or an exported
.parquet/.csv table) joins points on their configuration key -- never on list position -- and
gives every point and every scaling-efficiency step a verdict:

- **regressed** / **improved**: the change is larger than the threshold (``rtol``, relative,
  default 5%; ``efficiency_tol_pp``, percentage points, for scaling efficiency) AND, when both
  sides have enough repeats, statistically clear: a one-sided Mann-Whitney U test on the repeats
  (exact null distribution, p <= ``alpha``) for throughput, an interval of the change that
  excludes zero for efficiency. Both conditions, so a change inside the run-to-run noise is
  "unchanged" and a statistically clear but tiny change (1%) does not fail CI;

A point's **change** is the Hodges-Lehmann shift of the log throughput (the median of all
current-vs-baseline pairwise log ratios, as a percentage), with its Moses interval: robust to one
wild run, and exact for a change that scales every run alike (harness.analysis.shift_interval).
An efficiency step's interval combines the shifts at N and at its reference N0. Every interval
prints the coverage it has at these repeat counts, never a nominal "95%" it cannot reach.

Machine class and load: the verdict names, in words, a difference between the two sides'
machines (CPU model, cores, memory, GPUs: env.json's ``machine``) or their load during the runs
(the ledger's ``load_avg_1m`` per run, else env.json's sweep-level load averages) -- the change
may then be the machine, not the code. A machine-class difference is named, not refused; only
the fingerprint's fields refuse.
- **unchanged**: neither;
- **inconclusive**: the change is larger than the threshold but there are too few repeats for
  the test to ever reach ``alpha`` (single runs; 2 vs 2; fewer than 3 runs at an efficiency
  step). One run cannot tell a slowdown from a noisy minute, so the gate does not call it a
  regression: it prints the change and says how many repeats a verdict needs;
- **missing** (in the baseline only) / **new** (in the current only).

A point that ran ok in the baseline but failed in every current repeat is a regression (a
failure needs no statistics).

Exit codes (the CLI): 0 no regression, 1 regression, 2 unusable input (missing folder, corrupt
ledger, no common points, environment changed without ``--allow-env-change``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distrinews.errors import UserError
from distrinews.layout import LEDGER_NAME, SWEEP_JSON
from harness import analysis, envinfo, fmt, store
from harness.analysis import THROUGHPUT

VERDICTS = ("regressed", "improved", "unchanged", "inconclusive", "missing", "new")
#: Fingerprint fields whose change makes two sweeps incomparable (harness.envinfo writes them).
ENV_FIELDS = envinfo.FINGERPRINT_FIELDS
#: Ledger columns the gate can compare: rates, where lower means slower.
HIGHER_IS_BETTER = (
    "samples_per_s",
    "samples_per_s_per_device",
    "real_tokens_per_s",
    "padded_tokens_per_s",
    "mfu",
    "hfu",
)
#: Above this many values in total, the Mann-Whitney null uses the normal approximation.
EXACT_LIMIT = analysis.EXACT_LIMIT


@dataclass(frozen=True, kw_only=True)
class GateSettings:
    """How strict the gate is."""

    rtol: float = 0.05
    """Relative throughput change that counts (0.05: a 5% drop can fail, a 4% one cannot)."""
    efficiency_tol_pp: float = 5.0
    """Scaling-efficiency change that counts, in percentage points (90% -> 84% is 6 pp)."""
    alpha: float = 0.05
    """Significance level of the one-sided tests (per point and direction)."""
    metric: str = THROUGHPUT
    """The higher-is-better ledger column compared per point."""
    allow_env_change: bool = False
    """Compare even when the environment fingerprints differ (the differences are reported)."""
    fail_on_missing: bool = False
    """Count baseline points absent from the current results as a regression."""

    def __post_init__(self) -> None:
        if not (isinstance(self.rtol, (int, float)) and 0 <= self.rtol < 1):
            raise UserError(f"--rtol {self.rtol!r} must be a fraction in [0, 1), e.g. 0.05")
        if not (isinstance(self.efficiency_tol_pp, (int, float)) and self.efficiency_tol_pp >= 0):
            raise UserError(f"--efficiency-tol-pp {self.efficiency_tol_pp!r} must be >= 0")
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise UserError(f"--alpha {self.alpha!r} must be in (0, 1), e.g. 0.05")
        if self.metric not in HIGHER_IS_BETTER:
            raise UserError(
                f"--metric {self.metric!r} is not allowed; allowed (higher is better): "
                + ", ".join(HIGHER_IS_BETTER)
            )


@dataclass(frozen=True, kw_only=True)
class Side:
    """One side of a comparison: the ledger frame, its env.json (None for a table), its path."""

    frame: pd.DataFrame
    """Runs as analysis.normalize_frame returns them."""
    env: dict[str, Any] | None
    """env.json of a results folder; None for an exported table."""
    source: str
    """Where it came from, for messages."""
    gate: dict[str, float] = field(default_factory=dict)
    """The [gate] tolerances of the sweep file (sweep.json); empty for a table or none set."""


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """The gate's answer."""

    baseline: str
    """Baseline source."""
    current: str
    """Current source."""
    settings: GateSettings
    """Thresholds used."""
    points: pd.DataFrame
    """One row per point in either side: verdict, medians, change and its interval, p, method."""
    curves: pd.DataFrame
    """One row per (scaling curve, GPU count) in both: efficiency change in pp and interval."""
    verdict: str
    """Overall: regressed, improved, inconclusive (untestable changes only) or unchanged."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Env differences allowed, fallbacks, join mode: what a reader must know."""
    context: tuple[str, ...] = field(default_factory=tuple)
    """Printed next to the verdict: the two sides ran on different machines or under different
    load, so the change may not be the code's (:func:`context_lines`)."""
    machines: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """The machine class of each side (``baseline``, ``current``; None where unrecorded)."""
    loads: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """The load during each side's runs: ``{"load_avg_1m": x, "source": ...}`` or None."""

    @property
    def regressed(self) -> bool:
        return self.verdict == "regressed"


# -- loading ---------------------------------------------------------------------------------


def load_side(path: Path) -> Side:
    """A results folder (ledger.jsonl + env.json) or an exported .parquet/.csv table."""
    path = Path(path)
    if path.is_dir():
        if not store.ledger_path(path).is_file():
            raise UserError(f"{path}: no {LEDGER_NAME} here; not a results folder")
        frame = analysis.load_frame(path)
        return Side(
            frame=frame, env=analysis.load_env(path), source=str(path), gate=_sweep_gate(path)
        )
    if not path.exists():
        raise UserError(f"{path}: no such results folder or table")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            raw = pd.read_parquet(path)
        elif suffix == ".csv":
            raw = pd.read_csv(path)
        else:
            raise UserError(f"{path}: expected a results folder, .parquet or .csv table")
    except UserError:
        raise
    except Exception as exc:  # pyarrow/pandas parse errors have many types; all mean "corrupt"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: cannot read this table ({reason})") from None
    for col in ("run_id", "status"):
        if col not in raw.columns:
            raise UserError(f"{path}: table has no {col!r} column; export it with the harness")
    frame = analysis.normalize_frame(raw, source=str(path))
    return Side(frame=frame, env=None, source=str(path))


def _sweep_gate(path: Path) -> dict[str, float]:
    """The ``gate`` table of ``path/sweep.json`` (valid keys and numbers only; else empty)."""
    doc = store.read_json(path / SWEEP_JSON)
    spec = doc.get("spec") if isinstance(doc, dict) else None
    gate = spec.get("gate") if isinstance(spec, dict) else None
    if not isinstance(gate, dict):
        return {}
    out: dict[str, float] = {}
    # The same bounds as the options, named by the file and field (a hand-edited baseline must
    # not be blamed on an option nobody gave, nor silently fall back to the default).
    for key, (low, high, allowed) in GATE_FIELDS.items():
        if key not in gate:
            continue
        v = gate[key]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not (ok and low <= v < high):
            raise UserError(
                f"{path / SWEEP_JSON}: field spec.gate.{key} = {v!r}: expected {allowed}"
            )
        out[key] = float(v)
    return out


#: The [gate] fields a baseline's sweep.json may set: (lowest, above the highest, in words) --
#: the bounds of the options that override them (--rtol, --efficiency-tol-pp).
GATE_FIELDS = {
    "rtol": (0.0, 1.0, "a fraction in [0, 1), e.g. 0.18"),
    "efficiency_tol_pp": (0.0, math.inf, "percentage points >= 0, e.g. 15"),
}


def settings_for(baseline: Side, **given: Any) -> GateSettings:
    """GateSettings from the options given (None: not given), then the baseline's [gate]
    tolerances, then the defaults: a noisy machine class states its tolerance once, in its
    sweep file, and every comparison against its baseline uses it."""
    chosen = {k: v for k, v in given.items() if v is not None}
    for key, value in baseline.gate.items():
        chosen.setdefault(key, value)
    return GateSettings(**chosen)


# -- environment -----------------------------------------------------------------------------


def env_differences(baseline: Side, current: Side) -> dict[str, tuple[Any, Any]]:
    """Fingerprint fields that differ, as {field: (baseline, current)}; empty when equal."""
    b_fields = (baseline.env or {}).get("fingerprint_fields")
    c_fields = (current.env or {}).get("fingerprint_fields")
    if isinstance(b_fields, dict) and isinstance(c_fields, dict):
        keys = [k for k in ENV_FIELDS if k in b_fields or k in c_fields]
        keys += sorted(k for k in set(b_fields) | set(c_fields) if k not in keys)
        return {
            k: (b_fields.get(k), c_fields.get(k))
            for k in keys
            if b_fields.get(k) != c_fields.get(k)
        }
    b_print = _fingerprints(baseline)
    c_print = _fingerprints(current)
    if b_print and c_print and b_print != c_print:
        return {"env_fingerprint": (", ".join(sorted(b_print)), ", ".join(sorted(c_print)))}
    return {}


def _fingerprints(side: Side) -> set[str]:
    if side.env and side.env.get("fingerprint"):
        return {str(side.env["fingerprint"])}
    return {str(v) for v in side.frame["env_fingerprint"].dropna()}


# -- machine class and load ------------------------------------------------------------------

#: Two sides' loads are named when they differ by at least this much per logical core ...
LOAD_GAP_PER_CORE = 0.5
#: ... and the busier is at least this many times the quieter.
LOAD_RATIO = 1.5
#: The ledger column with each run's 1-minute load average at the end of its measured window.
LOAD_COLUMN = "load_avg_1m"


def machine_of(side: Side) -> dict[str, Any] | None:
    """The side's machine class from env.json (``machine``, harness.envinfo.MACHINE_FIELDS);
    from an older env.json only what it has (logical cores, GPUs); None for a table."""
    env = side.env
    if not isinstance(env, dict):
        return None
    machine = env.get("machine")
    if isinstance(machine, dict):
        return {k: machine.get(k) for k in envinfo.MACHINE_FIELDS}
    return {
        "cpu_cores_logical": env.get("cpu_count"),
        "gpu_names": env.get("gpu_names"),
        "gpu_count": env.get("gpu_count"),
    }


def describe_machine(m: dict[str, Any]) -> str:
    """``an 8-core Intel Xeon (16 logical, 62.8 GiB) with 8 × NVIDIA H100``: what is known."""
    cores = m.get("cpu_cores_physical") or m.get("cpu_cores_logical")
    model = m.get("cpu_model") or "CPU"
    head = f"{cores}-core {model}" if isinstance(cores, int) else str(model)
    extra = []
    logical = m.get("cpu_cores_logical")
    if m.get("cpu_cores_physical") and isinstance(logical, int) and logical != cores:
        extra.append(f"{logical} logical")
    if isinstance(m.get("memory_gib"), (int, float)):
        extra.append(f"{m['memory_gib']:g} GiB")
    text = ("an " if head[0] in "8aeiouAEIOU" or head.startswith("11-") else "a ") + head
    text += f" ({', '.join(extra)})" if extra else ""
    gpus = m.get("gpu_names") or []
    if m.get("gpu_count"):
        text += f" with {m['gpu_count']} × {' / '.join(gpus) or 'GPU'}"
    return text


def load_of(side: Side) -> dict[str, Any] | None:
    """The load during the side's runs: the median of the ledger's per-run ``load_avg_1m``
    where the ledger has it, else the mean of env.json's 1-minute load averages at the sweep's
    start and end; None when neither exists (old results, tables)."""
    if LOAD_COLUMN in side.frame.columns:
        ok = side.frame[side.frame["status"] == "ok"]
        values = pd.to_numeric(ok[LOAD_COLUMN], errors="coerce").to_numpy(float)
        values = values[np.isfinite(values) & (values >= 0)]
        if len(values):
            return {"load_avg_1m": float(np.median(values)), "source": "runs"}
    ends = envinfo.sweep_loads(side.env if isinstance(side.env, dict) else {})
    if ends:
        return {"load_avg_1m": float(np.mean(ends)), "source": "sweep start and end"}
    return None


def context_lines(baseline: Side, current: Side) -> list[str]:
    """What the verdict must be read with, in words: a machine-class difference, a load
    difference (see :data:`LOAD_GAP_PER_CORE`, :data:`LOAD_RATIO`). Never a refusal."""
    lines = []
    b_machine, c_machine = machine_of(baseline), machine_of(current)
    if b_machine and c_machine:
        differ = [
            k
            for k in envinfo.MACHINE_FIELDS
            if b_machine.get(k) is not None
            and c_machine.get(k) is not None
            and b_machine.get(k) != c_machine.get(k)
        ]
        if differ:
            lines.append(
                f"The baseline ran on {describe_machine(b_machine)}, this run on "
                f"{describe_machine(c_machine)}: the change may be the machine, not the code "
                f"({', '.join(differ)} differ)."
            )
    b_load, c_load = load_of(baseline), load_of(current)
    if b_load and c_load:
        b, c = b_load["load_avg_1m"], c_load["load_avg_1m"]
        cores = (c_machine or {}).get("cpu_cores_logical") or 1
        gap = abs(c - b) >= LOAD_GAP_PER_CORE * cores
        ratio = max(b, c) >= LOAD_RATIO * max(min(b, c), 1e-9)
        if gap and ratio:
            busier = (
                "the busier machine now may explain a slowdown"
                if c > b
                else "the busier machine then may explain a speedup"
            )
            lines.append(
                f"Load average {c:.1f} during this sweep vs {b:.1f} for the baseline "
                f"(1-minute, {c_load['source']} / {b_load['source']}; {cores} logical cores): "
                f"{busier}."
            )
    return lines


# -- statistics ------------------------------------------------------------------------------


def mann_whitney_u(x: np.ndarray, y: np.ndarray) -> float:
    """U = number of pairs (x_i, y_j) with x_i > y_j, ties counting one half."""
    x = np.asarray(x, float)[:, None]
    y = np.asarray(y, float)[None, :]
    return float((x > y).sum() + 0.5 * (x == y).sum())


def mann_whitney_p(x: np.ndarray, y: np.ndarray, alternative: str) -> float:
    """One-sided Mann-Whitney p-value: "less" tests x stochastically smaller than y.

    Exact null distribution for small samples without ties; the normal approximation with tie
    correction and continuity correction otherwise.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        return float("nan")
    u = mann_whitney_u(x, y)
    both = np.concatenate([x, y])
    ties = len(np.unique(both)) < len(both)
    if not ties and m + n <= EXACT_LIMIT:
        counts = analysis.mann_whitney_null(m, n)
        total = counts.sum()
        k = round(u)
        if alternative == "less":  # few x above y: small U
            return float(counts[: k + 1].sum() / total)
        return float(counts[k:].sum() / total)
    mean = m * n / 2.0
    _, tie_counts = np.unique(both, return_counts=True)
    nn = m + n
    var = m * n / 12.0 * ((nn + 1) - ((tie_counts**3 - tie_counts).sum()) / (nn * (nn - 1)))
    if var <= 0:
        return 1.0
    z = (
        (u - mean + 0.5) / math.sqrt(var)
        if alternative == "less"
        else (u - mean - 0.5) / math.sqrt(var)
    )
    cdf = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    return float(cdf if alternative == "less" else 1.0 - cdf)


def min_p_value(m: int, n: int) -> float:
    """The smallest one-sided p the exact test can give for these sizes: 1 / C(m+n, m)."""
    if m == 0 or n == 0:
        return 1.0
    return 1.0 / math.comb(m + n, m)


# -- the comparison --------------------------------------------------------------------------


def compare(baseline: Side, current: Side, settings: GateSettings | None = None) -> Comparison:
    """Join on configuration keys and give each point and curve step a verdict."""
    settings = settings or GateSettings()
    notes: list[str] = []
    diffs = env_differences(baseline, current)
    if diffs:
        text = "; ".join(f"{k}: {b!r} -> {c!r}" for k, (b, c) in diffs.items())
        if not settings.allow_env_change:
            raise UserError(
                f"environments differ ({text}); results are not comparable -- pass "
                "--allow-env-change to compare anyway"
            )
        notes.append(f"Environment changed (allowed): {text}.")
    if baseline.gate:
        given = ", ".join(f"{k} = {v:g}" for k, v in baseline.gate.items())
        notes.append(
            f"The baseline's sweep file sets [gate] {given} (the noise of its machine class); "
            "--rtol / --efficiency-tol-pp override it."
        )
    b_frame, c_frame, how = _joinable(baseline.frame, current.frame)
    notes.append(f"Points joined on {how}.")
    points = _compare_points(b_frame, c_frame, settings)
    common = points["verdict"].isin(("regressed", "improved", "unchanged", "inconclusive")).sum()
    if common == 0:
        raise UserError(
            f"no common points between {baseline.source} ({b_frame['key'].nunique()} points) and "
            f"{current.source} ({c_frame['key'].nunique()} points); did the sweep change?"
        )
    curves = _compare_curves(b_frame, c_frame, settings)
    n_inconclusive = int((points["verdict"] == "inconclusive").sum()) + (
        int((curves["verdict"] == "inconclusive").sum()) if len(curves) else 0
    )
    if n_inconclusive:
        notes.append(
            f"{n_inconclusive} change(s) beyond the threshold have too few repeats for a "
            "significance test (single runs, or 2 vs 2), so they are inconclusive, not "
            "regressions: use repeats >= 3 on both sides (5 to tolerate one outlier)."
        )
    bad = {
        "points": int((points["verdict"] == "regressed").sum()),
        "curves": int((curves["verdict"] == "regressed").sum()) if len(curves) else 0,
    }
    missing = int((points["verdict"] == "missing").sum())
    if missing:
        notes.append(
            f"{missing} baseline point(s) are missing from the current results"
            + (
                " (counted as a regression: --fail-on-missing)."
                if settings.fail_on_missing
                else "."
            )
        )
    if bad["points"] or bad["curves"] or (missing and settings.fail_on_missing):
        verdict = "regressed"
    elif (points["verdict"] == "improved").any() or (
        len(curves) and (curves["verdict"] == "improved").any()
    ):
        verdict = "improved"
    elif n_inconclusive:
        verdict = "inconclusive"  # exit 0: nothing the data can support is a regression
    else:
        verdict = "unchanged"
    return Comparison(
        baseline=baseline.source,
        current=current.source,
        settings=settings,
        points=points,
        curves=curves,
        verdict=verdict,
        notes=tuple(notes),
        context=tuple(context_lines(baseline, current)),
        machines={"baseline": machine_of(baseline), "current": machine_of(current)},
        loads={"baseline": load_of(baseline), "current": load_of(current)},
    )


def _joinable(b: pd.DataFrame, c: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Give both frames a ``key`` column: config_key, or a digest of the shared config columns."""
    if not b.attrs.get("derived_keys") and not c.attrs.get("derived_keys"):
        return b.assign(key=b["config_key"]), c.assign(key=c["config_key"]), "config_key"
    shared = [
        col for col in analysis.CONFIG_COLUMNS if b[col].notna().any() and c[col].notna().any()
    ]
    if not shared:
        raise UserError("neither config_key nor config columns are shared by the two inputs")

    def keyed(frame: pd.DataFrame) -> pd.DataFrame:
        records = frame[shared].to_dict("records")
        return frame.assign(key=[analysis.config_digest(r) for r in records])

    return keyed(b), keyed(c), f"the config columns ({len(shared)} shared; no config_key)"


def _compare_points(b: pd.DataFrame, c: pd.DataFrame, s: GateSettings) -> pd.DataFrame:
    label_cols = fmt.label_columns(pd.concat([b, c], ignore_index=True))
    first = pd.concat([c, b], ignore_index=True).drop_duplicates("key").set_index("key")
    b_ok = _ok_samples(b, s.metric)
    c_ok = _ok_samples(c, s.metric)
    b_status = b.groupby("key")["status"].agg(lambda x: ", ".join(sorted(set(x))))
    c_status = c.groupby("key")["status"].agg(lambda x: ", ".join(sorted(set(x))))
    rows = []
    for key in sorted(set(b["key"]) | set(c["key"])):
        bv, cv = b_ok.get(key, np.empty(0)), c_ok.get(key, np.empty(0))
        row: dict[str, Any] = {
            "key": key,
            "point": fmt.point_label(first.loc[key], label_cols),
            "world_size": first.loc[key, "world_size"],
            "baseline": float(np.median(bv)) if len(bv) else np.nan,
            "n_baseline": len(bv),
            "current": float(np.median(cv)) if len(cv) else np.nan,
            "n_current": len(cv),
            "change": np.nan,
            "change_lo": np.nan,
            "change_hi": np.nan,
            "change_level": np.nan,
            "p_value": np.nan,
            "method": None,
            "note": "",
        }
        in_b, in_c = key in b_status.index, key in c_status.index
        if not in_c:
            row.update(verdict="missing", note="not in the current results")
        elif not in_b:
            row.update(verdict="new", note="not in the baseline")
        elif len(bv) and not len(cv):
            row.update(verdict="regressed", note=f"no ok current run ({c_status[key]})")
        elif len(cv) and not len(bv):
            row.update(verdict="improved", note=f"no ok baseline run ({b_status[key]})")
        elif not len(bv):
            row.update(verdict="unchanged", note=f"failed in both ({c_status[key]})")
        else:
            row.update(judge_point(bv, cv, s))
        rows.append(row)
    points = pd.DataFrame(rows)
    order = {v: i for i, v in enumerate(VERDICTS)}
    points["_o"] = points["verdict"].map(order)
    return points.sort_values(["_o", "change", "point"]).drop(columns="_o").reset_index(drop=True)


def _ok_samples(frame: pd.DataFrame, metric: str) -> dict[str, np.ndarray]:
    ok = frame[(frame["status"] == "ok") & frame[metric].notna()]
    return {k: g.to_numpy(float) for k, g in ok.groupby("key")[metric]}


def judge_point(bv: np.ndarray, cv: np.ndarray, s: GateSettings) -> dict[str, Any]:
    """Verdict for one point measured on both sides (``bv`` baseline, ``cv`` current values).

    Returns change (the Hodges-Lehmann shift of current over baseline as a relative change,
    :func:`harness.analysis.shift_interval`; the ratio of medians where a value is not
    positive), change_lo/change_hi/change_level (its Moses interval and that interval's
    coverage; NaN with one run a side), p_value (one-sided Mann-Whitney, in the direction of the
    change; absent without a test), method and verdict.
    """
    ratio, lo, hi, level = analysis.shift_interval(cv, bv)
    if not np.isfinite(ratio):  # a rate <= 0 has no log: fall back to the medians, no interval
        ratio, lo, hi, level = float(np.median(cv) / np.median(bv)), np.nan, np.nan, np.nan
    out: dict[str, Any] = {
        "change": ratio - 1.0,
        "change_lo": lo - 1.0,
        "change_hi": hi - 1.0,
        "change_level": level,
    }
    change = out["change"]
    testable = min_p_value(len(cv), len(bv)) <= s.alpha
    if testable:
        p_less = mann_whitney_p(cv, bv, "less")
        p_greater = mann_whitney_p(cv, bv, "greater")
        p = p_less if change < 0 else p_greater
        method = f"Mann-Whitney U ({len(cv)} vs {len(bv)} runs) + {s.rtol:.0%} threshold"
        if change < -s.rtol and p_less <= s.alpha:
            verdict = "regressed"
        elif change > s.rtol and p_greater <= s.alpha:
            verdict = "improved"
        else:
            verdict = "unchanged"
        return {**out, "p_value": p, "method": method, "verdict": verdict}
    why = "single run" if min(len(cv), len(bv)) == 1 else f"{len(cv)} vs {len(bv)} runs"
    # Without a test the change may be noise: beyond the threshold it is inconclusive, never a
    # regression the gate cannot support.
    verdict = "inconclusive" if abs(change) > s.rtol else "unchanged"
    return {
        **out,
        "method": f"no test ({why}: too few repeats); {s.rtol:.0%} threshold",
        "verdict": verdict,
    }


def _compare_curves(b: pd.DataFrame, c: pd.DataFrame, s: GateSettings) -> pd.DataFrame:
    cols = [
        "curve",
        "world_size",
        "base_world_size",
        "baseline",
        "current",
        "change_pp",
        "change_pp_lo",
        "change_pp_hi",
        "change_pp_level",
        "method",
        "verdict",
    ]
    # Scaling curves are built from config_key; with derived join keys use those instead.
    b_keyed = b.assign(config_key=b["key"])
    c_keyed = c.assign(config_key=c["key"])
    bc = analysis.scaling(b_keyed, s.metric)
    cc = analysis.scaling(c_keyed, s.metric)
    cc = fmt.with_curve_names(cc, c_keyed)  # the current sweep names the curves
    if bc.empty or cc.empty:
        return pd.DataFrame(columns=cols)
    bc = bc[bc["world_size"] > bc["base_world_size"]]
    cc = cc[cc["world_size"] > cc["base_world_size"]]
    joined = bc.merge(
        cc, on=["curve_id", "world_size", "base_world_size"], suffixes=("_b", "_c"), how="inner"
    )
    if joined.empty:
        return pd.DataFrame(columns=cols)
    b_samples = analysis.point_samples(b_keyed, s.metric)
    c_samples = analysis.point_samples(c_keyed, s.metric)
    out = pd.DataFrame(
        {
            "curve": joined["curve"],
            "world_size": joined["world_size"],
            "base_world_size": joined["base_world_size"],
            "baseline": joined["efficiency_b"] * 100.0,
            "current": joined["efficiency_c"] * 100.0,
        }
    )
    out["change_pp"] = out["current"] - out["baseline"]
    bounds = [
        efficiency_change_interval(
            c_samples[r["config_key_c"]],
            b_samples[r["config_key_b"]],
            c_samples[r["base_key_c"]],
            b_samples[r["base_key_b"]],
            baseline_pp=r["baseline"],
            change_pp=r["change_pp"],
        )
        for r in pd.concat([joined, out[["baseline", "change_pp"]]], axis=1).to_dict("records")
    ]
    lo, hi, level = (np.array([x[i] for x in bounds], dtype=float) for i in range(3))
    n_min = np.minimum(
        _sizes(b_keyed, joined, "_b", s.metric), _sizes(c_keyed, joined, "_c", s.metric)
    )
    testable = n_min >= 3
    out["change_pp_lo"] = np.where(testable, lo, np.nan)
    out["change_pp_hi"] = np.where(testable, hi, np.nan)
    out["change_pp_level"] = np.where(testable, level, np.nan)
    tol = s.efficiency_tol_pp
    regressed = testable & (out["change_pp"] < -tol) & (out["change_pp_hi"] < 0)
    improved = testable & (out["change_pp"] > tol) & (out["change_pp_lo"] > 0)
    inconclusive = ~testable & (out["change_pp"].abs() > tol)
    out["verdict"] = np.select(
        [regressed, improved, inconclusive], ["regressed", "improved", "inconclusive"], "unchanged"
    )
    out["method"] = [
        f"interval from the shifts at N and N0 (covers {fmt.level(v, at_least=True)}) + "
        f"{tol:g} pp threshold"
        if t
        else f"no test (fewer than 3 runs at N or N0); {tol:g} pp threshold"
        for t, v in zip(testable, level, strict=True)
    ]
    return out[cols].sort_values(["verdict", "curve", "world_size"]).reset_index(drop=True)


def efficiency_change_interval(
    cur_n: np.ndarray,
    base_n: np.ndarray,
    cur_n0: np.ndarray,
    base_n0: np.ndarray,
    *,
    baseline_pp: float,
    change_pp: float,
) -> tuple[float, float, float]:
    """Interval of an efficiency step's change in pp: ``(lo, hi, coverage)``.

    Current over baseline efficiency is (cur_N/base_N) / (cur_N0/base_N0): the point's shift at
    N over its shift at N0 (harness.analysis.shift_interval, each at sqrt(95%)), so its
    interval is their quotient end to end and covers at least the product of their coverages
    (the runs at N and at N0 are independent). It is a relative change; times the baseline's
    efficiency it reads in pp, widened to hold the change shown (current - baseline). NaN
    where a side has too few runs.
    """
    side = math.sqrt(analysis.LEVEL)
    _, lo_n, hi_n, cov_n = analysis.shift_interval(cur_n, base_n, side)
    _, lo_0, hi_0, cov_0 = analysis.shift_interval(cur_n0, base_n0, side)
    lo, hi = lo_n / hi_0, hi_n / lo_0
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return (np.nan, np.nan, np.nan)
    lo_pp, hi_pp = baseline_pp * (lo - 1.0), baseline_pp * (hi - 1.0)
    return (min(lo_pp, change_pp), max(hi_pp, change_pp), cov_n * cov_0)


def _sizes(frame: pd.DataFrame, joined: pd.DataFrame, suffix: str, metric: str) -> list[int]:
    samples = analysis.point_samples(frame, metric)
    return [
        min(len(samples.get(k, ())), len(samples.get(b, ())))
        for k, b in zip(joined[f"config_key{suffix}"], joined[f"base_key{suffix}"], strict=True)
    ]


# -- rendering (pure) ------------------------------------------------------------------------


def _point_rows(cmp: Comparison) -> list[list[str]]:
    rows = []
    for r in cmp.points.to_dict("records"):
        rows.append(
            [
                r["verdict"],
                r["point"],
                fmt.rate(r["baseline"], r["n_baseline"]),
                fmt.rate(r["current"], r["n_current"]),
                fmt.signed_pct(r["change"]),
                fmt.bracket(r["change_lo"], r["change_hi"], fmt.signed_pct, r["change_level"]),
                "" if not np.isfinite(r["p_value"]) else f"{r['p_value']:.3f}",
                r["note"] or (r["method"] or ""),
            ]
        )
    return rows


def _curve_rows(cmp: Comparison) -> list[list[str]]:
    return [
        [
            r["verdict"],
            r["curve"],
            f"{int(r['world_size'])} (vs {int(r['base_world_size'])})",
            f"{r['baseline']:.1f}%",
            f"{r['current']:.1f}%",
            fmt.signed_pp(r["change_pp"]),
            fmt.bracket(
                r["change_pp_lo"],
                r["change_pp_hi"],
                fmt.signed_pp,
                r["change_pp_level"],
                at_least=True,
            ),
        ]
        for r in cmp.curves.to_dict("records")
    ]


POINT_HEADER = [
    "verdict",
    "point",
    "baseline",
    "current",
    "change",
    "interval, covers",
    "p",
    "note",
]
CURVE_HEADER = [
    "verdict",
    "curve",
    "N",
    "baseline eff.",
    "current eff.",
    "change",
    "interval, covers",
]


def _summary_line(cmp: Comparison) -> str:
    counts = cmp.points["verdict"].value_counts()
    parts = [f"{counts.get(v, 0)} {v}" for v in VERDICTS if counts.get(v, 0)]
    line = f"points: {', '.join(parts)}"
    if len(cmp.curves):
        cc = cmp.curves["verdict"].value_counts()
        line += "; efficiency steps: " + ", ".join(f"{n} {v}" for v, n in cc.items())
    return line


def _settings_line(cmp: Comparison) -> str:
    s = cmp.settings
    return (
        f"metric {s.metric}, rtol {s.rtol:.0%}, efficiency tolerance {s.efficiency_tol_pp:g} pp, "
        f"alpha {s.alpha:g}"
    )


def render_text(cmp: Comparison) -> str:
    out = [
        f"compare: {cmp.baseline} (baseline) vs {cmp.current} (current)",
        _settings_line(cmp),
        f"VERDICT: {cmp.verdict.upper()}  ({_summary_line(cmp)})",
        *(f"  ! {line}" for line in cmp.context),
        "",
    ]
    out.extend(f"! {n}" for n in cmp.notes)
    out.append("")
    out.append(_text_table("Points", POINT_HEADER, _point_rows(cmp)))
    if len(cmp.curves):
        out.append(_text_table("Scaling efficiency", CURVE_HEADER, _curve_rows(cmp)))
    return "\n".join(out).rstrip() + "\n"


def _text_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in header]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([title, "-" * len(title), fmt(header), *(fmt(r) for r in rows)]) + "\n"


def render_markdown(cmp: Comparison) -> str:
    icons = {"regressed": "❌", "improved": "✅", "unchanged": "✔️", "inconclusive": "❔"}
    icon = icons[cmp.verdict]
    out = [
        f"### distrinews compare: {icon} **{cmp.verdict}**",
        "",
        *(f"> ⚠️ {line}\n" for line in cmp.context),
        f"`{cmp.baseline}` (baseline) vs `{cmp.current}` (current) — {_settings_line(cmp)}",
        "",
        _summary_line(cmp),
        "",
    ]
    out.extend(f"> {n}" for n in cmp.notes)
    out.append("")
    out.append(_md_table(POINT_HEADER, _point_rows(cmp)))
    if len(cmp.curves):
        out.extend(["", "#### Scaling efficiency", "", _md_table(CURVE_HEADER, _curve_rows(cmp))])
    return "\n".join(out).rstrip() + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def to_dict(cmp: Comparison) -> dict[str, Any]:
    def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
        return [
            {
                k: (None if isinstance(v, float) and not np.isfinite(v) else _py(v))
                for k, v in r.items()
            }
            for r in frame.to_dict("records")
        ]

    s = cmp.settings
    return {
        "verdict": cmp.verdict,
        "regressed": cmp.regressed,
        "context": list(cmp.context),
        "baseline": cmp.baseline,
        "current": cmp.current,
        "settings": {
            "metric": s.metric,
            "rtol": s.rtol,
            "efficiency_tol_pp": s.efficiency_tol_pp,
            "alpha": s.alpha,
            "allow_env_change": s.allow_env_change,
            "fail_on_missing": s.fail_on_missing,
        },
        "notes": list(cmp.notes),
        "machine": cmp.machines,
        "load": cmp.loads,
        "points": records(cmp.points),
        "curves": records(cmp.curves),
    }


def _py(v: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN as null."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def render_json(cmp: Comparison) -> str:
    return json.dumps(to_dict(cmp), indent=2, sort_keys=False) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}


def run_compare(
    baseline: Path, current: Path, fmt: str = "text", **options: Any
) -> tuple[str, Comparison]:
    """Load both sides, compare, render: what the CLI calls. ``options`` are GateSettings
    fields; None means "not given" (the baseline's [gate] or the default applies)."""
    base = load_side(baseline)
    cmp = compare(base, load_side(current), settings_for(base, **options))
    return RENDERERS[fmt](cmp), cmp
