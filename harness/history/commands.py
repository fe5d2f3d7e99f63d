"""The four ``distrinews-bench history`` commands as typed functions (the CLI only parses).

- :func:`ingest` -- ``history ingest RESULTS_DIR...``: store sweep folders;
- :func:`changes` -- ``history changes``: every change point of every series;
- :func:`check` -- ``history check RESULTS_DIR``: ingest one sweep, say whether it opens a
  regression (the CI verdict);
- :func:`report` -- ``history report [-o FILE]``: the HTML page;
- :func:`ingest_after_sweep` -- what a finished sweep calls to ingest itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from distrinews.errors import UserError
from harness import outputs
from harness.history import changes as changes_mod
from harness.history import detect, render, schema
from harness.history import ingest as ingest_mod


def ingest(db: str | None, paths: Iterable[Path]) -> list[ingest_mod.IngestResult]:
    """Store every sweep folder named (all are checked before the first is written)."""
    folders = ingest_mod.sweep_folders(paths)
    batches = [(f, ingest_mod.read_sweep(f)) for f in folders]  # bad input: nothing opened yet
    st = schema.open_store(db, create=True)
    try:
        return [ingest_mod.write_batch(st, b, folder=f) for f, b in batches]
    finally:
        st.close()


def describe_ingest(results: list[ingest_mod.IngestResult], where: str) -> str:
    lines = [
        f"{r.folder}: {r.added} run(s) added"
        + (f", {r.known} already stored" if r.known else "")
        + ("" if r.new_sweep else " (a sweep the store knew)")
        for r in results
    ]
    return "\n".join([*lines, f"history: {where}"]) + "\n"


def changes(db: str | None, *, metric: str, fmt: str, max_pvalue: float = detect.MAX_PVALUE) -> str:
    """``history changes`` as text, Markdown or JSON."""
    changes_mod.check_metric(metric)
    st = schema.open_store(db)
    try:
        series, found = changes_mod.find_changes(st, metric, max_pvalue=max_pvalue)
        return render.render_changes(found, series, metric=metric, fmt=fmt, where=st.where)
    finally:
        st.close()


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What ``history check`` found."""

    text: str
    """Markdown for a CI job summary."""
    regressed: bool


def check(
    db: str | None, folder: Path, *, metric: str, max_pvalue: float = detect.MAX_PVALUE
) -> Verdict:
    """Ingest one sweep folder and judge it against its series' history."""
    changes_mod.check_metric(metric)
    (folder,) = _one_sweep(folder)
    batch = ingest_mod.read_sweep(folder)
    st = schema.open_store(db, create=True)
    try:
        ingest_mod.write_batch(st, batch, folder=folder)
        with st.read() as conn:
            sweep_id = conn.execute(
                sa.select(schema.sweeps.c.id).where(schema.sweeps.c.uid == batch.uid)
            ).scalar_one()
            ids = (
                conn.execute(
                    sa.select(schema.runs.c.series_id)
                    .where(schema.runs.c.sweep_id == sweep_id)
                    .distinct()
                )
                .scalars()
                .all()
            )
        _, found = changes_mod.find_changes(st, metric, max_pvalue=max_pvalue, series_ids=ids)
    finally:
        st.close()
    here = [c for c in found if c.sweep_id == sweep_id]
    text = render.render_check(
        here, sweep=batch.name, folder=str(folder), n_series=len(ids), metric=metric
    )
    return Verdict(text=text, regressed=any(c.kind == "regression" for c in here))


def _one_sweep(folder: Path) -> list[Path]:
    found = ingest_mod.sweep_folders([folder])
    if len(found) != 1:
        raise UserError(
            f"{folder}: holds {len(found)} sweeps; history check judges one -- pass "
            f"{found[0]} or another"
        )
    return found


def report(db: str | None, output: Path | None, *, metric: str) -> Path:
    """Write the history page (atomically); never over a file it did not write."""
    changes_mod.check_metric(metric)
    st = schema.open_store(db)
    try:
        out = Path(output) if output is not None else _default_page(st)
        outputs.check_output(out, render.HISTORY_PAGE_KIND)  # before the work: costs nothing
        from harness.report.page_html import render_html

        series, found = changes_mod.find_changes(st, metric)
        page = render_html(render.build_page(st, series, found, metric=metric))
    finally:
        st.close()
    return outputs.write_output(out, page, render.HISTORY_PAGE_KIND)


def _default_page(st: schema.Store) -> Path:
    """history.html beside an SQLite store; ./history.html for a server."""
    if st.dialect == "sqlite":
        return Path(str(st.url.database)).with_name("history.html")
    return Path("history.html")


def store_for_sweep(results: Path) -> str:
    """The store a finished sweep ingests into: ``DISTRINEWS_HISTORY_DB``, else
    ``RESULTS/history.db`` beside its folder."""
    return os.environ.get(schema.ENV_VAR) or str(Path(results) / "history.db")


def ingest_after_sweep(sweep_dir: Path) -> str:
    """Ingest a finished sweep; returns the line to print. Raises UserError (the caller warns)."""
    db = store_for_sweep(Path(sweep_dir).parent)
    batch = ingest_mod.read_sweep(sweep_dir)
    st = schema.open_store(db, create=True)
    try:
        result = ingest_mod.write_batch(st, batch, folder=Path(sweep_dir))
    finally:
        st.close()
    return f"history: {result.added} run(s) added to {st.where}"
