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

A benchmark run does ``warmup_steps`` discarded optimizer steps, then ``measured_steps`` timed
ones between two device synchronizes, gathers every rank's step times, and rank 0 writes
``DIR/record.json`` atomically (schema: notes/contracts.md; figures: distrinews/metrics.py).
Then, unless ``explain`` is off, it measures what explains the efficiency (compute-only steps,
the all-reduce ceiling; distrinews/explain.py) in the same process group, after the window.

Failures speak: the first failing rank writes ``DIR/error.json`` (later ones
``error.rank<N>.json``) naming the class — oom, nan_loss, nccl_error, rank_died, crashed,
invalid_spec — and the process exits with 3, 4, 5, 5, 1 or 2 respectively. ``RunSpec.fault``
injects each of these for real (a huge allocation, a NaN weight, a rank calling ``os._exit``,
an exception, an endless sleep) so tests drive every path through a real launch; its slow_*
values plant known slowdowns instead (distrinews/explain.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from . import explain
from .distributed import (
    DEFAULT_TIMEOUT_S,
    DistContext,
    all_gather_objects,
    barrier,
    collective_versions,
    process_group,
    synchronize,
)
from .errors import UserError
from .explain import plant_slowdown
from .files import ordinary_mode
from .layout import (
    ERROR_FILES_GLOB,
    ERROR_JSON,
    FIT_JSON,
    FIT_RESULT_JSON,
    RECORD_JSON,
    error_rank_json,
)
from .metrics import WindowCounts, matmul_params, peak_flops, summarize
from .runspec import FAILURE_FAULTS, RunSpec
from .train import (
    BatchStream,
    FitResult,
    FitSpec,
    NonFiniteLossError,
    StepTimer,
    WindowTotals,
    build_model,
    build_optimizer,
    check_fresh_out,
    check_train_out,
    configure_precision,
    fit,
    make_scaler,
    make_trainer,
)

RECORD_SCHEMA_VERSION = 1
EXIT_CODES = {
    "invalid_spec": 2,
    "oom": 3,
    "nan_loss": 4,
    "nccl_error": 5,
    "rank_died": 5,
    "crashed": 1,
}
#: Where in the measured window a deliberate fault fires (as a share of measured_steps).
FAULT_AT = 0.5


class Terminated(Exception):
    """SIGTERM arrived: torchrun stops the surviving ranks this way when one of them died."""


def log(msg: str) -> None:
    print(f"[distrinews] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Benchmark run
# --------------------------------------------------------------------------------------------


def benchmark(run: RunSpec, ctx: DistContext, *, on_log: Callable[[str], None] = log) -> dict:
    """Warm up, measure, gather: the record.json dict (meaningful on every rank)."""
    from .dataset import AGNewsDataset, LengthGroupedBatchSampler, get_tokenizer, load_agnews

    device = ctx.device
    news = load_agnews(run.data, seed=run.seed)
    tokenizer = None if news.synthetic else get_tokenizer(run.tokenizer)
    dataset = AGNewsDataset.from_data(news, tokenizer, max_length=run.max_length)
    configure_precision(run.precision, device)
    model = build_model(run).to(device).train()
    torch.manual_seed(run.seed * 1000 + ctx.rank + 1)  # per-rank dropout stream
    optimizer = build_optimizer(model, run.lr, device)
    trainer = make_trainer(
        model, run, optimizer=optimizer, scaler=make_scaler(run.precision, device), device=device
    )
    sampler = LengthGroupedBatchSampler(
        dataset.lengths,
        run.per_device_batch,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        seed=run.seed,
        drop_last=False,  # tiny data sets still fill steps; the stream cycles epochs anyway
    )
    pad_to = run.max_length if run.seq_policy == "fixed" else None
    stream = plant_slowdown(
        run, ctx, trainer, BatchStream(dataset, sampler, pad_to=pad_to, device=device)
    )

    if ctx.is_main:
        on_log(f"warmup: {run.warmup_steps} steps")
    for _ in range(run.warmup_steps):
        trainer.step(stream)
    # Outside the window: drain the device, then check the losses so far (one host sync).
    synchronize(device)
    trainer.check_finite()
    # Every rank enters the window together: a barrier, then drain the barrier's own work.
    barrier(ctx)
    synchronize(device)
    trainer.totals = WindowTotals()
    timer = StepTimer(device)
    fault_step = int(run.measured_steps * FAULT_AT)
    if ctx.is_main:
        on_log(f"measured window: start ({run.measured_steps} steps)")
    losses: list[torch.Tensor] = []
    start_unix, t0 = time.time(), time.perf_counter()
    for i in range(run.measured_steps):
        if run.fault in FAILURE_FAULTS and i == fault_step:
            inject_fault(run.fault, ctx, model)
        losses.append(trainer.step(stream, timer))
    synchronize(device)  # the window ends when the device has finished its last step
    elapsed_s, end_unix = time.perf_counter() - t0, time.time()
    if ctx.is_main:
        on_log(f"measured window: end ({elapsed_s:.3f} s)")
    trainer.check_finite()

    mine = {
        "step_times_s": timer.step_times_s(),
        "data_wait_s": timer.data_wait_s(),
        "elapsed_s": elapsed_s,
        "totals": asdict(trainer.totals),
        "loss_first": float(losses[0]),
        "loss_last": float(losses[-1]),
    }
    ranks = all_gather_objects(mine, ctx)
    warnings = []
    explained = explain.skipped()
    if run.explain:
        # After the window, so nothing measured above is disturbed: distrinews/explain.py.
        try:
            explained = explain.measure(
                run, ctx, trainer, stream, model,
                window_step_times_s=[r["step_times_s"] for r in ranks],
                window_elapsed_s=max(r["elapsed_s"] for r in ranks),
            )  # fmt: skip
        except Terminated:
            raise
        except Exception as exc:  # the window is measured: a failed explanation must not lose it
            lines = str(exc).strip().splitlines()
            warnings.append(
                f"explain measurements failed ({type(exc).__name__}: "
                f"{lines[0] if lines else ''}); their metrics are null"
            )
        if ctx.is_main:
            on_log(f"explain: {explained['metrics']}")
    totals = {k: sum(r["totals"][k] for r in ranks) for k in mine["totals"]}
    cfg = model.config
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = peak_flops(gpu_name, run.precision)
    if peak is None:
        warnings.append(
            f"mfu and hfu are null: no peak FLOP/s known for {gpu_name or 'cpu'} at "
            f"{run.precision} (distrinews.metrics.PEAK_FLOPS)"
        )
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    metrics = summarize(
        step_times_s=[r["step_times_s"] for r in ranks],
        measured_time_s=max(r["elapsed_s"] for r in ranks),
        data_wait_s=sum(r["data_wait_s"] for r in ranks) / len(ranks),
        counts=WindowCounts(**totals),
        world_size=ctx.world_size,
        n_matmul=matmul_params(dim=cfg.dim, hidden_dim=cfg.hidden_dim, n_layers=cfg.n_layers),
        n_layers=cfg.n_layers,
        dim=cfg.dim,
        peak_flops_per_device=peak,
        mem_peak_gib=mem,
        loss_first=sum(r["loss_first"] for r in ranks) / len(ranks),
        loss_last=sum(r["loss_last"] for r in ranks) / len(ranks),
    )
    return {
        "schema_version": RECORD_SCHEMA_VERSION,
        "run_id": run.run_id,
        "config_key": run.config_key,
        "spec": run.to_dict(),
        "metrics": metrics.with_explain(explained["metrics"]).to_record(),
        "step_times_s": [r["step_times_s"] for r in ranks],
        "compute_step_times_s": explained["compute_step_times_s"],
        "buckets": explained["buckets"],
        "grad_dtype": explained["grad_dtype"],
        "measured_window": {"start_unix": start_unix, "end_unix": end_unix},
        "env": environment(ctx, gpu_name),
        "warnings": warnings,
    }


def environment(ctx: DistContext, gpu_name: str | None) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        **collective_versions(),
        "gpu_name": gpu_name,
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "backend": ctx.backend,
        "world_size": ctx.world_size,
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }


def inject_fault(fault: str, ctx: DistContext, model: torch.nn.Module) -> None:
    """Make the failure happen for real, so its detection and reporting are tested for real."""
    if fault == "crash":
        raise RuntimeError("injected fault: crash")
    if fault == "crash_last" and ctx.rank == ctx.world_size - 1:
        # One rank (on one node, across nodes) fails; the others must notice and stop.
        raise RuntimeError(f"injected fault: crash on rank {ctx.rank}")
    if fault == "oom":
        # A real allocation far beyond the device's memory, through the real allocator.
        if ctx.device.type == "cuda":
            total = torch.cuda.get_device_properties(ctx.device).total_memory
            torch.empty(4 * total, dtype=torch.uint8, device=ctx.device)
        else:
            torch.empty(1 << 50, dtype=torch.uint8)  # 1 PiB: beyond any address space
    elif fault == "nan":
        # A NaN weight in the classifier head: the forward pass itself makes the loss NaN.
        with torch.no_grad():
            model.hf.classifier.bias.fill_(float("nan"))
    elif fault == "rank_exit":
        if ctx.rank == min(1, ctx.world_size - 1):
            log(f"injected fault: rank {ctx.rank} exits")
            sys.stderr.flush()
            os._exit(1)  # no cleanup, no error file: exactly what a dying rank leaves behind
    elif fault == "hang":
        log("injected fault: hang")
        while True:  # the harness's timeout must kill us
            time.sleep(3600)


# --------------------------------------------------------------------------------------------
# Failure classes and files
# --------------------------------------------------------------------------------------------


def classify(exc: BaseException) -> str:
    """The failure class of an exception (notes/contracts.md §2)."""
    text = str(exc)
    if isinstance(exc, UserError):
        return "invalid_spec"
    out_of_memory = ("can't allocate memory", "CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED")
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or any(
        s in text for s in out_of_memory
    ):
        return "oom"
    if isinstance(exc, NonFiniteLossError):
        return "nan_loss"
    if isinstance(exc, Terminated):
        return "rank_died"
    peer_gone = ("closed by peer", "reset by peer", "Broken pipe", "Connection refused")
    if isinstance(exc, torch.distributed.DistError) or any(
        s in text for s in ("NCCL", "Gloo", "gloo", "ProcessGroup", "Timed out", "timed out")
    ):
        return "rank_died" if any(s in text for s in peer_gone) else "nccl_error"
    if any(s in text for s in peer_gone):
        return "rank_died"
    return "crashed"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        ordinary_mode(tmp)  # mkstemp made it 0600; results are for the team to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_error(out: Path, exc: BaseException, rank: int) -> int:
    """error.json (first failing rank) or error.rank<N>.json; returns the exit code."""
    failure = classify(exc)
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()
    body = {
        "failure": failure,
        "message": message,
        "rank": rank,
        "traceback_tail": "".join(traceback.format_exception(exc))[-4000:],
        "exit_code": EXIT_CODES[failure],
    }
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".error.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    ordinary_mode(tmp)
    try:
        os.link(tmp, out / ERROR_JSON)  # atomic and exclusive: the first rank wins
        os.unlink(tmp)
    except FileExistsError:
        os.replace(tmp, out / error_rank_json(rank))
    return EXIT_CODES[failure]


# --------------------------------------------------------------------------------------------
# Local fine-tuning launcher (what `distrinews-bench train` calls)
# --------------------------------------------------------------------------------------------


def run_fit_local(
    spec: FitSpec,
    out: Path,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_log: Callable[[str], None] = log,
) -> FitResult:
    """Fine-tune on this machine: in this process for one rank, under torchrun for more.

    Raises UserError for bad input (also when a torchrun rank reports invalid_spec) and
    RuntimeError naming the failure class when a multi-rank run fails.
    """
    run = spec.run
    if run.nodes != 1:
        raise UserError("a local fine-tuning run has nodes = 1; use torchrun per node for more")
    check_train_out(out)  # before any rank starts: one line, not a failed torchrun
    if not spec.resume:
        check_fresh_out(out)
    if run.world_size == 1:
        with process_group(
            device=run.device, backend=run.resolved_backend, timeout_s=timeout_s
        ) as ctx:
            result = fit(spec, ctx, out, log=on_log)
        # The same summary a torchrun run leaves behind: --help promises it in --out.
        write_json_atomic(out / FIT_RESULT_JSON, asdict(result))
        return result
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / FIT_JSON
    spec_path.write_text(spec.to_json())
    for stale in out.glob(ERROR_FILES_GLOB):
        stale.unlink()  # errors of an earlier attempt must not be read as this one's
    argv = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", str(run.nproc_per_node),
        # c10d rendezvous on port 0: the OS picks a free port, so parallel runs never collide.
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0",
        "-m", "distrinews.worker", "--fit", str(spec_path), "--out", str(out),
        "--timeout-s", str(timeout_s),
    ]  # fmt: skip
    proc = subprocess.run(argv, check=False)
    if proc.returncode != 0:
        error = _read_json(out / ERROR_JSON)
        if error is None:
            raise RuntimeError(f"torchrun exited with {proc.returncode} and no error.json")
        if error.get("failure") == "invalid_spec":
            raise UserError(error["message"].split(": ", 1)[-1])
        raise RuntimeError(f"{error['failure']} on rank {error['rank']}: {error['message']}")
    result = _read_json(out / FIT_RESULT_JSON)
    if result is None:
        raise RuntimeError(f"{out / FIT_RESULT_JSON}: missing after a successful run")
    return FitResult(
        **{
            k: tuple(map(tuple, v)) if k in ("losses", "accuracies") else v
            for k, v in result.items()
        }
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


TERMINATED = "terminated by SIGTERM (another rank died, or the harness timed out)"


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(TERMINATED)


class _SigtermWatch:
    """Turns SIGTERM into an error file and exit 5, even while the main thread is stuck.

    torchrun sends SIGTERM to the surviving ranks when one dies. A Python signal handler runs
    only when the main thread returns to the interpreter, which never happens while it waits
    in ``cuda.synchronize()`` for an NCCL collective that will not complete. So SIGTERM is
    blocked in the main thread (and every thread it starts later) and a watcher thread takes
    it with ``sigwait``. ``lock`` keeps it from racing a failure the main thread is reporting.
    """

    def __init__(self, out: Path, rank: int) -> None:
        self.out, self.rank = out, rank
        self.lock = threading.Lock()
        #: Set once the main thread has reported a failure: SIGTERM then just exits with it.
        self.exit_code: int | None = None

    def start(self) -> None:
        # Threads started before us (torch starts one at import) do not block SIGTERM; should
        # the kernel hand it to one of them, this handler (not the default: instant death)
        # raises Terminated in the main thread as soon as it runs Python again.
        signal.signal(signal.SIGTERM, _raise_terminated)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=self._wait, name="sigterm-watch", daemon=True).start()

    def _wait(self) -> None:
        signal.sigwait({signal.SIGTERM})
        with self.lock:
            code = self.exit_code
            if code is None:
                code = write_error(self.out, Terminated(TERMINATED), self.rank)
                log(f"rank {self.rank} failed: rank_died (SIGTERM, exit {code})")
            os._exit(code)


#: Environment knob: extra address space (GiB) a rank may map beyond what it holds at start-up.
MEMORY_LIMIT_ENV = "DISTRINEWS_RANK_MEMORY_LIMIT_GIB"


def apply_memory_limit(env: dict[str, str] | None = None) -> int | None:
    """Cap this rank's address space if ``DISTRINEWS_RANK_MEMORY_LIMIT_GIB`` is set.

    This is how a CPU machine runs out of memory for real, at a size a test can afford: the
    limit (``RLIMIT_AS``, via ``resource.setrlimit``) is the address space the rank has mapped
    when it starts (Python, torch and their libraries: about 0.7 GiB) plus the given GiB, so
    the same setting means the same headroom on any machine. Past it, allocations fail in the
    real allocator ("can't allocate memory") and the run is classified oom, exit 3, exactly
    like a GPU running out. Returns the limit in bytes, or None when the knob is unset.
    """
    raw = (os.environ if env is None else env).get(MEMORY_LIMIT_ENV, "").strip()
    if not raw:
        return None
    try:
        gib = float(raw)
    except ValueError:
        gib = float("nan")
    if not gib > 0 or gib == float("inf"):
        raise UserError(
            f"{MEMORY_LIMIT_ENV} = {raw!r} is not allowed; expected a number of GiB > 0"
        )
    import resource

    mapped = _mapped_bytes()
    limit = mapped + int(gib * 2**30)
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def _mapped_bytes() -> int:
    """The process's current address space size (VmSize in /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise UserError(f"{MEMORY_LIMIT_ENV} needs Linux (/proc/self/status has no VmSize)")


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
    watch = _SigtermWatch(out, rank)
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
                    result = fit(fit_spec, ctx, out, log=log if ctx.is_main else lambda _m: None)
                    if ctx.is_main:
                        write_json_atomic(out / FIT_RESULT_JSON, asdict(result))
                else:
                    record = benchmark(run, ctx)
                    if ctx.is_main:
                        write_json_atomic(out / RECORD_JSON, record)
                        log(f"wrote {out / RECORD_JSON}")
            except BaseException as exc:
                # Report before leaving the group: teardown after a peer died can be slow.
                return _fail(out, exc, rank, watch)
        return 0
    except BaseException as exc:
        return _fail(out, exc, rank, watch)


def _fail(out: Path, exc: BaseException, rank: int, watch: _SigtermWatch) -> int:
    # Under the lock: a SIGTERM arriving now must not replace this failure's class.
    with watch.lock:
        code = write_error(out, exc, rank)
        watch.exit_code = code
    if isinstance(exc, UserError):
        print(f"error: {exc}", file=sys.stderr, flush=True)
    else:
        traceback.print_exception(exc, file=sys.stderr)
        log(f"rank {rank} failed: {classify(exc)} (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
