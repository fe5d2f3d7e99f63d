"""The report for a terminal: what was measured, the answer, notes, the headline, the key
tables and the definitions of their terms, as plain text."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from harness.report.model import Report, Section, Table

#: Sections the terminal shows (the charts' sections are for the HTML page), in page order.
TEXT_SECTIONS = ("scaling", "why", "energy", "max-batch", "serving", "failures", "skipped")
#: Sections whose intro is printed under their title (it says what the table means).
WITH_INTRO = ("why", "energy")
#: Width the definitions are wrapped to (term, then the text under it).
WIDTH = 100


def render_text(report: Report) -> str:
    """What was measured, the answer, notes, the headline and the key tables, then the
    definitions of the terms they use: plain text for a terminal."""
    out = [f"{report.kind} report: {report.title}  (generated {report.generated_at})", ""]
    if report.measured is not None:
        out.append(_table_text(report.measured, "What was measured"))
    # Prose stays on one line each (a terminal wraps it; a grep finds a whole sentence).
    for line in report.answer:
        out.append(line)
    if report.answer:
        out.append("")
    for note in report.notes:
        out.append(f"! {note}")
    for note in report.quiet_notes:
        out.append(f"  {note}")
    if report.notes or report.quiet_notes:
        out.append("")
    out.append(_table_text(report.headline, "Headline"))
    definitions = None
    for section in report.sections:
        if section.id == "definitions":
            definitions = section
        if section.id not in TEXT_SECTIONS:
            continue
        # Each section's title once: its intro (where it explains the table) under it, then
        # its tables without the title again.
        head = [section.title, "-" * len(section.title)]
        if section.intro and (section.id in WITH_INTRO or not section.tables):
            head.append(section.intro)
            head.append("")
        out.append("\n".join(head))
        for table in section.tables:
            out.append(_table_text(table, None))
    if definitions is not None:
        out.append(_definitions_text(definitions))
    return "\n".join(out).rstrip() + "\n"


def _wrap(text: str, indent: str = "") -> str:
    return textwrap.fill(text, width=WIDTH, subsequent_indent=indent, break_on_hyphens=False)


def _definitions_text(section: Section) -> str:
    """``term: definition`` paragraphs: the terms the tables above use, as the page has them."""
    lines = [section.title, "-" * len(section.title)]
    for table in section.tables:
        for term, text in table.rows:
            lines.append(_wrap(f"{term}: {text}", indent="    "))
    return "\n".join(lines) + "\n"


def _table_text(table: Table, title: str | None) -> str:
    columns = table.columns if any(table.columns) else ("",) * len(table.columns)
    widths = [len(c) for c in columns]
    for row in table.rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [title, "-" * len(title)] if title else []
    if any(table.columns):
        lines.append(line(columns))
    lines.extend(line(r) for r in table.rows)
    return "\n".join(lines) + "\n"
