"""Pins the shape of ``report --format text`` and ``--format json``: what a script reading them
may rely on (block titles and order, headline rows, table headers, JSON keys and their order).

The values are the fabricated sweep's; the shape is what must not drift when the report's
modules move (the byte-for-byte golden check of the package split diffed against this too).
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from harness import analysis
from harness.cli import cli
from tests.helpers_results import FakeSweep, write_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    spec = FakeSweep(name="shape", world_sizes=(1, 2, 4), batches=(16, 32), repeats=2)
    return write_sweep(tmp_path_factory.mktemp("shape"), spec)


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, ["report", *args])
    assert result.exit_code == 0, result.output
    return result.output


def blocks(text: str) -> list[tuple[str, list[str]]]:
    """(title, lines up to the next title) for each block titled by a line of dashes."""
    lines = text.splitlines()
    starts = [i - 1 for i, line in enumerate(lines) if line and set(line) == {"-"}]
    ends = [*starts[1:], len(lines)]
    pairs = zip(starts, ends, strict=True)
    return [(lines[s], [x for x in lines[s + 2 : e] if x]) for s, e in pairs]


def test_text_report_shape(sweep):
    text = run(str(sweep), "--format", "text")
    first, blank, *rest = text.splitlines()
    assert re.fullmatch(
        r"Scaling report: shape  \(generated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", first
    )
    # What was measured comes first, then the answer (how well, why), then the warnings.
    assert blank == "" and rest[0] == "What was measured"
    titled = blocks(text)
    assert [t for t, _ in titled] == [
        "What was measured",
        "Headline",
        "Scaling",
        "Why efficiency drops",  # its title once: the sentence, then the table
        "Failures",
        "What the numbers mean",  # the definitions the why intro promises
    ]
    measured = [re.split(r"\s{2,}", line)[0] for line in titled[0][1]]
    assert measured[: measured.index("load") + 1] == [
        "devices", "backend", "hosts", "model", "data", "sequence", "precision", "batch",
        "window", "machine", "load",
    ]  # fmt: skip
    answer = measured[measured.index("load") + 1 :]
    # One sentence per curve (the fastest first), the why, then the warnings.
    assert answer[0].startswith("4 GPUs against 1, per_device_batch=")
    assert " speedup " in answer[0] and " scaling efficiency " in answer[0]
    why = next(i for i, line in enumerate(answer) if line.startswith("Why: "))
    assert why > 0 and answer[why + 1].startswith("! ") and "runs failed" in answer[why + 1]
    headline = [re.split(r"\s{2,}", line)[0] for line in titled[1][1]]
    assert headline == [
        "points / runs",
        "runs by status",
        "largest GPU count",
        "fastest configuration at N=4",
        "its throughput (samples/s)",
        "its samples/s per GPU",
        "its speedup (vs N=1; ideal 4×)",
        "its scaling efficiency (weak, vs N=1)",
        "its MFU",
    ]
    # A table's header is its first line with two or more columns (the why intro comes first).
    header = {
        t: next(cells for x in lines if len(cells := re.split(r"\s{2,}", x)) > 2)
        for t, lines in titled[2:-1]
        if len(lines) > 1
    }
    assert header["Scaling"] == ["curve", "N0", "eff. N=2", "eff. N=4", "samples/s at largest N"]
    assert header["Why efficiency drops"] == [
        "curve", "N", "efficiency", "pp lost", "compute slowdown pp", "contention pp",
        "exposed all-reduce pp", "data wait pp", "straggler wait pp", "unexplained pp",
    ]  # fmt: skip
    assert header["Failures"] == ["status", "point", "repeat", "reason", "logs"]
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_json_report_shape(sweep):
    body = json.loads(run(str(sweep), "--format", "json"))
    assert list(body) == [
        "title", "measured", "answer", "headline", "curves", "decomposition", "definitions",
    ]  # fmt: skip
    assert body["title"] == "shape"
    assert body["measured"]["device_unit"] == "GPU" and body["measured"]["device_counts"] == [
        1, 2, 4,
    ]  # fmt: skip
    assert body["answer"][0].startswith("4 GPUs against 1, per_device_batch=")
    assert list(body["headline"]) == [
        "points", "runs", "runs_by_status", "largest_world_size", "best_config_key",
        "samples_per_s", "samples_per_s_lo", "samples_per_s_hi", "samples_per_s_level",
        "base_world_size", "speedup", "speedup_lo", "speedup_hi", "speedup_level", "efficiency",
        "efficiency_lo", "efficiency_hi", "efficiency_level", "mfu", "why",
    ]  # fmt: skip
    curve_keys = [
        "curve_id", "curve", "scaling_mode", "world_size", "base_world_size", "config_key",
        "samples_per_s", "samples_per_s_lo", "samples_per_s_hi", "samples_per_s_level", "speedup",
        "speedup_lo", "speedup_hi", "speedup_level", "efficiency", "efficiency_lo",
        "efficiency_hi", "efficiency_level",
    ]  # fmt: skip
    assert body["curves"] and all(list(c) == curve_keys for c in body["curves"])
    assert all(c["curve"].startswith("weak: ") for c in body["curves"])
    decomposition_keys = [
        *analysis.CONFIG_COLUMNS, "config_key", "curve_id", "scaling_mode", "base_world_size",
        "efficiency", "loss_pp", "total_loss_pp", "checks",
    ]  # fmt: skip
    assert body["decomposition"]
    assert all(list(r) == decomposition_keys for r in body["decomposition"])
    assert all(isinstance(v, str) for v in body["definitions"].values())
