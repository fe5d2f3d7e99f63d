"""RunSpec: everything that defines one training run (one sweep *point*), as a frozen dataclass.

The harness expands a sweep file into RunSpecs and writes each to ``run.json``; the worker
(``python -m distrinews.worker --spec run.json --out DIR``) reads exactly one. The spec is the
contract between the two packages, so it lives here, in the workload package, which the harness
imports (never the reverse). It is JSON-serialisable, validated on construction (a bad value
raises :class:`~distrinews.errors.UserError` naming the field and what is allowed), and hashed
into a stable ``run_id``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import UserError
from .safeio import loads_strict
from .synthetic import is_synthetic, parse_shape

SPEC_SCHEMA_VERSION = 1

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
SEQ_POLICIES = ("fixed", "dynamic")
COMM_HOOKS = ("none", "fp16", "bf16", "powersgd")
DEVICES = ("cuda", "cpu")
BACKENDS = ("auto", "nccl", "gloo")
INITS = ("random", "pretrained")
#: AdamW learning rate when none is given, by init: fine-tuning a pretrained encoder wants small
#: steps (5e-5, as in the DistilBERT paper's GLUE runs); a random-init model learns next to
#: nothing at 5e-5 within a few hundred steps, and 1e-3 makes the tiny shape learn AG News.
DEFAULT_LR = {"pretrained": 5e-5, "random": 1e-3}
#: Deliberate failures, so tests can drive every failure class through a real launch (planted
#: by distrinews/faults.py, like the slowdowns below).
FAILURE_FAULTS = ("crash", "crash_last", "hang", "oom", "nan", "rank_exit")
#: Planted slowdowns of ``fault_ms`` each, only at world size > 1, so the efficiency they cost
#: is known and its attribution can be checked: slow_rank (the last rank sleeps in every
#: step's forward: a straggler), slow_data (every batch fetch sleeps: data wait), slow_comm (a
#: communication hook delays every step's last all-reduce bucket: exposed communication),
#: busy_cores (a busy process pinned to each core the ranks run on, busy ``fault_ms`` of every
#: 10 ms: contention).
SLOW_FAULTS = ("slow_rank", "slow_data", "slow_comm", "busy_cores")
FAULTS = ("none", *FAILURE_FAULTS, *SLOW_FAULTS)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"{name} = {value!r} is not allowed; allowed: {', '.join(allowed)}")


#: The largest seed: 32 bits, as numpy and most tools take them (the trainer seeds torch with
#: seed * 1000 + rank + 1, which must stay within int64).
MAX_SEED = 2**32 - 1


def _int_at_least(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UserError(f"{name} = {value!r} is not allowed; expected an integer >= {low}")


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UserError(f"{name} = {value!r} is not allowed; expected true or false")


@dataclass(frozen=True, kw_only=True)
class DDPKnobs:
    """DistributedDataParallel settings (see torch.nn.parallel.DistributedDataParallel)."""

    bucket_cap_mb: float = 25.0
    """Gradients are all-reduced in buckets of about this size, overlapping with backward."""
    gradient_as_bucket_view: bool = False
    """Let gradients alias the communication buckets: saves one gradient-sized copy."""
    static_graph: bool = False
    """Promise the set of used parameters never changes, enabling extra DDP optimisations."""
    broadcast_buffers: bool = True
    """Broadcast module buffers from rank 0 before each forward."""
    comm_hook: str = "none"
    """Gradient compression before all-reduce: none, fp16, bf16 or powersgd."""
    powersgd_rank: int = 1
    """Rank of the low-rank approximation when comm_hook = powersgd."""

    def __post_init__(self) -> None:
        if (
            not isinstance(self.bucket_cap_mb, (int, float))
            or isinstance(self.bucket_cap_mb, bool)
            or not math.isfinite(self.bucket_cap_mb)
            or self.bucket_cap_mb <= 0
        ):
            raise UserError(
                f"ddp.bucket_cap_mb = {self.bucket_cap_mb!r} must be a finite number > 0"
            )
        for name in ("gradient_as_bucket_view", "static_graph", "broadcast_buffers"):
            _bool(f"ddp.{name}", getattr(self, name))
        _choice("ddp.comm_hook", self.comm_hook, COMM_HOOKS)
        _int_at_least("ddp.powersgd_rank", self.powersgd_rank, 1)


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One training run. Every field takes part in ``run_id`` (see HASH_OMIT_DEFAULTS)."""

    nodes: int = 1
    """Number of machines."""
    nproc_per_node: int = 1
    """Processes (ranks) per machine: one per GPU on CUDA."""
    device: str = "cuda"
    """cuda or cpu."""
    backend: str = "auto"
    """Process-group backend: auto (nccl on cuda, gloo on cpu), nccl or gloo."""
    model: str = "base"
    """A random-init shape (base, tiny) or, with init = pretrained, a hub name or local dir."""
    init: str = "random"
    """random (same compute, no download) or pretrained."""
    data: str = "synthetic"
    """A load_agnews source: hub, synthetic[:N], or a .csv/.parquet/.jsonl path."""
    tokenizer: str = "distilbert-base-uncased"
    """Hub name, tokenizer dir or vocab.txt (unused for synthetic data)."""
    max_length: int = 128
    """Tokens per sequence at most (truncation); the fixed policy pads every batch to it."""
    seq_policy: str = "fixed"
    """fixed: pad to max_length; dynamic: pad to the longest in the batch, length-grouped."""
    per_device_batch: int = 32
    """Sequences per rank per micro-step."""
    grad_accum: int = 1
    """Micro-steps per optimizer step (gradient accumulation through DDP's no_sync)."""
    precision: str = "bf16"
    """fp32, tf32 (fp32 storage, TF32 matmuls), fp16 (autocast + GradScaler) or bf16 autocast."""
    compile: bool = False
    """Run the model through torch.compile."""
    ddp: DDPKnobs = field(default_factory=DDPKnobs)
    """DistributedDataParallel knobs."""
    nccl_env: tuple[tuple[str, str], ...] = ()
    """NCCL_* (and other) environment variables for the ranks, as sorted (name, value) pairs."""
    warmup_steps: int = 5
    """Optimizer steps run and discarded before the measured window (compilation, caches)."""
    measured_steps: int = 20
    """Optimizer steps in the measured window."""
    lr: float = 5e-5
    """AdamW learning rate."""
    seed: int = 0
    """Seeds model init, data order and synthetic data."""
    repeat: int = 0
    """Repeat index: identical configurations measured several times for noise estimates."""
    fault: str = "none"
    """Deliberate failure for tests (crash on every rank, crash_last on the last rank only --
    on the last node of a multi-node point --, hang, oom, nan, rank_exit) or planted slowdown
    (slow_rank, slow_data, slow_comm, busy_cores; see SLOW_FAULTS), or none."""
    fault_ms: float = 0.0
    """Size of a planted slowdown in milliseconds (per step, or per batch fetch for
    slow_data; for busy_cores, the busy share of every 10 ms); unused by the other faults."""
    explain: bool = True
    """After the measured window, measure what explains the efficiency (compute-only steps,
    the all-reduce ceiling, exposed communication, straggler wait): distrinews/explain.py."""

    KEY_EXCLUDE: ClassVar[frozenset[str]] = frozenset({"repeat", "explain"})
    #: Fields added after results were first recorded: left out of run_id and config_key while
    #: they hold their default, so points measured before they existed keep their ids.
    HASH_OMIT_DEFAULTS: ClassVar[dict[str, Any]] = {"fault_ms": 0.0, "explain": True}

    def __post_init__(self) -> None:
        _int_at_least("nodes", self.nodes, 1)
        _int_at_least("nproc_per_node", self.nproc_per_node, 1)
        _choice("device", self.device, DEVICES)
        _choice("backend", self.backend, BACKENDS)
        if self.device == "cpu" and self.backend == "nccl":
            raise UserError("backend = 'nccl' needs device = 'cuda'; use gloo on cpu")
        _choice("init", self.init, INITS)
        if not isinstance(self.model, str) or not self.model:
            raise UserError(f"model = {self.model!r} must be a non-empty string")
        if is_synthetic(self.model):
            parse_shape(self.model)  # a bad synthetic shape fails here, before any launch
        if not isinstance(self.data, str) or not self.data:
            raise UserError(f"data = {self.data!r} must be a non-empty string")
        _int_at_least("max_length", self.max_length, 8)
        _choice("seq_policy", self.seq_policy, SEQ_POLICIES)
        _int_at_least("per_device_batch", self.per_device_batch, 1)
        _int_at_least("grad_accum", self.grad_accum, 1)
        _choice("precision", self.precision, PRECISIONS)
        _bool("compile", self.compile)
        if isinstance(self.ddp, dict):  # from JSON / TOML
            object.__setattr__(self, "ddp", ddp_from_dict(self.ddp))
        if not isinstance(self.ddp, DDPKnobs):
            raise UserError(f"ddp = {self.ddp!r} must be a table of DDP knobs")
        env = self.nccl_env.items() if isinstance(self.nccl_env, dict) else self.nccl_env
        pairs = tuple(sorted((str(k), str(v)) for k, v in env))
        object.__setattr__(self, "nccl_env", pairs)
        _int_at_least("warmup_steps", self.warmup_steps, 0)
        _int_at_least("measured_steps", self.measured_steps, 1)
        if (
            not isinstance(self.lr, (int, float))
            or isinstance(self.lr, bool)
            or not math.isfinite(self.lr)
            or self.lr <= 0
        ):
            raise UserError(f"lr = {self.lr!r} must be a finite number > 0")
        _int_at_least("seed", self.seed, 0)
        if self.seed > MAX_SEED:  # torch.manual_seed(seed * 1000 + rank + 1) must fit int64
            raise UserError(
                f"seed = {self.seed!r} is not allowed; expected an integer 0..{MAX_SEED}"
            )
        _int_at_least("repeat", self.repeat, 0)
        _choice("fault", self.fault, FAULTS)
        if (
            not isinstance(self.fault_ms, (int, float))
            or isinstance(self.fault_ms, bool)
            or not math.isfinite(self.fault_ms)
            or not 0 <= self.fault_ms <= 60_000
        ):
            raise UserError(f"fault_ms = {self.fault_ms!r} must be a number of ms in 0..60000")
        object.__setattr__(self, "fault_ms", float(self.fault_ms))
        _bool("explain", self.explain)

    # -- derived ---------------------------------------------------------------------------

    def unsupported(self) -> str | None:
        """Why this well-formed spec cannot run with this PyTorch (one line), or None.

        The worker refuses these too; the harness lists them as skipped instead of launching.
        """
        if self.ddp.static_graph and self.grad_accum > 1:
            # Under no_sync(), static-graph DDP asserts (expect_autograd_hooks_) or silently
            # stops all-reducing: pytorch/pytorch#143580.
            return "ddp.static_graph with grad_accum > 1 is broken in PyTorch (#143580)"
        if self.ddp.comm_hook == "bf16" and self.device != "cuda":
            return "ddp.comm_hook = 'bf16' needs CUDA + NCCL (gloo has no bf16 all-reduce)"
        if self.fault == "slow_comm" and self.ddp.comm_hook != "none":
            # DDP takes one communication hook; the delay is planted through that one slot.
            return (
                "fault = 'slow_comm' plants its own communication hook: "
                "needs ddp.comm_hook = 'none'"
            )
        return None

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc_per_node

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step across all ranks."""
        return self.world_size * self.per_device_batch * self.grad_accum

    @property
    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.device == "cuda" else "gloo"

    @property
    def run_id(self) -> str:
        """Stable id of this exact point (repeat included): 12 hex chars of a SHA-256."""
        return _digest(self._hash_body())

    @property
    def config_key(self) -> str:
        """Stable id of the configuration without the repeat index: repeats share it."""
        body = {k: v for k, v in self._hash_body().items() if k not in self.KEY_EXCLUDE}
        return _digest(body)

    def _hash_body(self) -> dict[str, Any]:
        omit = {k for k, v in self.HASH_OMIT_DEFAULTS.items() if getattr(self, k) == v}
        return {k: v for k, v in self.to_dict().items() if k not in omit}

    # -- (de)serialisation -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["nccl_env"] = dict(self.nccl_env)
        return out

    def to_json(self) -> str:
        return json.dumps(
            {"schema_version": SPEC_SCHEMA_VERSION, **self.to_dict()}, indent=2, sort_keys=True
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "spec") -> RunSpec:
        data = dict(data)
        version = data.pop("schema_version", SPEC_SCHEMA_VERSION)
        if version != SPEC_SCHEMA_VERSION:
            raise UserError(
                f"{where}: schema_version {version!r} is not supported; "
                f"this distrinews reads {SPEC_SCHEMA_VERSION}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(
                f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(known))}"
            )
        try:
            return cls(**data)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, *, where: str = "spec") -> RunSpec:
        data = loads_strict(text, where=where)  # NaN, Infinity, huge ints refused here
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a JSON object")
        return cls.from_dict(data, where=where)


def ddp_from_dict(data: dict[str, Any]) -> DDPKnobs:
    known = {f.name for f in dataclasses.fields(DDPKnobs)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"unknown DDP knob {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    return DDPKnobs(**data)


def _digest(body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
