"""Packaging invariants: the pinned set satisfies pyproject's ranges; imports flow one way."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.txt: {line!r} is not an exact pin"
            out[req.name.lower()] = spec.version
    return out


def test_every_dependency_is_pinned_within_its_range():
    pinned = pins()
    for req in pyproject_requirements():
        name = req.name.lower()
        assert name in pinned, f"{name} is in pyproject.toml but not pinned in requirements.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"requirements.txt pins {name}=={pinned[name]}, outside pyproject's {req.specifier}"
        )


def test_no_stray_pins():
    reqs = pyproject_requirements()
    declared = {r.name.lower() for r in reqs}
    # An extra that installs a companion package of the same name (psycopg[binary] installs
    # psycopg-binary) may pin that package too: the pinned set must hold every package.
    declared |= {f"{r.name}-{extra}".lower() for r in reqs for extra in r.extras}
    assert set(pins()) <= declared


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "distrinews").rglob("*.py")), ids=str)
def test_workload_never_imports_the_harness(path):
    """distrinews <- harness: the worker must run on a GPU node with only its own package."""
    assert "harness" not in imported_modules(path)


# What a bare GPU node has (DESIGN §5): the workload may import nothing else at module level.
WORKLOAD_TOP_LEVEL = {"torch", "transformers", "numpy", "distrinews", "__future__"}
# The inference service is the one module that needs the `serve` extra; the worker never imports it.
EXTRA_ALLOWED = {"serve.py": {"fastapi", "pydantic", "uvicorn", "starlette"}}


@pytest.mark.parametrize("path", sorted((ROOT / "distrinews").rglob("*.py")), ids=str)
def test_workload_top_level_imports_stay_minimal(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top.add(node.module.split(".")[0])
    allowed = WORKLOAD_TOP_LEVEL | EXTRA_ALLOWED.get(path.name, set())
    extra = {m for m in top - allowed if m not in sys.stdlib_module_names}
    assert not extra, f"{path.name} imports {sorted(extra)} at module level"


def test_ci_keeps_an_exact_copy_of_the_slurm_cluster_script():
    """.ci/run falls back on the repo's copy on a clone without ../shared: keep it current."""
    root = Path(__file__).resolve().parents[2]
    shared = root.parent / "shared" / "slurm" / "local-cluster.sh"
    if not shared.is_file():
        pytest.skip(f"no {shared} beside the project to compare with")
    copy = root / ".ci" / "local-cluster.sh"
    assert copy.read_bytes() == shared.read_bytes(), "refresh .ci/local-cluster.sh from shared/"


# Inside the harness, imports follow the pipeline: results are written by the run stage, read
# by the analysis, shown by the report, and only the entry points see everything. A module
# may import its own stage or an earlier one, never a later one (the report may read what a run
# wrote; a run never formats a report). A new module must be placed here on purpose.
HARNESS_STAGES = {
    # 0. results contract and pure models: no stage of their own
    "store": 0, "envinfo": 0, "definitions": 0, "energy": 0, "memory_model": 0,
    "attribution": 0, "outputs": 0,
    # 1. what a run's side processes record
    "telemetry": 1, "serving_store": 1,
    # 2. running: specs, launching, sweeping, searching, load-testing the server
    "spec": 2, "max_batch": 2, "launch": 2, "sweep": 2, "train_local": 2, "bench_serve": 2,
    # 3. numbers from results (pure pandas/numpy), and how every number is spelled (fmt
    #    serves the readers below, so it sits under them). The projection is one package:
    #    NCCL's cost model, the fabric table, the fit from a sweep, the validation data and its
    #    rendering; it reads results through the analysis and spells numbers with fmt, and the
    #    report draws it (it never imports the report).
    "analysis": 3, "fmt": 3, "projection": 3,
    # 4. what a user reads: the report, the gate's verdicts
    "report": 4, "compare": 4,
    # the history store reads sweeps through the contract (store, analysis) and draws its page
    # with the report's page code
    "history": 4,
    # 5. entry points
    "cli": 5, "tools": 5,
}  # fmt: skip


def harness_imports(path: Path, package: tuple[str, ...] | None = None) -> set[str]:
    """Top-level harness modules that ``path`` imports (absolute or relative, any depth)."""
    package = package or path.relative_to(ROOT).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if module == "harness":
                names |= {alias.name for alias in node.names}
            elif module.startswith("harness."):
                names.add(module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("harness.")}
    return names


def check_stages(own: str, deps: set[str]) -> None:
    assert own in HARNESS_STAGES, f"harness/{own}: new module; give it a stage in HARNESS_STAGES"
    for dep in deps - {own}:
        assert dep in HARNESS_STAGES, f"harness/{own} imports harness.{dep}, which has no stage"
        assert HARNESS_STAGES[dep] <= HARNESS_STAGES[own], (
            f"harness/{own} (stage {HARNESS_STAGES[own]}) imports harness.{dep} "
            f"(stage {HARNESS_STAGES[dep]}): a later stage"
        )


HARNESS_FILES = [p for p in sorted((ROOT / "harness").rglob("*.py")) if p.name != "__init__.py"]


@pytest.mark.parametrize("path", HARNESS_FILES, ids=str)
def test_harness_imports_follow_the_pipeline(path):
    check_stages(path.relative_to(ROOT / "harness").with_suffix("").parts[0], harness_imports(path))


def test_the_stage_check_sees_a_backward_import(tmp_path):
    # The check must be able to fail: a run-stage module importing the report and analysis.
    probe = tmp_path / "probe.py"
    probe.write_text("from harness import report\nfrom .analysis import summarize\n")
    assert harness_imports(probe, package=("harness",)) == {"report", "analysis"}
    with pytest.raises(AssertionError, match="a later stage"):
        check_stages("sweep", {"report", "analysis"})
    with pytest.raises(AssertionError, match="new module"):
        check_stages("brand_new", set())


def test_every_package_folder_is_installed():
    """A wheel holds every folder of distrinews/ and harness/ that is a package."""
    from setuptools import find_packages

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    found = set(find_packages(str(ROOT), include=include))
    folders = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("distrinews", "harness")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert folders == found
    assert {"harness.report", "harness.tools", "harness.history"} <= found
