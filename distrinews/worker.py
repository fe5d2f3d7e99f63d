"""The torchrun target: one training run from one spec file, one record (or one error) out.

Benchmark a RunSpec (what the harness launches for every sweep point)::

    # one process (CPU, or one GPU)
    python -m distrinews.worker --spec run.json --out DIR
    # one machine, 8 GPUs
    torchrun --nproc-per-node 8 -m distrinews.worker --spec run.json --out DIR
    # two machines x 8 GPUs: run on both; HOST is the first machine's address
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        --rdzv-id myjob -m distrinews.worker --spec run.json --out DIR

Fine-tune (what ``distrinews-bench train`` launches): ``--fit fit.json`` instead of ``--spec``.

This module is glue only: parse the arguments, read the spec, set up the process group, run
the benchmark (distrinews/benchmark.py: rank 0 writes ``DIR/record.json`` atomically) or the
fine-tune (distrinews/train.py: ``DIR/fit_result.json``), and write the outcome.

Failures speak: the first failing rank writes ``DIR/error.json`` (later ones
``error.rank<N>.json``) naming the failure class, and the process exits with that class's code
(distrinews/failures.py). SIGTERM, which torchrun sends the survivors when a rank dies, is
turned into the same (distrinews/sigterm.py). ``RunSpec.fault`` plants each failure for real
(distrinews/faults.py), so tests drive every path through a real launch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from .benchmark import benchmark
from .distributed import DEFAULT_TIMEOUT_S, DistContext, process_group
from .errors import UserError
from .failures import failure_class_of, write_error_file
from .faults import apply_memory_limit
from .files import atomic_write_text
from .layout import FIT_RESULT_JSON, RECORD_JSON
from .log import log
from .runspec import RunSpec
from .sigterm import SigtermWatch
from .train import FitResult, FitSpec, fit


def fit_and_record(
    spec: FitSpec, ctx: DistContext, out: Path, *, on_log: Callable[[str], None] = log
) -> FitResult:
    """Fine-tune in this process group; rank 0 writes ``out/fit_result.json`` (the summary
    ``distrinews-bench train`` promises in --out, for one rank as for torchrun runs).

    A call that trains nothing (the resume of a finished run) keeps the earlier
    ``fit_result.json`` and returns it: the run's results, not an empty summary over them.
    """
    result = fit(spec, ctx, out, log=on_log if ctx.is_main else lambda _m: None)
    if not ctx.is_main:
        return result
    path = out / FIT_RESULT_JSON
    if not result.trained and path.is_file():
        try:
            kept = FitResult.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            on_log(f"warning: {path} unreadable ({exc}); replaced by this call's empty result")
        else:
            on_log(f"kept {path}: this call trained nothing")
            return kept
    atomic_write_text(path, json.dumps(asdict(result), indent=2))
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m distrinews.worker", description=__doc__.split("\n")[0]
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--spec", type=Path, help="RunSpec JSON: benchmark it, write record.json")
    what.add_argument("--fit", type=Path, help="FitSpec JSON: fine-tune with eval + checkpoints")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="collective timeout: a dead or stuck rank fails the run after this long",
    )
    return parser.parse_args(argv)


def _read_spec(args: argparse.Namespace) -> tuple[RunSpec, FitSpec | None]:
    path = args.fit or args.spec
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read spec ({exc.strerror})") from None
    if args.fit:
        fit_spec = FitSpec.from_json(text, where=str(path))
        return fit_spec.run, fit_spec
    return RunSpec.from_json(text, where=str(path)), None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    watch = SigtermWatch(out, rank)
    watch.start()
    try:
        apply_memory_limit()
        run, fit_spec = _read_spec(args)
        with process_group(
            device=run.device, backend=run.resolved_backend, timeout_s=args.timeout_s
        ) as ctx:
            rank = watch.rank = ctx.rank
            if ctx.world_size != run.world_size:
                raise UserError(
                    f"spec asks for {run.world_size} rank(s) (nodes x nproc_per_node) but "
                    f"{ctx.world_size} were started"
                )
            try:
                if fit_spec is not None:
                    fit_and_record(fit_spec, ctx, out)
                else:
                    record = benchmark(run, ctx)
                    if ctx.is_main:
                        atomic_write_text(out / RECORD_JSON, json.dumps(record, indent=2))
                        log(f"wrote {out / RECORD_JSON}")
            except BaseException as exc:
                # Report before leaving the group: teardown after a peer died can be slow.
                return _fail(out, exc, rank, watch)
        return 0
    except BaseException as exc:
        return _fail(out, exc, rank, watch)


def _fail(out: Path, exc: BaseException, rank: int, watch: SigtermWatch) -> int:
    # Under the lock: a SIGTERM arriving now must not replace this failure's class.
    with watch.lock:
        code = write_error_file(out, exc, rank)
        watch.exit_code = code
    if isinstance(exc, UserError):
        print(f"error: {exc}", file=sys.stderr, flush=True)
    else:
        traceback.print_exception(exc, file=sys.stderr)
        log(f"rank {rank} failed: {failure_class_of(exc)} (exit {code})")
    return code


def exit_now(code: int) -> None:
    """Leave the process at once with ``code``, skipping the interpreter's teardown.

    By now every output is on disk (files.py fsyncs) and the process group is destroyed. What
    teardown would still do is free the last references to the group's C++ backend (DDP's
    reducer keeps one past ``destroy_process_group``) at interpreter exit, when gloo's worker
    threads may still be joinable: ``std::terminate`` and a SIGABRT that turns a finished run
    into a crashed one ("terminate called without an active exception"; 2 of 36 two-rank runs
    on the 2-core box). Only the standard streams need flushing first.
    """
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken stream has nothing left to save.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
