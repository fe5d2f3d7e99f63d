"""The scaling report: one self-contained HTML page, a text digest and a JSON object per sweep.

The package, from pure to I/O (a test holds the direction: ``figures`` imports no renderer,
and :mod:`harness.analysis` nothing from here). Every formatter (numbers, intervals,
percentages, the labels of points, curves and groups) lives below the package, in
:mod:`harness.fmt`, because compare and the projection spell numbers the same way and must not
import the report:

- :mod:`~harness.report.figures` -- pure plotly builders: frames in, ``go.Figure`` (or None) out;
- :mod:`~harness.report.model` -- the page model (:class:`Report`, :class:`Section`,
  :class:`Table`) and the loading decisions (which metrics, which runs' side files);
- :mod:`~harness.report.sections` and :mod:`~harness.report.cost` -- each section of the page;
  :mod:`~harness.report.measured` -- what was measured and the first screen's answer;
- :mod:`~harness.report.build` -- :func:`build_report`: frames in, a Report out;
- :mod:`~harness.report.page_html`, :mod:`~harness.report.page_text`,
  :mod:`~harness.report.page_json` -- the renderings;
- :mod:`~harness.report.load` -- the only disk access: :func:`load_report`,
  :func:`render_report` (writes the HTML atomically), :func:`render_json`.

``distrinews-bench report RESULTS_DIR [--format html|text|json]`` and the end of a sweep call
the entry points re-exported here.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Entry point -> the module that defines it. Loaded on first use (PEP 562), so compare and
#: project, which need only :mod:`harness.fmt`, do not import plotly.
_ENTRY_POINTS = {
    "Report": "model",
    "Section": "model",
    "Table": "model",
    "build_json": "page_json",
    "build_report": "build",
    "is_report_html": "load",
    "load_report": "load",
    "render_html": "page_html",
    "render_json": "load",
    "render_report": "load",
    "render_text": "page_text",
}
__all__ = sorted(_ENTRY_POINTS)


def __getattr__(name: str) -> Any:
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module 'harness.report' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"harness.report.{_ENTRY_POINTS[name]}"), name)
    globals()[name] = value  # once: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ENTRY_POINTS})
