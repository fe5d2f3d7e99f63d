"""The training loop shared by the benchmark worker and ``distrinews-bench train``.

One optimizer *step* = ``grad_accum`` micro-steps (forward: logits; cross-entropy loss;
backward: gradients), then one AdamW update. Under DistributedDataParallel (DDP) every rank
holds a full model copy and its own slice of the batch; during backward DDP all-reduces
(averages) gradients across ranks in *buckets* of ``bucket_cap_mb`` as soon as a bucket's
gradients are ready, overlapping communication with the rest of backward. With gradient
accumulation, the first ``grad_accum - 1`` micro-steps run inside ``no_sync()`` so gradients
accumulate locally and are all-reduced only once per optimizer step.

Precision: ``fp32``; ``tf32`` (fp32 storage, TF32 tensor-core matmuls on Ampere+); ``bf16``
autocast (matmuls in bfloat16, weights and optimizer in fp32); ``fp16`` autocast with a
GradScaler, which multiplies the loss so small fp16 gradients do not underflow and skips steps
whose gradients overflowed.

Nothing in the hot path syncs the host with the device: losses stay device tensors and the
NaN/inf check is a device-side flag read once outside the measured window (``.item()`` inside
a step would stall the CPU until the GPU drains its queue, hiding the launch overhead we are
measuring). Timing (distrinews/timing.py: :class:`StepTimer` for the window, :class:`StepProbe`
inside the step) uses CUDA events on GPU and perf_counter on CPU.

:func:`fit` is the real fine-tuning run: epochs, held-out accuracy after each, checkpoints, and
exact resume. It is what the worker runs with ``--fit`` and what ``distrinews-bench train``
launches.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from .checkpoint import (
    CHECKPOINTS_DIR,
    TrainingState,
    latest_checkpoint,
    load_training_state,
    rng_state,
    save_checkpoint,
)
from .dataset import AGNewsDataset, LengthGroupedBatchSampler, get_tokenizer, load_agnews
from .distributed import DistContext, all_gather_objects, all_reduce_sum
from .errors import UserError
from .files import append_durably, atomic_write_text, refuse_symlink
from .layout import (
    FIT_JSON,
    FIT_RESULT_JSON,
    HISTORY_JSONL,
    LEDGER_NAME,
    SERVING_LEDGER,
    WEIGHTS_FILE,
)
from .model import NewsClassifier
from .runspec import DDPKnobs, RunSpec
from .safeio import loads_strict
from .sleepnet import SleepNet
from .synthetic import is_synthetic
from .timing import StepProbe, StepTimer

#: Dynamic padding rounds the batch width up to a multiple of 8: tensor-core friendly shapes,
#: and few distinct shapes for torch.compile.
PAD_MULTIPLE = 8


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


# --------------------------------------------------------------------------------------------
# Building blocks: model, precision, optimizer, DDP
# --------------------------------------------------------------------------------------------


def build_model(run: RunSpec) -> NewsClassifier | SleepNet:
    """The classifier the spec asks for (same weights on every rank: seeded, or pretrained).

    ``synthetic-sleep[:...]`` is the sleeping stand-in that checks the scaling projection
    (distrinews.synthetic): real gradients, no compute.
    """
    if is_synthetic(run.model):
        return SleepNet.from_spec(run.model)
    if run.init == "pretrained":
        return NewsClassifier.from_pretrained(run.model)
    return NewsClassifier.from_config(run.model, seed=run.seed)


def configure_precision(precision: str, device: torch.device) -> None:
    """TF32 on only for ``tf32``: fp32 means true fp32 matmuls, so the peak is the fp32 one."""
    if device.type != "cuda":
        return
    allow = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """Autocast for bf16/fp16 (matmuls in half precision, reductions in fp32); else nothing."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 only: bf16 has fp32's exponent range and needs none."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def build_optimizer(model: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.AdamW:
    # fused: one kernel updates all parameters instead of a handful per tensor (CUDA only).
    return torch.optim.AdamW(model.parameters(), lr=lr, fused=device.type == "cuda")


def wrap_ddp(model: torch.nn.Module, knobs: DDPKnobs, device: torch.device) -> DDP:
    """DDP with the spec's knobs and communication hook.

    The DDP carries its :class:`~distrinews.timing.StepProbe` as ``step_probe``: DDP takes one
    comm hook, and the probe is it (calling the spec's hook inside), so the steps can be timed
    from the inside later (distrinews/explain.py).
    """
    # torch >= 2.13 renamed broadcast_buffers to forward_sync_buffers (same per-forward sync).
    sync_kw = (
        "forward_sync_buffers"
        if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
        else "broadcast_buffers"
    )
    ddp = DDP(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=knobs.bucket_cap_mb,
        gradient_as_bucket_view=knobs.gradient_as_bucket_view,
        static_graph=knobs.static_graph,
        find_unused_parameters=False,  # every parameter gets a gradient every step
        **{sync_kw: knobs.broadcast_buffers},
    )
    probe = StepProbe(ddp, device)
    ddp.step_probe = probe
    if knobs.comm_hook != "none":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

        if knobs.comm_hook == "fp16":
            probe.set_comm_hook(default_hooks.fp16_compress_hook)
        elif knobs.comm_hook == "bf16":
            if device.type != "cuda":  # DDP itself refuses it: bf16 all-reduce needs NCCL 2.10+
                raise UserError("ddp.comm_hook = 'bf16' needs CUDA + NCCL; on CPU use fp16 or none")
            probe.set_comm_hook(default_hooks.bf16_compress_hook)
        else:
            state = powerSGD_hook.PowerSGDState(
                process_group=None,
                matrix_approximation_rank=knobs.powersgd_rank,
                # 2 is the earliest allowed with error feedback: two plain all-reduce steps,
                # then compression, so a benchmark's measured window sees compressed traffic.
                start_powerSGD_iter=2,
            )
            probe.set_comm_hook(powerSGD_hook.powerSGD_hook, state)
    return ddp


def make_trainer(
    model: torch.nn.Module,
    run: RunSpec,
    *,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
) -> Trainer:
    """DDP-wrap ``model`` with the run's knobs (compiled if asked): the one Trainer that both
    the benchmark worker and :func:`fit` step with."""
    ddp = wrap_ddp(model, run.ddp, device)
    ddp.step_probe.compiled = run.compile
    net: torch.nn.Module = torch.compile(ddp) if run.compile else ddp
    return Trainer(
        model=net,
        optimizer=optimizer,
        scaler=scaler,
        precision=run.precision,
        device=device,
        grad_accum=run.grad_accum,
    )


# --------------------------------------------------------------------------------------------
# Data: sampler -> padded batch on the device
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One micro-batch on the device, with host-side token counts (known without a sync)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    samples: int
    real_tokens: int
    real_tokens_sq: int
    padded_tokens: int
    padded_tokens_sq: int


class BatchStream:
    """This rank's micro-batches, epoch after epoch, from a position that can be saved.

    The position is ``(epoch, offset)``: the sampler's order is a pure function of
    ``(seed, epoch)``, so restoring the position restores the exact batches that follow.
    """

    def __init__(
        self,
        dataset: AGNewsDataset,
        sampler: LengthGroupedBatchSampler,
        *,
        pad_to: int | None,
        device: torch.device,
        epoch: int = 0,
        offset: int = 0,
    ) -> None:
        self.dataset, self.sampler, self.pad_to, self.device = dataset, sampler, pad_to, device
        self.epoch, self.offset = epoch, offset
        self._order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray:
        self.sampler.set_epoch(self.epoch)
        return self.sampler.steps()[:, self.sampler.rank]

    def __len__(self) -> int:
        return len(self.sampler)

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.offset = epoch, 0
        self._order = self._epoch_order()

    def next(self) -> Batch:
        if self.offset >= len(self._order):
            self.start_epoch(self.epoch + 1)
        idx = self._order[self.offset]
        self.offset += 1
        host = self.dataset.batch(idx, pad_to=self.pad_to, pad_to_multiple_of=PAD_MULTIPLE)
        width = host["input_ids"].shape[1]
        lengths = np.minimum(self.dataset.lengths[idx], width)
        on_gpu = self.device.type == "cuda"
        # Pinned host memory lets the copy run asynchronously (non_blocking) on the stream.
        tensors = {
            k: (v.pin_memory() if on_gpu else v).to(self.device, non_blocking=on_gpu)
            for k, v in host.items()
        }
        return Batch(
            input_ids=tensors["input_ids"],
            attention_mask=tensors["attention_mask"],
            labels=tensors["labels"],
            samples=len(idx),
            real_tokens=int(lengths.sum()),
            real_tokens_sq=int((lengths * lengths).sum()),
            padded_tokens=len(idx) * width,
            padded_tokens_sq=len(idx) * width * width,
        )


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


@dataclass
class WindowTotals:
    """Host-side sums of what a run of steps processed (this rank)."""

    samples: int = 0
    real_tokens: int = 0
    real_tokens_sq: int = 0
    padded_tokens: int = 0
    padded_tokens_sq: int = 0

    def add(self, b: Batch) -> None:
        self.samples += b.samples
        self.real_tokens += b.real_tokens
        self.real_tokens_sq += b.real_tokens_sq
        self.padded_tokens += b.padded_tokens
        self.padded_tokens_sq += b.padded_tokens_sq


class Trainer:
    """Runs optimizer steps: micro-batches, no_sync accumulation, AMP, scaler, update."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        precision: str,
        device: torch.device,
        grad_accum: int = 1,
    ) -> None:
        self.model = model  # DDP-wrapped (and maybe compiled), or a bare module
        ddp = self._ddp()
        if ddp is not None and ddp.static_graph and grad_accum > 1:
            raise UserError(
                "ddp.static_graph = true with grad_accum > 1 is refused: under no_sync() "
                "PyTorch's static-graph DDP asserts (expect_autograd_hooks_) or silently stops "
                "all-reducing (pytorch/pytorch#143580); use static_graph = false to accumulate"
            )
        self.optimizer = optimizer
        self.scaler = scaler
        self.precision = precision
        self.device = device
        self.grad_accum = grad_accum
        self.totals = WindowTotals()
        # Times the steps from the inside when asked (distrinews/timing.py); wrap_ddp made it
        # DDP's comm hook. A DDP wrapped elsewhere (or none) gets a probe of its own.
        self.probe: StepProbe = getattr(ddp, "step_probe", None) or StepProbe(ddp, device)
        # Device-side "has any loss been NaN/inf" flag: checked on the host only when asked.
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=device)

    def _ddp(self) -> DDP | None:
        inner = getattr(self.model, "_orig_mod", self.model)  # torch.compile wraps the DDP module
        return inner if isinstance(inner, DDP) else None

    def forward_backward(
        self, stream: BatchStream, timer: StepTimer | None = None, *, sync: bool = True
    ) -> torch.Tensor:
        """The micro-steps of one optimizer step: gradients in ``.grad``; returns the loss.

        ``sync=False`` runs every micro-step under ``no_sync()``: no gradient all-reduce at all
        (a compute-only step, distrinews/explain.py; ranks' weights drift apart after it).
        """
        ddp = self._ddp()
        total = torch.zeros((), device=self.device)
        for micro in range(self.grad_accum):
            if timer is not None:
                timer.data_start()
            batch = stream.next()
            if timer is not None:
                timer.data_end()
            self.totals.add(batch)
            last = micro == self.grad_accum - 1 and sync
            # Skip the all-reduce on all but the last micro-step: gradients accumulate locally.
            context = nullcontext() if last or ddp is None else ddp.no_sync()
            with context:
                if timer is not None:
                    timer.forward_call()
                with autocast(self.precision, self.device):
                    logits = self.model(batch.input_ids, batch.attention_mask)
                # The loss in fp32 whatever the autocast dtype: log-softmax needs the range.
                loss = F.cross_entropy(logits.float(), batch.labels) / self.grad_accum
                if timer is not None and last:
                    timer.backward_start()
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
                if timer is not None and last:
                    timer.backward_end()
            total += loss.detach()
        self._nonfinite |= ~torch.isfinite(total)
        return total

    def optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(
        self, stream: BatchStream, timer: StepTimer | None = None, *, sync: bool = True
    ) -> torch.Tensor:
        """One optimizer step; returns its loss as a device tensor (no host sync)."""
        if timer is not None:
            timer.step_start()
        loss = self.forward_backward(stream, timer, sync=sync)
        self.optimizer_step()
        if timer is not None:
            timer.step_end()
        return loss

    def check_finite(self) -> None:
        """Raise NonFiniteLossError if any loss so far was NaN/inf. Syncs: call outside windows."""
        if bool(self._nonfinite):
            raise NonFiniteLossError("training loss became NaN or infinite")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: NewsClassifier,
    dataset: AGNewsDataset,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    ctx: DistContext | None = None,
) -> float:
    """Held-out accuracy (share of items whose highest logit is the true label).

    With ``ctx`` each rank scores every ``world_size``-th item and the counts are summed, so
    the result is the accuracy on the whole set, identical on every rank.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    mine = np.arange(rank, len(dataset), world)
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for start in range(0, len(mine), batch_size):
        host = dataset.batch(mine[start : start + batch_size], pad_to_multiple_of=PAD_MULTIPLE)
        batch = {k: v.to(device) for k, v in host.items()}
        with autocast(precision, device):
            pred = model(batch["input_ids"], batch["attention_mask"]).argmax(dim=-1)
        counts[0] += (pred == batch["labels"]).sum()
        counts[1] += len(pred)
    if ctx is not None:
        all_reduce_sum(counts, ctx)
    model.train(was_training)
    return float(counts[0] / counts[1])


# --------------------------------------------------------------------------------------------
# Fine-tuning: epochs, accuracy, checkpoints, exact resume
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FitSpec:
    """A fine-tuning job: the run's settings plus epochs, evaluation and checkpointing."""

    run: RunSpec
    """Model, data, precision, batch, DDP knobs, seed, lr (warmup/measured steps unused)."""
    epochs: int = 1
    """Passes over the training part of the data."""
    eval_fraction: float = 0.1
    """Share of the data held out for the accuracy check after each epoch."""
    checkpoint_every: int = 0
    """Also checkpoint every N optimizer steps (0: only at the end of each epoch)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (oldest deleted first; 0 keeps all)."""
    resume: bool = True
    """Continue from the latest checkpoint in the output directory, if there is one."""
    stop_after_steps: int | None = None
    """Stop after this many optimizer steps in total (an interrupted run, for tests)."""
    log_every: int = 10
    """Read losses back from the device (one sync) every N steps."""

    def __post_init__(self) -> None:
        if isinstance(self.run, dict):
            object.__setattr__(self, "run", RunSpec.from_dict(self.run, where="fit.run"))
        for name, low in (("epochs", 1), ("checkpoint_every", 0), ("keep_checkpoints", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UserError(f"{name} = {value!r} is not allowed; expected an integer >= {low}")
        if not isinstance(self.log_every, int) or self.log_every < 1:
            raise UserError(f"log_every = {self.log_every!r} must be an integer >= 1")
        if not isinstance(self.eval_fraction, float) or not 0.0 < self.eval_fraction < 1.0:
            raise UserError(f"eval_fraction = {self.eval_fraction!r} must be in (0, 1)")
        if self.stop_after_steps is not None and (
            not isinstance(self.stop_after_steps, int) or self.stop_after_steps < 1
        ):
            raise UserError(f"stop_after_steps = {self.stop_after_steps!r} must be >= 1 or null")

    def to_json(self) -> str:
        body = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "run"}
        return json.dumps({"run": self.run.to_dict(), **body}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, where: str = "fit spec") -> FitSpec:
        data = loads_strict(text, where=where)  # NaN, Infinity, huge ints refused here
        if not isinstance(data, dict) or not isinstance(data.get("run"), dict):
            raise UserError(f"{where}: expected an object with a 'run' object")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise UserError(f"{where}: unknown key {unknown[0]!r}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise UserError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class FitResult:
    losses: tuple[tuple[int, float], ...]
    """(optimizer step, loss averaged over ranks) for every step this call ran."""
    accuracies: tuple[tuple[int, float], ...]
    """(epoch, held-out accuracy) after each epoch this call finished."""
    seconds: float
    samples_per_s: float
    resumed_from: str | None
    stopped_early: bool
    train_items: int = 0
    heldout_items: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        """Whether this call ran any step (a resume of a finished run runs none)."""
        return bool(self.losses)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FitResult:
        """The inverse of ``dataclasses.asdict`` (``fit_result.json``): pairs back to tuples."""
        pairs = ("losses", "accuracies")
        return cls(**{k: tuple(map(tuple, v)) if k in pairs else v for k, v in doc.items()})


def load_text_data(run: RunSpec, eval_fraction: float, *, need_tokenizer: bool = False):
    """(train dataset, held-out dataset, tokenizer or None) for a spec."""
    news = load_agnews(run.data, seed=run.seed)
    tokenizer = None
    if not news.synthetic or (need_tokenizer and Path(run.tokenizer).exists()):
        tokenizer = get_tokenizer(run.tokenizer)
    train_part, held_part = news.split(eval_fraction, seed=run.seed)
    train_ds = AGNewsDataset.from_data(train_part, tokenizer, max_length=run.max_length)
    held_ds = AGNewsDataset.from_data(held_part, tokenizer, max_length=run.max_length)
    return train_ds, held_ds, tokenizer


def fit(
    spec: FitSpec,
    ctx: DistContext,
    out_dir: str | Path,
    *,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Fine-tune per ``spec`` inside an initialised process group; checkpoints under ``out_dir``.

    Every rank calls this. Rank 0 writes checkpoints and ``history.jsonl`` (one line per step:
    step, epoch, loss). With ``spec.resume`` and a checkpoint in ``out_dir``, training continues
    exactly where that checkpoint left off.
    """
    run, device = spec.run, ctx.device
    out = Path(out_dir)
    # Say what happens before the first step: loading and tokenizing can take a minute.
    log(f"data: loading {run.data} (tokenizer {run.tokenizer}, max_length {run.max_length})")
    t0 = time.perf_counter()
    train_ds, held_ds, tokenizer = load_text_data(run, spec.eval_fraction, need_tokenizer=True)
    how = (
        "synthetic token ids"
        if str(run.data).startswith("synthetic")
        else ("token ids from the cache" if train_ds.cache_hit else "tokenized")
    )
    log(
        f"data: {len(train_ds):,} training + {len(held_ds):,} held-out items, {how} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    configure_precision(run.precision, device)
    model = build_model(run).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {run.model} ({n_params / 1e6:.1f}M parameters, {run.init} init, "
        f"{run.precision}) on {ctx.world_size} {device.type} rank"
        f"{'' if ctx.world_size == 1 else 's'}, batch {run.per_device_batch} per rank"
    )
    optimizer = build_optimizer(model, run.lr, device)
    scaler = make_scaler(run.precision, device)
    state = TrainingState(step=0, epoch=0, batch_in_epoch=0)
    # Dropout draws differ per rank (different data, different masks), seeded reproducibly.
    torch.manual_seed(run.seed * 1000 + ctx.rank + 1)
    if not spec.resume:
        check_fresh_out(out)
    ckpt = latest_checkpoint(out) if spec.resume else None
    if ckpt is not None:
        state = load_training_state(
            ckpt,
            model=model,
            optimizer=optimizer,
            scaler=scaler,
            rank=ctx.rank,
            world_size=ctx.world_size,
            device=device,
        )
        log(f"resumed from {ckpt} (step {state.step}, epoch {state.epoch})")
    trainer = make_trainer(model, run, optimizer=optimizer, scaler=scaler, device=device)
    sampler = LengthGroupedBatchSampler(
        train_ds.lengths,
        run.per_device_batch,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        seed=run.seed,
        drop_last=True,
    )
    steps_per_epoch = len(sampler) // run.grad_accum
    if steps_per_epoch == 0:
        raise UserError(
            f"{len(train_ds)} training items give {len(sampler)} batches per rank, fewer than "
            f"grad_accum = {run.grad_accum}: use a smaller batch or more data"
        )
    pad_to = run.max_length if run.seq_policy == "fixed" else None
    stream = BatchStream(
        train_ds, sampler, pad_to=pad_to, device=device, epoch=state.epoch,
        offset=state.batch_in_epoch,
    )  # fmt: skip
    history = out / HISTORY_JSONL
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_history(history, state.step)

    step, losses, accuracies = state.step, [], []
    pending: list[tuple[int, int, torch.Tensor]] = []
    extra = dict(state.extra)

    def flush() -> None:
        # One sync per log interval: average the pending losses over ranks, then record them.
        if not pending:
            return
        trainer.check_finite()
        values = all_reduce_sum(torch.stack([p[2] for p in pending]).float(), ctx)
        values = (values / ctx.world_size).tolist()
        rows = [(s, e, v) for (s, e, _), v in zip(pending, values, strict=True)]
        losses.extend((s, v) for s, _, v in rows)
        if ctx.is_main:
            # One durable append per log interval (fsynced, a torn tail repaired, a planted
            # symlink refused), like the ledger: a kill leaves whole lines only.
            lines = "".join(
                json.dumps({"step": s, "epoch": e, "loss": v}) + "\n" for s, e, v in rows
            )
            append_durably(history, lines.encode())
            s, e, v = rows[-1]
            log(f"step {s} epoch {e} loss {v:.4f}")
        pending.clear()

    def checkpoint(epoch: int, offset: int) -> None:
        flush()
        rngs = all_gather_objects(rng_state(device), ctx)
        if ctx.is_main:
            path = save_checkpoint(
                out,
                model=model,
                optimizer=optimizer,
                scaler=scaler,
                state=TrainingState(step=step, epoch=epoch, batch_in_epoch=offset, extra=extra),
                rank_rng=rngs,
                max_length=run.max_length,
                tokenizer=tokenizer,
                meta={"data": run.data, "model": run.model, "init": run.init},
                keep_last=spec.keep_checkpoints,
            )
            log(f"checkpoint {path}")

    start, samples_before = time.perf_counter(), trainer.totals.samples
    # A resume past --steps stops before its first step, as one past the last epoch does.
    stopped = spec.stop_after_steps is not None and step >= spec.stop_after_steps
    if stopped or stream.epoch >= spec.epochs:
        log(
            f"nothing to train: {out} is at step {step}, epoch {stream.epoch} of {spec.epochs}"
            + (f", --steps {spec.stop_after_steps}" if spec.stop_after_steps else "")
            + " (raise --epochs or --steps to go on)"
        )
    while stream.epoch < spec.epochs and not stopped:
        epoch = stream.epoch
        while stream.offset // run.grad_accum < steps_per_epoch:
            loss = trainer.step(stream)
            step += 1
            pending.append((step, epoch, loss))
            if step % spec.log_every == 0:
                flush()
            if spec.checkpoint_every and step % spec.checkpoint_every == 0:
                checkpoint(epoch, stream.offset)
            if spec.stop_after_steps is not None and step >= spec.stop_after_steps:
                stopped = True
                break
        if stopped:
            break
        flush()
        acc = evaluate(
            model, held_ds, device=device, precision=run.precision, ctx=ctx,
            batch_size=max(64, run.per_device_batch),
        )  # fmt: skip
        accuracies.append((epoch, acc))
        extra[f"accuracy_epoch_{epoch}"] = acc
        log(f"epoch {epoch} held-out accuracy {acc:.4f} ({len(held_ds)} items)")
        stream.start_epoch(epoch + 1)
        checkpoint(epoch + 1, 0)
    flush()
    seconds = time.perf_counter() - start
    samples = (trainer.totals.samples - samples_before) * ctx.world_size
    return FitResult(
        losses=tuple(losses),
        accuracies=tuple(accuracies),
        seconds=seconds,
        samples_per_s=samples / seconds if seconds > 0 else math.nan,
        resumed_from=None if ckpt is None else str(ckpt),
        stopped_early=stopped,
        train_items=len(train_ds),
        heldout_items=len(held_ds),
    )


#: Files that mark a folder as something other than a training --out: a sweep's ledger, a
#: serving ledger, a single checkpoint. Training there would mix unrelated files.
_FOREIGN_MARKERS = (LEDGER_NAME, SERVING_LEDGER, WEIGHTS_FILE)


def check_train_out(out: Path) -> None:
    """Refuse a ``--out`` that is a file, or a folder holding results that are not training's."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; --out takes a folder")
    for name in (HISTORY_JSONL, FIT_JSON, FIT_RESULT_JSON, CHECKPOINTS_DIR):
        refuse_symlink(out / name)  # appended to or written in place: never through a link
    for name in _FOREIGN_MARKERS:
        if (out / name).exists():
            raise UserError(
                f"{out}: holds {name} (not a training output folder); choose another --out"
            )


def check_fresh_out(out: Path) -> None:
    """Refuse ``--no-resume`` into a folder that holds a run: it would lose that run's history.

    A fresh run starts its history at step 0, which would cut the old ``history.jsonl`` to
    nothing; the old checkpoints would be rotated away. The user moves the run aside (or picks
    another ``--out``) on purpose instead.
    """
    out = Path(out)
    held = [p for p in (out / HISTORY_JSONL, out / CHECKPOINTS_DIR) if p.exists()]
    if held:
        raise UserError(
            f"{out}: holds a training run ({held[0].name}); --no-resume would overwrite it -- "
            "resume it (drop --no-resume), or move it aside / choose another --out"
        )


def _truncate_history(path: Path, upto_step: int) -> None:
    """Keep history lines with step <= upto_step (a resume drops what came after its checkpoint).

    A line that does not parse (a torn write, a corrupt byte) is dropped alone: the good lines
    after it are kept.
    """
    if not path.exists():
        return
    keep = []
    for line in path.read_bytes().splitlines():
        try:
            step = json.loads(line)["step"]
            if isinstance(step, int) and not isinstance(step, bool) and step <= upto_step:
                keep.append(line.decode("utf-8") + "\n")
        except (ValueError, KeyError, TypeError):  # JSONDecodeError and bad UTF-8 included
            continue
    atomic_write_text(path, "".join(keep))
