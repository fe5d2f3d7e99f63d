"""The report's I/O: read a sweep folder into a Report, write the HTML page, print the JSON.

The only module of :mod:`harness.report` that touches disk. :func:`load_report` reads the
ledger, env.json and the few side files the page draws (telemetry and per-rank step times of
the runs :mod:`harness.report.model` picks, serving.jsonl, the max-batch searches and trials,
which logs folders exist) and the default projection, then builds the Report;
:func:`render_report` writes it atomically (``distrinews-bench report RESULTS_DIR`` and the end
of a sweep call it); :func:`render_json` is ``report --format json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from distrinews import layout
from distrinews.errors import UserError
from harness import analysis, max_batch, outputs, serving_store, store
from harness.outputs import OutputKind
from harness.report import page_html, page_json
from harness.report.build import build_report
from harness.report.model import Report, straggler_points, telemetry_points


def load_report(sweep_dir: Path) -> Report:
    """Read a sweep folder (ledger, env.json, a few telemetry and record files) into a Report."""
    sweep_dir = sweep_folder(sweep_dir)
    frame = analysis.load_frame(sweep_dir)
    env = analysis.load_env(sweep_dir)
    telemetry = analysis.load_telemetry(sweep_dir, telemetry_points(frame)) if len(frame) else None
    rank_times = (
        analysis.load_rank_step_times(sweep_dir, straggler_points(frame)) if len(frame) else {}
    )
    serving = (
        serving_store.read_serving_rows(sweep_dir)
        if serving_store.serving_path(sweep_dir).is_file()
        else []
    )
    trials_dir = sweep_dir / layout.MAX_BATCH_DIR
    log_dirs = {
        d
        for d in (frame["point_dir"].dropna().unique() if len(frame) else ())
        if (sweep_dir / str(d) / layout.LOGS_DIR).is_dir()
    }
    return build_report(
        frame,
        env=env,
        telemetry=telemetry,
        rank_times=rank_times,
        title=sweep_dir.name,
        serving=serving,
        max_batch_rows=max_batch.read_results(sweep_dir),
        trials=analysis.load_frame(trials_dir) if trials_dir.is_dir() else None,
        log_dirs=log_dirs,
        projection=_load_projection(sweep_dir, frame),
    )


def _load_projection(sweep_dir: Path, frame: pd.DataFrame) -> Any:
    """The default projection of a sweep (to 1024 GPUs on dgx-h100 past the measured points;
    a CPU sweep only on its own host), or None when the sweep cannot feed one: no ok N = 1
    point, or no compute-only step time (sweeps recorded before the worker measured it)."""
    from harness import projection

    if frame.empty or "compute_step_time_s" not in frame.columns:
        return None
    ok = frame["status"] == "ok"
    if not (ok & pd.to_numeric(frame["compute_step_time_s"], errors="coerce").notna()).any():
        return None
    try:
        return projection.run_project(
            sweep_dir, gpus=None, gpus_per_node=None, fabric=None, busbw_gbps=None, pure=None
        )
    except UserError:
        return None


def sweep_folder(sweep_dir: Path) -> Path:
    """``sweep_dir`` as a Path, refused (UserError) when it is not a sweep's results folder.

    A results root (sweeps inside) names them; a folder holding no ledger, sweep.json or
    serving ledger is not results at all: refused, as export and compare do.
    """
    sweep_dir = Path(sweep_dir)
    if sweep_dir.is_dir() and not store.ledger_path(sweep_dir).is_file():
        inside = sorted(p.name for p in sweep_dir.iterdir() if store.ledger_path(p).is_file())
        if inside:  # a results root, not one sweep: say which sweeps it holds
            raise UserError(
                f"{sweep_dir}: not a sweep folder; it holds the sweeps {', '.join(inside)} -- "
                f"pass one of them, e.g. {sweep_dir / inside[0]}"
            )
        # A sweep just started has sweep.json and no ledger yet; a bench-serve folder has
        # serving.jsonl. Anything else is not results: refuse, as export and compare do.
        markers = (layout.SWEEP_JSON, layout.SERVING_LEDGER)
        if not any((sweep_dir / m).is_file() for m in markers):
            raise UserError(
                f"{sweep_dir}: not a sweep folder (no {layout.LEDGER_NAME}, {layout.SWEEP_JSON} or "
                f"{layout.SERVING_LEDGER}); pass results/<sweep>"
            )
    return sweep_dir


_TEXT_HEAD = re.compile(rb"\w+ report: [^\n]*  \(generated \d{4}-\d\d-\d\dT[\d:]+Z\)\n")
#: The top-level keys of ``report --format json`` (page_json.build_json).
_JSON_KEYS = frozenset({"title", "headline", "curves", "decomposition", "definitions"})


def is_report_html(head: bytes) -> bool:
    """Whether a file's first bytes are a report this package rendered (it may be replaced):
    a scaling report or a serving one (page_html titles them by the Report's kind)."""
    return head.startswith(b"<!DOCTYPE html>") and any(
        b"<title>distrinews " + kind + b" report" in head for kind in (b"scaling", b"serving")
    )


def is_report_output(path: Path, head: bytes) -> bool:
    """Whether the file at ``path`` is a report in any format (HTML, text, JSON) this package
    wrote: ``report -o`` may replace it, whichever ``--format`` wrote it."""
    if is_report_html(head) or _TEXT_HEAD.match(head):
        return True
    if not head.lstrip().startswith(b"{"):
        return False
    data = outputs.read_small(path)
    try:
        body = json.loads(data) if data is not None else None
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and set(body) >= _JSON_KEYS


#: What ``report -o`` writes: any earlier report may be replaced, nothing else.
REPORT_KIND = OutputKind(name="report", recognizes=is_report_output)
#: The sweep folder's own report.html (no -o): it belongs to the sweep, whatever it holds now.
SWEEP_REPORT_KIND = OutputKind(name="HTML report", recognizes=lambda _path, _head: True)


def render_report(sweep_dir: Path, out_path: Path | None = None) -> Path:
    """Render ``sweep_dir`` to one self-contained HTML file (atomically); return its path.

    ``out_path`` defaults to ``sweep_dir/report.html``. Bad input (missing folder, corrupt
    ledger) raises UserError with a one-line reason.
    """
    sweep_dir = Path(sweep_dir)
    out = sweep_dir / layout.REPORT_HTML if out_path is None else Path(out_path)
    kind = SWEEP_REPORT_KIND if out_path is None else REPORT_KIND
    outputs.check_output(out, kind)  # before the work: a bad -o costs nothing
    return outputs.write_output(out, page_html.render_html(load_report(sweep_dir)), kind)


def render_json(sweep_dir: Path) -> str:
    """The JSON report of a sweep folder (one object, pretty-printed)."""
    sweep_dir = sweep_folder(sweep_dir)
    frame = analysis.load_frame(sweep_dir)
    env = analysis.load_env(sweep_dir)
    return page_json.dumps(page_json.build_json(frame, title=sweep_dir.name, env=env))
