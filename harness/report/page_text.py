"""The report for a terminal: headline, notes and the key tables as plain text."""

from __future__ import annotations

from collections.abc import Sequence

from harness.report.model import Report, Table


def render_text(report: Report) -> str:
    """The headline, notes, scaling and failures tables as plain text for a terminal."""
    out = [f"{report.kind} report: {report.title}  (generated {report.generated_at})", ""]
    for note in report.notes:
        out.append(f"! {note}")
    if report.notes:
        out.append("")
    out.append(_table_text(report.headline, "Headline"))
    for section in report.sections:
        if section.id == "why":
            out.append(f"{section.title}\n{'-' * len(section.title)}\n{section.intro}\n")
        if section.id in (
            "scaling", "why", "energy", "max-batch", "serving", "failures", "skipped"
        ):  # fmt: skip
            for table in section.tables:
                out.append(_table_text(table, section.title))
            if section.intro and (not section.tables or section.id == "energy"):
                out.append(f"{section.title}: {section.intro}\n")
    return "\n".join(out).rstrip() + "\n"


def _table_text(table: Table, title: str) -> str:
    columns = table.columns if any(table.columns) else ("",) * len(table.columns)
    widths = [len(c) for c in columns]
    for row in table.rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [title, "-" * len(title)]
    if any(table.columns):
        lines.append(line(columns))
    lines.extend(line(r) for r in table.rows)
    return "\n".join(lines) + "\n"
