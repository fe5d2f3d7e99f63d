"""The names of the files and folders inside a results folder: one home for all of them.

The worker writes some of these files and the harness writes and reads the rest, so the names
live here, in the workload package, which the harness imports (never the reverse). Every
writer and reader uses these constants; notes/contracts.md §4 draws the tree.

A sweep folder (``results/<sweep>/``)::

    ledger.jsonl  env.json  sweep.json  report.html  .lock (only while a sweep runs)
    max_batch.jsonl  max_batch/        the largest-batch search: its rows, its trial sweep
    serving.jsonl                      bench-serve's rows
    points/<run_id>/                   one run (a point of the sweep):
        run.json  record.json  error.json  error.rank<N>.json  status.json
        telemetry.jsonl  telemetry/<host>.jsonl (per node, SLURM)  logs/
        attempts/<n>/                  earlier attempts, kept as they were

A training folder (``distrinews-bench train --out``)::

    history.jsonl  fit.json  fit_result.json  error.json
    checkpoints/step-NNNNNNNN/  checkpoint.pt  config.json  tokenizer/
"""

from __future__ import annotations

# -- a sweep folder --------------------------------------------------------------------------

#: The append-only ledger: one row per finished run (harness.store).
LEDGER_NAME = "ledger.jsonl"
#: The expanded sweep as written at its start (harness.sweep).
SWEEP_JSON = "sweep.json"
#: The environment the sweep ran in, with its fingerprint (harness.envinfo).
ENV_JSON = "env.json"
#: The HTML report ``distrinews-bench report`` writes by default.
REPORT_HTML = "report.html"
#: In a pooled baseline (harness.tools.pool): the sessions it was pooled from.
POOL_JSON = "pool.json"
#: Held (fcntl.flock) by the one sweep writing into the folder.
LOCK_NAME = ".lock"
#: The per-run folders: ``points/<run_id>/``.
POINTS_DIR = "points"
#: One row per configuration of the largest-batch search (harness.max_batch).
MAX_BATCH_LEDGER = "max_batch.jsonl"
#: The search's trials: a sweep folder of its own inside the sweep's.
MAX_BATCH_DIR = "max_batch"
#: bench-serve's rows (harness.serving_store).
SERVING_LEDGER = "serving.jsonl"

# -- a run's folder (points/<run_id>/) -------------------------------------------------------

#: The RunSpec the worker reads.
RUN_JSON = "run.json"
#: What rank 0 writes when the run succeeded (notes/contracts.md §1).
RECORD_JSON = "record.json"
#: What the first failing rank writes; later ones write :func:`error_rank_json`.
ERROR_JSON = "error.json"
#: Glob of the later failing ranks' error files, and of every error file.
ERROR_RANK_GLOB = "error.rank*.json"
ERROR_FILES_GLOB = "error*.json"
#: How the harness saw the run end (status, reason, return code).
STATUS_JSON = "status.json"
#: GPU telemetry sampled beside the run (one node); per node under TELEMETRY_DIR on SLURM.
TELEMETRY_JSONL = "telemetry.jsonl"
TELEMETRY_DIR = "telemetry"
#: The ranks' and the launcher's logs: ``logs/launcher.log``, ``logs/telemetry.log``, ...
LOGS_DIR = "logs"
LAUNCHER_LOG = "launcher.log"
TELEMETRY_LOG = "telemetry.log"
#: Earlier attempts of the run, numbered from 1: ``attempts/<n>/``.
ATTEMPTS_DIR = "attempts"

# -- a training folder -----------------------------------------------------------------------

#: Per-step losses and per-epoch accuracy of ``train``.
HISTORY_JSONL = "history.jsonl"
#: The fit's settings and its result, when ``train`` runs under torchrun.
FIT_JSON = "fit.json"
FIT_RESULT_JSON = "fit_result.json"
#: Checkpoints: ``checkpoints/step-NNNNNNNN/`` holding the three below.
CHECKPOINTS_DIR = "checkpoints"
WEIGHTS_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"


def error_rank_json(rank: int) -> str:
    """The error file of a failing rank that was not the first: ``error.rank<N>.json``."""
    return f"error.rank{rank}.json"
