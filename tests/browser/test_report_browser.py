"""The HTML report opened in a real headless Chromium (tests/browser/conftest.py)."""

from __future__ import annotations

import json

from harness import report, store
from tests.browser.conftest import BROWSER_MARKS, open_page
from tests.helpers_results import FakeSweep, write_sweep

pytestmark = BROWSER_MARKS


def test_full_report_renders_every_chart_and_sorts(browser, tmp_path):
    sweep = write_sweep(
        tmp_path,
        FakeSweep(
            world_sizes=(1, 2, 4, 8),
            batches=(16, 32, 64),
            precisions=("fp32", "bf16"),
            compiles=(False, True),
            bucket_caps=(25.0, 100.0),
            nccl_envs=("", "NCCL_ALGO=Tree"),
            repeats=3,
        ),
    )
    rep = report.load_report(sweep)
    html = report.render_report(sweep, tmp_path / "report.html")
    page, errors, requests = open_page(browser, html)
    expected = [f"fig-{s.id}-{i}" for s in rep.sections for i in range(len(s.figures))]
    assert len(expected) >= 9
    for div in expected:
        page.wait_for_selector(f"#{div} .main-svg", timeout=30_000)
        assert page.locator(f"#{div}.js-plotly-plot .main-svg").count() >= 1, div
    # Data actually drawn, not just empty axes.
    assert page.locator("#fig-scaling-0 .scatterlayer .trace").count() >= 2
    assert page.locator("#fig-knobs-0 .hm image").count() >= 1
    assert page.locator(".js-plotly-plot .main-svg").count() >= len(expected)

    # Click-to-sort on the all-points table: by throughput, ascending then descending.
    table = page.locator("#points ~ div table.sortable, #points ~ table.sortable").first
    # "samples/s [interval, covers 50-75%]": 3 repeats ([min, max], 75%), 2 where one failed.
    names = [t.strip() for t in table.locator("th").all_inner_texts()]
    col = next(i for i, t in enumerate(names) if t.startswith("samples/s [interval, covers "))
    assert names[col] == "samples/s [interval, covers 50-75%]"
    header = table.locator("th", has_text=names[col])

    def column() -> list[float]:
        cells = table.locator(f"tbody tr td:nth-child({col + 1})")
        values = [cells.nth(i).get_attribute("data-v") for i in range(cells.count())]
        return [float(v) for v in values if v]

    header.click()
    up = column()
    assert up == sorted(up) and len(up) > 10
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    down = column()
    assert down == sorted(down, reverse=True)

    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 50_000
    assert errors == [], errors
    assert all(u.startswith(("file://", "data:", "blob:", "about:")) for u in requests), requests
    page.close()


def test_empty_and_all_failed_reports_load_cleanly(browser, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "ledger.jsonl").write_text("")
    page, errors, _ = open_page(browser, report.render_report(empty))
    assert "no finished points" in page.inner_text("#notes")
    assert errors == []
    page.close()

    failed = write_sweep(tmp_path / "failed", FakeSweep(world_sizes=(1, 2), batches=(16,)))
    rows = store.read_ledger(failed)
    for r in rows:
        r.update(status="oom", reason="CUDA out of memory", samples_per_s=None)
    store.ledger_path(failed).write_text("".join(json.dumps(r) + "\n" for r in rows))
    page, errors, _ = open_page(browser, report.render_report(failed))
    assert "runs failed" in page.inner_text("#notes")
    assert page.locator("#failures ~ div table tbody tr, #failures ~ table tbody tr").count() >= 1
    assert errors == []
    page.close()


def test_why_section_draws_its_stacked_bars_and_the_ceiling(browser, tmp_path):
    sweep = write_sweep(tmp_path, FakeSweep(world_sizes=(1, 2, 4), batches=(32,)))
    page, errors, _ = open_page(browser, report.render_report(sweep, tmp_path / "why.html"))
    for div in ("fig-why-0", "fig-why-1"):
        page.wait_for_selector(f"#{div} .main-svg", timeout=30_000)
    # six stacked parts (bars) plus the total marker on the first chart; on the second, the
    # ceiling, the buckets at it, the in-step all-reduce, what it exposed and beyond
    assert page.locator("#fig-why-0 .barlayer .trace").count() == 6
    assert page.locator("#fig-why-1 .barlayer .trace").count() == 5
    assert "points of efficiency are lost" in page.inner_text("body")
    assert errors == []
    page.close()
