"""The results contract has one home per part, and nothing is added in one place only.

Each check below is a function of the structures it compares, run once on the real ones (no
problem may be found) and once on a planted drift (the problem must be named): a metric added
to RunMetrics only, a RunSpec field that is no ledger column, a column list edited by hand.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from distrinews import metrics
from distrinews.metrics import RunMetrics
from distrinews.runspec import RunSpec
from harness import analysis, attribution, definitions, store
from tests.helpers_results import FakeSweep, fake_rows

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


# -- metrics -----------------------------------------------------------------------------------


def metric_drift(metrics_cls: type) -> list[str]:
    """Where a field of ``metrics_cls`` (RunMetrics) fails to reach a reader of the contract."""
    fields = dataclasses.fields(metrics_cls)
    ledger = [f.name for f in fields if f.metadata.get("ledger", True)]
    terms = {t for t, _ in (*definitions.DEFINITIONS, *attribution.DEFINITIONS)}
    problems = []
    if tuple(ledger) != store.METRIC_KEYS:
        missing = sorted(set(ledger) - set(store.METRIC_KEYS))
        problems.append(f"store.METRIC_KEYS is not the ledger fields (missing {missing})")
    for name in ledger:
        if name not in analysis.NUMERIC_COLUMNS:
            problems.append(f"{name}: not in analysis.NUMERIC_COLUMNS")
    for f in fields:
        if f.metadata.get("term") not in terms:
            problems.append(f"{f.name}: no definition (term {f.metadata.get('term')!r})")
    # The ledger row carries every ledger field of a full record, value for value.
    record = {"metrics": {f.name: float(i + 1) for i, f in enumerate(fields)}}
    row = store.make_row(**{**_ROW_ARGS, "record": record})
    for name in ledger:
        if name not in row or row[name] != record["metrics"][name]:
            problems.append(f"{name}: not carried into the ledger row by store.make_row")
    return problems


_ROW_ARGS: dict[str, Any] = dict(
    sweep="s",
    spec=RunSpec(device="cpu"),
    status="ok",
    reason=None,
    started_at="t0",
    finished_at="t1",
    duration_s=1.0,
    scaling_mode="weak",
    point_dir="points/x",
    record=None,
    telemetry={},
    env_fingerprint=None,
)


def _with_extra_metric(term: str = "samples/s") -> type:
    return dataclasses.make_dataclass(
        "GrownMetrics",
        [("made_up_s", float, dataclasses.field(default=None, metadata={"term": term}))],
        bases=(RunMetrics,),
        frozen=True,
        kw_only=True,
    )


def test_every_metric_reaches_the_ledger_the_analysis_and_the_definitions():
    assert metric_drift(RunMetrics) == []


def test_a_metric_added_to_runmetrics_only_is_caught():
    problems = metric_drift(_with_extra_metric())
    assert any("store.METRIC_KEYS" in p and "made_up_s" in p for p in problems)
    assert "made_up_s: not in analysis.NUMERIC_COLUMNS" in problems


def test_a_metric_without_a_definition_is_caught():
    problems = metric_drift(_with_extra_metric(term="Nowhere defined"))
    assert "made_up_s: no definition (term 'Nowhere defined')" in problems


def test_a_metric_dropped_from_the_ledger_or_the_analysis_is_caught(monkeypatch):
    monkeypatch.setattr(store, "METRIC_KEYS", store.METRIC_KEYS[:-1])
    assert any("store.METRIC_KEYS" in p for p in metric_drift(RunMetrics))
    monkeypatch.undo()
    short = tuple(c for c in analysis.NUMERIC_COLUMNS if c != "exposed_comm_s")
    monkeypatch.setattr(analysis, "NUMERIC_COLUMNS", short)
    assert metric_drift(RunMetrics) == ["exposed_comm_s: not in analysis.NUMERIC_COLUMNS"]


def test_the_record_keys_are_one_list_in_one_order():
    assert tuple(f.name for f in dataclasses.fields(RunMetrics)) == metrics.RECORD_METRIC_KEYS
    assert set(metrics.EXPLAIN_METRIC_KEYS) < set(metrics.RECORD_METRIC_KEYS)
    assert (
        tuple(k for k in metrics.RECORD_METRIC_KEYS if k != "measured_steps")
        == metrics.LEDGER_METRIC_KEYS
    )


# -- configuration columns -----------------------------------------------------------------


def spec_config_fields(spec: RunSpec) -> list[str]:
    """The ledger names of every field config_key hashes (DDP knobs flattened)."""
    out = []
    for f in dataclasses.fields(spec):
        if f.name in RunSpec.KEY_EXCLUDE:
            continue
        if f.name == "ddp":
            out += [f"ddp_{k.name}" for k in dataclasses.fields(spec.ddp)]
        else:
            out.append(f.name)
    return out


def config_drift(spec: RunSpec) -> list[str]:
    """Where a configuration field of ``spec`` is missing from a column list or the row."""
    row = store.make_row(**{**_ROW_ARGS, "spec": spec})
    problems = []
    for name in spec_config_fields(spec):
        if name not in store.CONFIG_COLUMNS:
            problems.append(f"{name}: not in store.CONFIG_COLUMNS")
        if name not in analysis.CONFIG_COLUMNS:
            problems.append(f"{name}: not in analysis.CONFIG_COLUMNS")
        if name not in row:
            problems.append(f"{name}: not in the ledger row")
    for name in store.CONFIG_COLUMNS:
        if name not in row:
            problems.append(f"{name}: a config column the ledger row lacks")
    return problems


def test_every_config_field_is_a_column_of_the_ledger_and_the_analysis():
    assert config_drift(RunSpec()) == []
    assert {"fault", "fault_ms", "lr", "seed", "tokenizer", "ddp_powersgd_rank"} <= set(
        analysis.CONFIG_COLUMNS
    )
    assert tuple(c for c in store.CONFIG_COLUMNS if c.startswith("ddp_")) == analysis.DDP_COLUMNS


def test_a_spec_field_missing_from_the_column_lists_is_caught():
    grown = dataclasses.make_dataclass(
        "GrownSpec", [("made_up_knob", int, 7)], bases=(RunSpec,), frozen=True, kw_only=True
    )
    problems = config_drift(grown())
    assert "made_up_knob: not in store.CONFIG_COLUMNS" in problems
    assert "made_up_knob: not in analysis.CONFIG_COLUMNS" in problems


def test_a_column_list_edited_by_hand_is_caught(monkeypatch):
    short = tuple(c for c in analysis.CONFIG_COLUMNS if c != "fault")
    monkeypatch.setattr(analysis, "CONFIG_COLUMNS", short)
    assert config_drift(RunSpec()) == ["fault: not in analysis.CONFIG_COLUMNS"]


def test_config_columns_follow_every_config_key_field():
    """Two specs with different config keys never share all their config columns."""
    base = RunSpec(device="cpu")
    for name, value in (("lr", 1e-4), ("seed", 3), ("tokenizer", "vocab.txt"), ("fault_ms", 5)):
        other = dataclasses.replace(base, **{name: value})
        assert other.config_key != base.config_key
        assert store.config_columns(other) != store.config_columns(base), name


def test_the_fabricated_rows_have_the_real_schema():
    rows, _ = fake_rows(FakeSweep(world_sizes=(1, 2), batches=(8,), precisions=("bf16",)))
    real = store.make_row(**{**_ROW_ARGS, "spec": RunSpec(device="cuda")})
    assert all(set(r) >= set(real) - {"telemetry_samples"} for r in rows)
    assert {r["backend"] for r in rows} == {"nccl"}  # resolved, as the harness writes it


# -- cited files ---------------------------------------------------------------------------

#: A project path (notes/..., harness/..., ../shared/...) or a bare Markdown name.
_CITED = re.compile(
    r"(?:\.\./shared/|notes/|harness/|distrinews/|tests/)[\w./-]*\w\.(?:md|py|toml|txt|csv|sh)"
    r"|(?<![\w/.-])[\w-]+\.md\b"
)


def cited_paths(text: str) -> list[str]:
    return _CITED.findall(text)


def resolve_cited(cited: str) -> Path | None:
    """Where a cited path lives (None: nowhere). A bare ``X.md`` may be at the root, in
    notes/ or in ../shared/; ``../shared/...`` is beside the repository."""
    if cited.startswith("../shared/"):
        candidates = [SHARED / cited.removeprefix("../shared/")]
    elif "/" in cited:
        candidates = [ROOT / cited]
    else:
        candidates = [ROOT / cited, ROOT / "notes" / cited, SHARED / cited]
    return next((p for p in candidates if p.exists()), None)


def test_cited_paths_are_found_and_a_missing_one_is_reported():
    text = 'see notes/contracts.md §4, ../shared/DESIGN.md and x/doc/PERFORMANCE.md; "a.b"'
    assert cited_paths(text) == ["notes/contracts.md", "../shared/DESIGN.md"]
    assert resolve_cited("notes/contracts.md") == ROOT / "notes" / "contracts.md"
    assert resolve_cited("notes/no-such-page.md") is None
    assert resolve_cited("harness/store.py") == ROOT / "harness" / "store.py"


def test_every_file_a_docstring_or_comment_cites_exists():
    missing = []
    for path in sorted([*ROOT.glob("distrinews/**/*.py"), *ROOT.glob("harness/**/*.py")]):
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            for cited in cited_paths(line):
                if resolve_cited(cited) is not None:
                    continue
                maybe_shared = cited.startswith("../shared/") or "/" not in cited
                if maybe_shared and not SHARED.is_dir():
                    continue  # a clone without ../shared cannot check these
                missing.append(f"{path.relative_to(ROOT)}:{lineno}: {cited}")
    assert missing == []


@pytest.mark.parametrize("name", ["notes/contracts.md"])
def test_the_contract_page_names_only_homes_that_exist(name):
    """Every ``module.py::NAME`` the contract page cites is defined in that module."""
    text = (ROOT / name).read_text()
    refs = re.findall(r"`((?:distrinews|harness)/[\w/]+\.py)::(\w+)`", text)
    assert refs, "the page cites its homes as `path.py::NAME`"
    for module, attr in refs:
        source = (ROOT / module).read_text()
        defined = re.search(rf"^(?:def |class |){attr}\b", source, flags=re.M)
        assert defined, f"{name}: {module}::{attr} is not defined there"


# -- columns added to the ledger later -------------------------------------------------------

#: Config columns the ledger gained when its column list became derived from RunSpec.
ADDED_LATER = ("tokenizer", "ddp_powersgd_rank", "lr", "seed")


def test_columns_added_later_keep_curve_ids_and_join_old_rows_with_new():
    """Rows written before the added columns (the committed baseline's rows without them) keep
    the curve id they had then (fabe44c2a0e2, computed by the code before the change), the
    rows as written now get the same id, and a ledger mixing both (a sweep resumed after an
    upgrade) is one curve."""
    now = store.read_ledger(ROOT / "results" / "baselines" / "cpu-smoke")
    assert now and set(ADDED_LATER) <= set(now[0])
    old = [{k: v for k, v in r.items() if k not in ADDED_LATER} for r in now]
    spec_columns = {k: store.config_columns(RunSpec())[k] for k in ADDED_LATER}
    new = [{**r, **spec_columns} for r in old]
    assert new == now  # the baseline's rows hold exactly RunSpec's defaults there
    mixed = [r if r["world_size"] == 1 else n for r, n in zip(old, new, strict=True)]
    for rows in (old, new, mixed):
        curves = analysis.scaling(analysis.frame_from_rows(rows))
        assert set(curves["curve_id"]) == {"fabe44c2a0e2"}
        assert sorted(curves["world_size"]) == [1.0, 2.0]
    # A non-default value is part of the curve's identity.
    other = [{**r, "lr": 1e-3} for r in new]
    curves = analysis.scaling(analysis.frame_from_rows(other))
    assert set(curves["curve_id"]) != {"fabe44c2a0e2"}


# -- file names ----------------------------------------------------------------------------


def literal_file_names(source: str, names: set[str]) -> list[int]:
    """Lines of ``source`` where one of ``names`` is spelled as a string literal (docstrings
    and f-string text included; comments are not code)."""
    import ast

    return sorted(
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    )


def test_file_names_are_spelled_only_in_distrinews_layout():
    from distrinews import layout

    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and "." in v}
    assert {"ledger.jsonl", "record.json", "error.json", ".lock", "report.html"} <= names
    assert literal_file_names('x = "ledger.jsonl"\ny = f"{d}/record.json"', names) == [1]
    spelled = []
    for path in sorted([*ROOT.glob("distrinews/**/*.py"), *ROOT.glob("harness/**/*.py")]):
        if path.name != "layout.py":
            lines = literal_file_names(path.read_text(), names)
            spelled += [f"{path.relative_to(ROOT)}:{n}" for n in lines]
    assert spelled == [], "use the constants of distrinews/layout.py"
