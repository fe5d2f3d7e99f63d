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
    declared = {r.name.lower() for r in pyproject_requirements()}
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
