"""Screenshots of a rendered report in headless Chromium: its first screen and each chart.

The README's picture of a report and the before/after shots of a report change come from
here, so they show what a reader's browser shows (plotly drawn, fonts laid out), not a mock::

    distrinews-bench sweep cpu-smoke --results /tmp/s --no-progress
    python -m harness.tools.screenshot /tmp/s/cpu-smoke/report.html reports/ --prefix after

writes ``reports/after-first-screen.png`` (the 1280 x 900 view a reader opens on) and one
``reports/after-<figure id>.png`` per chart (``fig-scaling-0`` is the throughput chart,
``fig-scaling-1`` the efficiency chart, ...). It drives Debian's ``/usr/bin/chromium`` through
Playwright (``--chromium`` or ``$DISTRINEWS_CHROMIUM`` for another); it never downloads a
browser (``playwright install`` is not needed). The page loads nothing from the network.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

#: Debian's Chromium, as the browser tests use it (tests/browser/test_report_browser.py).
DEFAULT_CHROMIUM = os.environ.get("DISTRINEWS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
#: The first screen: a laptop browser window.
VIEWPORT = {"width": 1280, "height": 900}


def screenshots(report: Path, out_dir: Path, *, prefix: str, chromium: str) -> list[Path]:
    """Write the first screen and every chart of ``report`` under ``out_dir``; return paths."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(report.resolve().as_uri(), wait_until="load", timeout=60_000)
            divs = page.locator("div.js-plotly-plot").evaluate_all("els => els.map(e => e.id)")
            for div in divs:
                page.wait_for_selector(f"#{div} .main-svg", timeout=30_000)
            first = out_dir / f"{prefix}-first-screen.png"
            page.screenshot(path=str(first))
            written.append(first)
            for div in divs:
                shot = out_dir / f"{prefix}-{div}.png"
                page.locator(f"#{div}").screenshot(path=str(shot))
                written.append(shot)
        finally:
            browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.tools.screenshot", description=__doc__.split("\n")[0]
    )
    parser.add_argument("report", type=Path, help="a report.html")
    parser.add_argument("out_dir", type=Path, help="folder for the PNG files")
    parser.add_argument("--prefix", default="report", help="file name prefix (before, after)")
    parser.add_argument("--chromium", default=DEFAULT_CHROMIUM, help="the browser binary")
    args = parser.parse_args(argv)
    for path in screenshots(args.report, args.out_dir, prefix=args.prefix, chromium=args.chromium):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
