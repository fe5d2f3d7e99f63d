"""The history page opened in a real headless Chromium (Debian's, driven by Playwright): a chart
per series, drawn; the change marked and labelled with what changed; the newest regression's
series first; nothing fetched from the network; no script error."""

from __future__ import annotations

from harness.history import commands
from tests.browser.conftest import BROWSER_MARKS, open_page
from tests.helpers_history import night_sweep
from tests.helpers_results import FakeSweep

pytestmark = BROWSER_MARKS


def test_history_page_draws_every_series_and_marks_the_changes(browser, tmp_path):
    # Two sweeps a night: the bf16 one regresses at night 6 (a driver upgrade), the fp32 one
    # improves at night 3 -- so bf16's series must come first.
    nights = []
    for n in range(10):
        bf16 = FakeSweep(name="bf16", world_sizes=(1, 2), batches=(16,), precisions=("bf16",),
                         failures=False)  # fmt: skip
        fp32 = FakeSweep(name="fp32", world_sizes=(1,), batches=(16,), precisions=("fp32",),
                         failures=False)  # fmt: skip
        nights.append(
            night_sweep(
                tmp_path / "a",
                n,
                spec=bf16,
                scale=0.8 if n >= 6 else 1.0,
                env={"driver": "580.65.06"} if n >= 6 else None,
            )
        )
        nights.append(night_sweep(tmp_path / "b", n, spec=fp32, scale=1.3 if n >= 3 else 1.0))
    db = str(tmp_path / "history.db")
    commands.ingest(db, nights)
    html = commands.report(db, tmp_path / "history.html", metric="samples_per_s")
    page, errors, requests = open_page(browser, html)
    figures = page.locator("div.plot .js-plotly-plot")
    assert figures.count() == 3
    for i in range(3):
        page.wait_for_selector(f"#fig-series-{i} .main-svg", timeout=30_000)
        # Runs drawn as points, on both panels (throughput and efficiency).
        assert page.locator(f"#fig-series-{i} .scatterlayer .trace").count() == 2
        assert page.locator(f"#fig-series-{i} .scatterlayer .point").count() >= 20
    # SVG text: text_content, not inner_text (which only HTML elements have).
    titles = [page.locator(f"#fig-series-{i} .gtitle").text_content() for i in range(3)]
    assert titles[0].startswith("N=2") or titles[0].startswith("N=1")
    assert "bf16" in titles[0] and "bf16" in titles[1] and "fp32" in titles[2]
    first = page.locator("#fig-series-0 .annotation-text").all_text_contents()
    assert any("regression -" in t and "driver: 570.124.06 -> 580.65.06" in t for t in first)
    assert page.locator("#fig-series-0 .shapelayer path").count() >= 1  # the dashed line
    last = page.locator("#fig-series-2 .annotation-text").all_text_contents()
    assert any(t.startswith("improvement +") for t in last)
    # The changes table: newest first, sortable.
    assert page.locator("table.sortable tbody tr").count() == 3
    assert page.locator("table.sortable tbody tr").first.inner_text().startswith("regression")
    assert not errors, errors
    assert all(url.startswith(("file:", "data:", "about:")) for url in requests), requests
