"""The report package's internal direction, and analysis staying free of presentation.

harness/report/ is layered from pure to I/O; a module may import only from layers below its
own. Formatters and figures never reach a renderer (so a chart or a cell can be reused by any
rendering), and the numbers modules never import the report (so they stay pure pandas).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "harness" / "report"
#: Lowest first. Same-layer modules do not import each other either.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("figures",),
    ("model",),
    ("sections", "cost", "measured"),
    ("build",),
    ("page_html", "page_text", "page_json"),
    ("load",),
)
RENDERERS = {"page_html", "page_text", "page_json", "load"}
#: Modules that compute numbers only: nothing from the report, no formatting. The projection
#: is a package: each of its computing modules is held to this (its render module spells its
#: own tables, through harness.fmt, and imports nothing from the report either).
NUMBERS = (
    "analysis", "attribution", "memory_model", "energy",
    *(f"projection/{p.stem}" for p in sorted((ROOT / "harness" / "projection").glob("*.py"))
      if p.stem not in ("__init__", "render")),
)  # fmt: skip


def report_imports(source: str) -> set[str]:
    """The harness.report modules ``source`` imports, anywhere in it (lazy imports count):
    ``harness.report`` itself for the package, ``harness.report.fmt`` for a module of it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "harness":
                names = [f"harness.{a.name}" for a in node.names]
            elif node.module == "harness.report":
                names = [f"harness.report.{a.name}" for a in node.names]
                names = [n if (PACKAGE / f"{n.rsplit('.', 1)[1]}.py").is_file() else
                         "harness.report" for n in names]  # fmt: skip
            else:
                names = [node.module]
        else:
            continue
        found |= {n for n in names if n == "harness.report" or n.startswith("harness.report.")}
    return found


def layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if module in names)


def test_every_module_of_the_package_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == {m for names in LAYERS for m in names}


@pytest.mark.parametrize("module", [m for names in LAYERS for m in names])
def test_a_module_imports_only_from_layers_below(module):
    imported = report_imports((PACKAGE / f"{module}.py").read_text())
    assert "harness.report" not in imported, f"{module} imports the package's entry points"
    for target in imported:
        name = target.rsplit(".", 1)[1]
        assert layer(name) < layer(module), f"report.{module} imports report.{name}"


def test_figures_import_no_renderer():
    imported = {t.rsplit(".", 1)[1] for t in report_imports((PACKAGE / "figures.py").read_text())}
    assert not imported & RENDERERS


def test_the_formatters_sit_below_the_report():
    """harness.fmt serves compare, the projection and the report: it imports none of them."""
    source = (ROOT / "harness" / "fmt.py").read_text()
    assert not report_imports(source)
    tree = ast.parse(source)
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in modules if m.startswith("harness.") and m != "harness"}
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not names & {"compare", "project", "projection", "report"}


@pytest.mark.parametrize("module", NUMBERS)
def test_numbers_modules_import_nothing_from_the_report(module):
    source = (ROOT / "harness" / f"{module}.py").read_text()
    assert not report_imports(source)
    tree = ast.parse(source)
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert not defined & {"fmt_value", "point_label", "label_columns"}


def test_no_module_of_the_projection_imports_the_report():
    """Not even its rendering: the report draws the projection, never the reverse."""
    for path in (ROOT / "harness" / "projection").glob("*.py"):
        assert not report_imports(path.read_text()), path.name


def test_the_check_sees_each_way_of_importing():
    """Planted imports, one per spelling: the check above would catch each."""
    assert report_imports("from harness.report import figures") == {"harness.report.figures"}
    assert report_imports("from harness.report import render_html") == {"harness.report"}
    assert report_imports("from harness import report") == {"harness.report"}
    assert report_imports("import harness.report.page_html") == {"harness.report.page_html"}
    lazy = "def f():\n    from harness.report.load import load_report\n"
    assert report_imports(lazy) == {"harness.report.load"}
    assert report_imports("from harness import analysis, store") == set()
