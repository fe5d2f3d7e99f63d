"""The README is a front door that stays true: short, every link inside the repository and
resolving, the test command CI runs, the CPU-only torch wheel, a picture that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
#: Markdown links and images: [text](target) and ![alt](target).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def links(page: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(page.read_text())]


def test_the_readme_is_a_front_door_not_a_manual():
    assert len(README.read_text().splitlines()) <= 250


def test_every_link_of_the_readme_and_docs_stays_inside_the_repository_and_resolves():
    for page in PAGES:
        for target in links(page):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT), f"{page.name}: {target} is outside the repository"
            assert path.exists(), f"{page.name}: {target} does not exist"


def test_the_readme_names_nothing_outside_the_repository_but_the_data_beside_it():
    text = README.read_text()
    assert "DESIGN.md" not in text
    # ../shared/data is where the real AG News files sit; nothing else above the root.
    outside = set(re.findall(r"\.\./[\w./-]+", text)) - {
        "../shared/data",
        "../shared/data/ag_news_test.csv",
        "../shared/data/distilbert-base-uncased-vocab.txt",
    }
    assert not outside, outside


def test_the_readme_states_the_test_command_ci_runs_and_the_cpu_wheel():
    text = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = 'python -m pytest -q -n 3 --dist worksteal -m "not scenario"'
    assert f"\n{command}\n" in ci and f"\n{command}\n" in text
    # ... and CI runs the scenarios that command leaves out, as the README says.
    scenarios = "python -m pytest -q -n 3 --dist worksteal -m scenario"
    assert f"\n{scenarios}\n" in ci and f"`{scenarios}`" in text
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "![" in text and any(t.endswith(".png") for t in links(README))
