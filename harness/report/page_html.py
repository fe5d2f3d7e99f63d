"""The HTML page: one self-contained file (inline CSS, plotly.js once, a sort script).

:func:`render_html` turns a :class:`~harness.report.model.Report` into a string; writing it is
:func:`harness.report.load.render_report`'s job. The page embeds plotly.js once (about 4.8 MB),
so it opens on an air-gapped cluster or from an e-mail attachment; it loads nothing from the
network. Tables marked sortable sort on click: numbers by their raw value (``data-v``), text
in locale order, blanks last.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import plotly.io as pio

from harness.report.model import Report, Table

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:26px}
h2{margin:36px 0 8px;font-size:20px;border-bottom:1px solid #dde;padding-bottom:4px}
.meta{color:#667;font-size:13px}
.notes{background:#fff7e0;border:1px solid #f0d48a;border-radius:6px;padding:8px 16px;margin:16px 0}
.notes li{margin:4px 0}
.quiet{color:#667;font-size:13px;margin:6px 0}
.answer{background:#eef5ff;border:1px solid #b9d3f5;border-radius:6px;padding:8px 16px;
margin:16px 0}
.answer p{margin:6px 0;font-size:15px}
.measured td:first-child{color:#556;width:12%;white-space:nowrap}
.card{background:#fff;border:1px solid #dde;border-radius:8px;padding:12px 16px;margin:12px 0}
.plot{background:#fff;border:1px solid #dde;border-radius:8px;margin:12px 0;padding:4px}
table{border-collapse:collapse;font-size:13px;background:#fff;width:100%}
th,td{border:1px solid #e2e4ea;padding:4px 8px;text-align:left;vertical-align:top}
td{white-space:pre-wrap}
th{background:#eef0f5}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" ▲"}
table.sortable th[aria-sort=descending]::after{content:" ▼"}
.headline td:first-child{color:#556;width:34%}
.headline td:last-child{font-weight:600}
.scroll{max-height:640px;overflow:auto;border:1px solid #dde;border-radius:8px}
nav a{margin-right:12px;font-size:13px}
"""


# Sorting: numbers by their raw value (data-v), text by locale order; blanks always last.
_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col];
        var v = cell.getAttribute("data-v");
        if (v === null || v === "") { return null; }
        var n = Number(v);
        return isNaN(n) ? v : n;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null) { return y === null ? 0 : 1; }
        if (y === null) { return -1; }
        var c = (typeof x === "number" && typeof y === "number") ? x - y
              : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def render_html(report: Report) -> str:
    """The whole page as one string: inline CSS, plotly.js once, figures, tables, sort script."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>distrinews {esc(report.kind.lower())} report: {esc(report.title)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{esc(report.kind)} report: {esc(report.title)}</h1>",
        f'<div class="meta">generated {esc(report.generated_at)} by distrinews-bench</div>',
    ]
    nav = " ".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in report.sections)
    parts.append(f"<nav>{nav}</nav>")
    # The first screen: what was measured, then how well it scaled and why, then anything
    # wrong; expected absences (a CPU run has no GPU telemetry) are a quiet line, not a warning.
    if report.measured is not None:
        parts.append('<h2 id="measured">What was measured</h2>')
        parts.append(_table_html(report.measured, css="measured"))
    if report.answer:
        lines = "".join(f"<p>{esc(a)}</p>" for a in report.answer)
        parts.append(f'<div class="answer" id="answer">{lines}</div>')
    if report.notes:
        items = "".join(f"<li>{esc(n)}</li>" for n in report.notes)
        parts.append(f'<div class="notes" id="notes"><ul>{items}</ul></div>')
    for note in report.quiet_notes:
        parts.append(f'<p class="quiet">{esc(note)}</p>')
    parts.append('<h2 id="headline">Headline</h2>')
    parts.append(_table_html(report.headline, css="headline"))
    plotly_included = False
    for section in report.sections:
        parts.append(f'<h2 id="{esc(section.id)}">{esc(section.title)}</h2>')
        if section.intro:
            parts.append(f"<p>{esc(section.intro)}</p>")
        for i, fig in enumerate(section.figures):
            div = pio.to_html(
                fig,
                full_html=False,
                include_plotlyjs=not plotly_included,  # the library once, inline
                div_id=f"fig-{section.id}-{i}",
                config={"displaylogo": False, "responsive": True},
                validate=False,
            )
            plotly_included = True
            parts.append(f'<div class="plot" data-figure="{esc(section.id)}">{div}</div>')
        for table in section.tables:
            parts.append(_table_html(table))
    parts.append(f"</main><script>{_SORT_JS}</script></body></html>")
    return "\n".join(parts)


def _table_html(table: Table, css: str = "") -> str:
    esc = html.escape
    classes = " ".join(c for c in (css, "sortable" if table.sortable else "") if c)
    head = "".join(f'<th scope="col">{esc(c)}</th>' for c in table.columns)
    body = []
    for i, row in enumerate(table.rows):
        raw = table.sort_values[i] if table.sort_values else row
        cells = "".join(
            f'<td data-v="{esc(_sort_attr(v))}">{esc(t)}</td>'
            if table.sortable
            else f"<td>{esc(t)}</td>"
            for t, v in zip(row, raw, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    head_html = f"<thead><tr>{head}</tr></thead>" if any(table.columns) else ""
    out = f'<table class="{classes}">{head_html}<tbody>{"".join(body)}</tbody></table>'
    return f'<div class="scroll">{out}</div>' if len(table.rows) > 25 else out


def _sort_attr(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value))
    return str(value)
