"""The scaling projection: predict a DDP training step at 8...1024 GPUs, with honest intervals.

One room, its modules, imported in this order:

- :mod:`~harness.projection.nccl` — NCCL's own cost model of an all-reduce (algorithm and
  protocol choice, latency and bandwidth terms), transcribed from NVIDIA/nccl's
  ``src/graph/tuning.cc`` with the source lines cited;
- :mod:`~harness.projection.fabrics` — the machines (DGX-1 ... DGX B200, PCIe servers on
  Ethernet, cloud instances), every value with its source, and the stated efficiency ranges;
- :mod:`~harness.projection.model` — the DDP step: compute + host + exposed all-reduce +
  straggler, bucket readiness, order statistics (pure numpy, vectorised over draws);
- :mod:`~harness.projection.model_error` — the model's own error, measured on the published
  tables, as one more drawn input of every interval;
- :mod:`~harness.projection.inputs` and :mod:`~harness.projection.project` — inputs from plain
  numbers or from a sweep (each with its uncertainty and source), the Monte Carlo over them, the
  no-peeking feeds, the verdicts;
- :mod:`~harness.projection.render` (text, Markdown, JSON), :mod:`~harness.projection.command`
  (``distrinews-bench project``) and :mod:`~harness.projection.validate` (the published scaling
  tables the model is held against, ``project --validate``).

docs/projection.md is the user's page.
"""

from harness.projection.command import DEFAULT_GPUS, fabric_for, run_project
from harness.projection.project import Projection
from harness.projection.render import (
    HEADER,
    TABLE_COLUMNS,
    input_lines,
    render,
    table_rows,
    written_by_us,
)

__all__ = [
    "DEFAULT_GPUS",
    "HEADER",
    "TABLE_COLUMNS",
    "Projection",
    "fabric_for",
    "input_lines",
    "render",
    "run_project",
    "table_rows",
    "written_by_us",
]
