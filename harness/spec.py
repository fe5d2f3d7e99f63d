"""Sweep files: TOML in, a frozen :class:`SweepSpec` out, expanded into a grid of RunSpecs.

A *sweep* is a grid of training runs (*points*). The file fixes what every point shares in
``[run]`` and lists the values to vary in ``[axes]``; the grid is the cartesian product of the
axes (``itertools.product``), each combination one :class:`~distrinews.runspec.RunSpec` with a
stable ``run_id``. Example (``harness/sweeps/cpu-smoke.toml``)::

    name = "cpu-smoke"
    scaling = "weak"            # weak: per-device batch fixed; strong: global batch fixed
    repeats = 1
    timeout_s = 300

    [run]                       # any RunSpec field, shared by every point
    device = "cpu"
    model = "tiny"
    data = "synthetic:2048"
    warmup_steps = 1
    measured_steps = 3

    [run.nccl]                  # NCCL settings for every point (friendly names, see NCCL_KEYS)
    algo = "Ring"

    [axes]                      # each a non-empty list; the grid is their product
    gpus_per_node = [1, 2]      # ranks per node: GPUs on cuda, processes on cpu; or "auto"
    per_device_batch = [8, 16]

    [axes.ddp]                  # DDP knobs to vary, one list per knob
    bucket_cap_mb = [25, 100]

    [axes.nccl]                 # NCCL settings to vary, one list per setting
    proto = ["LL", "Simple"]

Errors in a sweep file raise :class:`UserError` with one line naming the file, the key and
what is allowed; parsing writes nothing.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import itertools
import math
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distrinews.errors import UserError
from distrinews.runspec import DDPKnobs, RunSpec
from distrinews.safeio import check_value
from distrinews.synthetic import is_synthetic

from .max_batch import MaxBatchSearch

SCALING_MODES = ("weak", "strong")
STRONG_VIA = ("batch", "accum")
LAUNCHERS = ("local", "slurm")

#: Most repeats of one configuration (more is a typo, not a noise estimate).
MAX_REPEATS = 100
#: Most points a sweep expands to unless the caller raises it (--max-points): a typo in an
#: axis must not make --dry-run build a million specs.
DEFAULT_MAX_POINTS = 10_000
#: CPU ranks per core a synthetic-sleep point may start (its ranks sleep, so they may outnumber
#: the cores -- 8 on 2 cores is the projection check -- but each is a process with its memory).
SLEEP_RANKS_PER_CORE = 8
#: Longest sweep name (it is a folder name; file systems stop at 255 bytes).
MAX_NAME_LEN = 100

TOP_KEYS = (
    "name",
    "description",
    "scaling",
    "strong_via",
    "repeats",
    "timeout_s",
    "gate",
    "run",
    "axes",
    "max_batch",
    "estimate",
)
#: Keys of the optional [estimate] table: how long one point takes, as measured, and where.
ESTIMATE_KEYS = ("point_s", "measured_on")
#: Keys of the optional [gate] table: the regression gate's tolerances for this machine class.
GATE_KEYS = ("rtol", "efficiency_tol_pp")

#: RunSpec fields the harness sets itself (never in [run] or [axes] by their own name).
_MANAGED = frozenset({"nodes", "nproc_per_node", "repeat", "ddp", "nccl_env"})
_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunSpec) if f.name not in _MANAGED)
_DDP_FIELDS = tuple(f.name for f in dataclasses.fields(DDPKnobs))
#: Axis names besides RunSpec fields: the GPU count and strong scaling's global batch.
_SPECIAL_AXES = ("nodes", "gpus_per_node", "global_batch")
_AXIS_KEYS = (*_SPECIAL_AXES, *_RUN_FIELDS, "ddp", "nccl")

# -- NCCL settings ---------------------------------------------------------------------------

_NCCL_ALGOS = ("Ring", "Tree", "CollnetDirect", "CollnetChain", "NVLS", "NVLSTree", "PAT")
_NCCL_PROTOS = ("LL", "LL128", "Simple")


def _nccl_list(allowed: tuple[str, ...]) -> Callable[[str, Any], str]:
    """NCCL_ALGO / NCCL_PROTO take one name or a comma list, case-insensitively ("^" negates)."""
    lower = {a.lower(): a for a in allowed}

    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise UserError(f"{key} = {value!r}: expected a string; allowed: {', '.join(allowed)}")
        parts = value.lstrip("^").split(",")
        bad = [p for p in parts if p.strip().lower() not in lower]
        if bad:
            raise UserError(f"{key} = {value!r}: unknown {bad[0]!r}; allowed: {', '.join(allowed)}")
        return value

    return check


def _positive_int(key: str, value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{key} = {value!r}: expected an integer >= 1")
    return str(value)


def _flag(key: str, value: Any) -> str:
    if not isinstance(value, bool):
        raise UserError(f"{key} = {value!r}: expected true or false")
    return "1" if value else "0"


#: Friendly key -> (environment variable, validator returning the value as the env string).
NCCL_KEYS: dict[str, tuple[str, Callable[[str, Any], str]]] = {
    "algo": ("NCCL_ALGO", _nccl_list(_NCCL_ALGOS)),
    "proto": ("NCCL_PROTO", _nccl_list(_NCCL_PROTOS)),
    "min_nchannels": ("NCCL_MIN_NCHANNELS", _positive_int),
    "max_nchannels": ("NCCL_MAX_NCHANNELS", _positive_int),
    "buffsize": ("NCCL_BUFFSIZE", _positive_int),
    "p2p_disable": ("NCCL_P2P_DISABLE", _flag),
    "ib_disable": ("NCCL_IB_DISABLE", _flag),
}
# \Z, not $: "$" also matches before a trailing newline, and "ok\n" is no folder name.
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def check_name(name: object, *, where: str) -> None:
    """The rule for a results folder's name (a sweep's, a serving benchmark's): letters, digits,
    '.', '_' and '-', starting with a letter or digit, at most MAX_NAME_LEN characters -- a
    single folder that cannot climb out of --results or hide as a dotfile."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"{where} = {name!r}: use letters, digits, '-', '_' or '.'")
    if len(name) > MAX_NAME_LEN:
        raise UserError(f"{where} is {len(name)} characters; at most {MAX_NAME_LEN}")


_ENV_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")


def nccl_env(settings: dict[str, Any], *, where: str) -> dict[str, str]:
    """Friendly NCCL settings (``algo = "Ring"``, ``extra_env = {...}``) -> environment dict."""
    env: dict[str, str] = {}
    for key, value in settings.items():
        if key == "extra_env":
            if not isinstance(value, dict):
                raise UserError(f'{where}.extra_env: expected a table of NAME = "value"')
            for name, raw in value.items():
                if not _ENV_NAME.match(name):
                    raise UserError(f"{where}.extra_env: {name!r} is not an environment name")
                if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
                    raise UserError(f"{where}.extra_env.{name} = {raw!r}: expected a string")
                env[name] = str(raw)
        elif key in NCCL_KEYS:
            var, check = NCCL_KEYS[key]
            try:
                env[var] = check(key, value)
            except UserError as exc:
                raise UserError(f"{where}.{exc}") from None
        else:
            raise UserError(
                f"{where}: unknown key {key!r}; allowed: {', '.join([*NCCL_KEYS, 'extra_env'])}"
            )
    mins, maxs = env.get("NCCL_MIN_NCHANNELS"), env.get("NCCL_MAX_NCHANNELS")
    if mins and maxs and int(mins) > int(maxs):
        raise UserError(f"{where}: min_nchannels {mins} > max_nchannels {maxs}")
    return env


# -- the spec --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What the machine (or allocation) offers; decides which points can run."""

    nodes: int = 1
    """Nodes available: 1 for the local launcher, the allocation's size under SLURM."""
    gpus_per_node: int = 0
    """CUDA devices per node (torch.cuda.device_count() locally; 0 on a CPU machine)."""
    launcher: str = "local"
    """local (one torchrun on this machine) or slurm (srun + torchrun per point)."""
    cpus_per_node: int = field(default_factory=lambda: local_cpu_count())
    """CPU cores per node: a CPU point runs at most this many ranks (one core each)."""


def local_cpu_count() -> int:
    """Cores this process may run on (the affinity mask, which containers and SLURM narrow)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, kw_only=True)
class Point:
    """One expanded grid point: its RunSpec and, if it cannot run here, why."""

    spec: RunSpec
    """The run, exactly as the worker will receive it."""
    skip_reason: str | None = None
    """None when the point can run; else a one-line reason (status "skipped" in the ledger)."""

    @property
    def run_id(self) -> str:
        return self.spec.run_id


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A parsed sweep file. Pure data; :meth:`expand` turns it into points."""

    name: str
    """Folder name under results/ (letters, digits, '-', '_', '.')."""
    description: str = ""
    """One line on what the sweep measures."""
    scaling: str = "weak"
    """weak: per-device batch fixed as GPUs grow; strong: global batch fixed (axes.global_batch)."""
    strong_via: str = "batch"
    """How strong scaling keeps the global batch: shrink the per-device batch, or accumulate."""
    repeats: int = 1
    """Each configuration runs this many times (RunSpec.repeat 0..repeats-1) for noise estimates."""
    timeout_s: float = 900.0
    """Per-point wall-clock limit; past it the whole torchrun process group is killed."""
    gate: tuple[tuple[str, float], ...] = ()
    """The [gate] table: ``compare`` tolerances (rtol, efficiency_tol_pp) that suit the noise of
    the machine class this sweep runs on; a baseline's sweep.json carries them to the gate, and
    command-line options still win."""
    run: RunSpec = field(default_factory=RunSpec)
    """The template every point starts from (the [run] table)."""
    axes: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    """Ordered (axis name, values); DDP knobs are "ddp.<knob>", NCCL settings "nccl.<key>"."""
    source: str = "<sweep>"
    """Where the spec came from, for messages."""
    max_batch: MaxBatchSearch = field(default_factory=MaxBatchSearch)
    """The [max_batch] table: search the largest per-device batch that fits (off by default)."""
    point_s: float | None = None
    """The [estimate] table's ``point_s``: seconds one point took where it was measured (start
    to ledger row, torchrun and the explain phase included). The sweep's first line multiplies
    it by the points to run, when the folder has no earlier runs to estimate from."""
    measured_on: str = ""
    """The [estimate] table's ``measured_on``: the machine and the command ``point_s`` comes
    from (a figure without its machine means nothing); printed beside the estimate."""

    def __post_init__(self) -> None:
        check_name(self.name, where=f"{self.source}: name")
        if self.point_s is not None and (
            not isinstance(self.point_s, (int, float))
            or isinstance(self.point_s, bool)
            or not math.isfinite(self.point_s)
            or self.point_s <= 0
        ):
            raise UserError(
                f"{self.source}: estimate.point_s = {self.point_s!r}; expected a finite number > 0"
            )
        if not isinstance(self.measured_on, str) or (
            self.point_s is not None and not self.measured_on.strip()
        ):
            raise UserError(
                f"{self.source}: estimate.measured_on = {self.measured_on!r}; expected a string "
                "naming the machine and command point_s was measured with"
            )
        if self.scaling not in SCALING_MODES:
            raise UserError(
                f"{self.source}: scaling = {self.scaling!r}; allowed: {', '.join(SCALING_MODES)}"
            )
        if self.strong_via not in STRONG_VIA:
            raise UserError(
                f"{self.source}: strong_via = {self.strong_via!r}; allowed: {', '.join(STRONG_VIA)}"
            )
        if (
            not isinstance(self.repeats, int)
            or isinstance(self.repeats, bool)
            or not 1 <= self.repeats <= MAX_REPEATS
        ):
            raise UserError(
                f"{self.source}: repeats = {self.repeats!r}; expected an integer 1..{MAX_REPEATS}"
            )
        if (
            not isinstance(self.timeout_s, (int, float))
            or isinstance(self.timeout_s, bool)
            or not math.isfinite(self.timeout_s)
            or self.timeout_s <= 0
        ):
            raise UserError(
                f"{self.source}: timeout_s = {self.timeout_s!r}; expected a finite number > 0"
            )
        for key, value in self.gate:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and (0 <= value < 1 if key == "rtol" else value >= 0)
            if key not in GATE_KEYS or not ok:
                raise UserError(
                    f"{self.source}: gate.{key} = {value!r}; allowed: rtol a fraction in [0, 1), "
                    "efficiency_tol_pp a number >= 0"
                )
        names = [name for name, _ in self.axes]
        if self.scaling == "strong" and "global_batch" not in names:
            raise UserError(
                f"{self.source}: scaling = 'strong' needs axes.global_batch "
                "(the global batch held fixed)"
            )
        if self.scaling == "weak" and "global_batch" in names:
            raise UserError(
                f"{self.source}: axes.global_batch is for scaling = 'strong'; weak scaling fixes "
                "per_device_batch"
            )
        derived = "per_device_batch" if self.strong_via == "batch" else "grad_accum"
        if self.scaling == "strong" and derived in names:
            raise UserError(
                f"{self.source}: axes.{derived} is derived from global_batch when "
                f"strong_via = {self.strong_via!r}; remove it"
            )

    # -- expansion -------------------------------------------------------------------------

    def grid_size(self, resources: Resources) -> int:
        """How many points :meth:`expand` would build (before duplicates are dropped)."""
        size = self.repeats
        for name, values in self.axes:
            size *= len(self._resolve_axis(name, values, resources))
        return size

    def expand(self, resources: Resources, *, max_points: int = DEFAULT_MAX_POINTS) -> list[Point]:
        """The grid in rounds: every configuration once (ascending world size, then file order),
        then every configuration again for the next repeat; duplicates dropped.

        Points that cannot run on ``resources`` are kept with a ``skip_reason``, so the ledger
        says what was not measured and why. A grid larger than ``max_points`` is refused before
        anything is built (the product of the axis lengths is known up front).
        """
        size = self.grid_size(resources)
        if size > max_points:
            lengths = " x ".join(
                f"{len(self._resolve_axis(n, v, resources))} {n}" for n, v in self.axes
            )
            raise UserError(
                f"{self.source}: the grid has {size:,} points ({lengths} x {self.repeats} "
                f"repeats), more than the limit of {max_points:,}; shrink the axes or raise "
                "the limit with --max-points"
            )
        names = [name for name, _ in self.axes]
        value_lists = [self._resolve_axis(name, values, resources) for name, values in self.axes]
        points: list[Point] = []
        for combo in itertools.product(*value_lists):
            choice = dict(zip(names, combo, strict=True))
            for repeat in range(self.repeats):
                points.append(self._point(choice, repeat, resources))
        # Stable sort, repeat first: round r measures every configuration once before round r+1
        # starts, so a noisy minute (a neighbour on a shared host, clocks, temperature) lands on
        # one repeat of several configurations -- noise their medians absorb -- instead of on
        # every repeat of one configuration, where it reads as a regression (all 5 repeats of
        # cpu-smoke's 2-rank point ran 18% slow back to back in one CI run) and biases the
        # efficiency N vs N0, whose two ends would otherwise be measured minutes apart. Inside
        # a round: ascending GPU count, so small, cheap points fail fast and run first.
        points.sort(key=lambda p: (p.spec.repeat, p.spec.world_size))
        unique: dict[str, Point] = {}
        for point in points:
            unique.setdefault(point.run_id, point)
        return list(unique.values())

    def _resolve_axis(self, name: str, values: tuple[Any, ...], res: Resources) -> tuple[Any, ...]:
        if name == "gpus_per_node" and values == ("auto",):
            return auto_gpu_counts(res.gpus_per_node)
        return values

    def _point(self, choice: dict[str, Any], repeat: int, res: Resources) -> Point:
        run = dict(self.run.to_dict())
        ddp = dict(run.pop("ddp"))
        env = dict(run.pop("nccl_env"))
        global_batch = None
        for name, value in choice.items():
            if name.startswith("ddp."):
                ddp[name[4:]] = value
            elif name.startswith("nccl."):
                key = name[5:]
                env.update(nccl_env({key: value}, where=f"{self.source}: axes.nccl"))
            elif name == "gpus_per_node":
                run["nproc_per_node"] = value
            elif name == "global_batch":
                global_batch = value
            else:
                run[name] = value
        run.update(ddp=ddp, nccl_env=env, repeat=repeat)
        reason = None
        if global_batch is not None:
            run, reason = _strong(run, global_batch, self.strong_via)
        spec = RunSpec(**run)
        return Point(spec=spec, skip_reason=reason or why_skipped(spec, res))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "scaling": self.scaling,
            "strong_via": self.strong_via,
            "repeats": self.repeats,
            "timeout_s": self.timeout_s,
            "gate": dict(self.gate),
            "run": self.run.to_dict(),
            "axes": {name: list(values) for name, values in self.axes},
            "source": self.source,
            "max_batch": self.max_batch.to_dict(),
            "estimate": {"point_s": self.point_s, "measured_on": self.measured_on},
        }

    def with_run(self, **overrides: Any) -> SweepSpec:
        """A copy with template fields replaced and any axis over those fields dropped.

        For CLI overrides such as ``--data``: the user's value wins over the file's axis.
        """
        run = dataclasses.replace(self.run, **overrides)
        axes = tuple((n, v) for n, v in self.axes if n not in overrides)
        return dataclasses.replace(self, run=run, axes=axes)


def _strong(run: dict[str, Any], global_batch: int, via: str) -> tuple[dict[str, Any], str | None]:
    """Strong scaling: derive per_device_batch (or grad_accum) so the global batch is fixed."""
    world = run["nodes"] * run["nproc_per_node"]
    if via == "batch":
        div = world * run["grad_accum"]
        if global_batch % div:
            return run, (
                f"global batch {global_batch} is not divisible by {world} ranks x grad_accum "
                f"{run['grad_accum']}"
            )
        return {**run, "per_device_batch": global_batch // div}, None
    div = world * run["per_device_batch"]
    if global_batch % div:
        return run, (
            f"global batch {global_batch} is not divisible by {world} ranks x per_device_batch "
            f"{run['per_device_batch']}"
        )
    return {**run, "grad_accum": global_batch // div}, None


def auto_gpu_counts(available: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``available``, plus ``available`` itself (1..N on any machine)."""
    if available < 1:
        return (1,)  # a CUDA sweep on a CPU machine: one point, skipped with the reason
    counts = {available}
    n = 1
    while n < available:
        counts.add(n)
        n *= 2
    return tuple(sorted(counts))


def why_skipped(spec: RunSpec, res: Resources) -> str | None:
    """Why ``spec`` cannot run on ``res`` (one line), or None when it can."""
    if (reason := spec.unsupported()) is not None:
        return reason
    if spec.nodes > res.nodes:
        if res.launcher == "local":
            return (
                f"needs {spec.nodes} nodes; the local launcher runs on one (use --launcher slurm "
                "inside an allocation)"
            )
        return f"needs {spec.nodes} nodes; the allocation has {res.nodes}"
    if (reason := too_many_ranks(spec, res)) is not None:
        return reason
    if spec.device == "cpu" and spec.precision == "tf32":
        return "tf32 is a CUDA matmul mode; it has no meaning on cpu"
    return None


def too_many_ranks(spec: RunSpec, res: Resources) -> str | None:
    """Why ``spec`` starts more ranks per node than ``res`` has room for (one line), or None.

    The bound is named in the line: the GPU count for cuda, the core count for cpu (and for
    the synthetic-sleep shape, whose ranks sleep instead of computing, SLEEP_RANKS_PER_CORE
    per core: each rank is still a process of its own, so the count must stay finite).
    """
    n = spec.nproc_per_node
    if spec.device == "cuda" and n > res.gpus_per_node:
        plural = "" if n == 1 else "s"
        return f"needs {n} GPU{plural} per node; this machine has {res.gpus_per_node}"
    if spec.device != "cpu":
        return None
    cores = res.cpus_per_node
    if is_synthetic(spec.model):
        if n > SLEEP_RANKS_PER_CORE * cores:
            return (
                f"needs {n} CPU ranks per node; synthetic-sleep ranks may outnumber the cores, "
                f"but at most {SLEEP_RANKS_PER_CORE} per core: {SLEEP_RANKS_PER_CORE * cores} "
                f"on this machine's {cores} core{'' if cores == 1 else 's'}"
            )
        return None
    if n > cores:
        # More gloo ranks than cores time-slice one another: the "scaling" would measure the
        # scheduler, not DDP. The synthetic-sleep shape is the exception: its compute is a
        # sleep, so its ranks do not contend for cores (that is what it is for).
        return (
            f"needs {n} CPU rank{'' if n == 1 else 's'} per node; this machine has "
            f"{cores} core{'' if cores == 1 else 's'}"
        )
    return None


# -- parsing ---------------------------------------------------------------------------------


def load_sweep(path: str | Path) -> SweepSpec:
    """Parse a sweep file; any problem is one UserError line naming the file and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such sweep file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read sweep file ({exc})") from None
    return parse_sweep(text, source=str(path))


def parse_sweep(text: str, *, source: str = "<sweep>") -> SweepSpec:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: invalid TOML: {exc}") from None
    check_value(doc, where=source)  # TOML spells nan and inf; no setting here means them
    _no_unknown(doc, TOP_KEYS, source, "")
    if "name" not in doc:
        raise UserError(f"{source}: missing key 'name' (the results folder name)")
    for key in ("name", "description", "scaling", "strong_via"):
        if key in doc and not isinstance(doc[key], str):
            raise UserError(f"{source}: {key} = {doc[key]!r}: expected a string")
    run = _parse_run(doc.get("run", {}), source)
    axes = _parse_axes(doc.get("axes", {}), run, source)
    scalars = ("name", "description", "scaling", "strong_via", "repeats", "timeout_s")
    kwargs = {k: doc[k] for k in scalars if k in doc}
    if "max_batch" in doc:
        kwargs["max_batch"] = MaxBatchSearch.from_table(doc["max_batch"], source=source)
    gate = _table(doc.get("gate", {}), source, "gate")
    _no_unknown(gate, GATE_KEYS, source, "gate.")
    estimate = _table(doc.get("estimate", {}), source, "estimate")
    _no_unknown(estimate, ESTIMATE_KEYS, source, "estimate.")
    kwargs.update(estimate)
    return SweepSpec(**kwargs, gate=tuple(gate.items()), run=run, axes=axes, source=source)


def _no_unknown(table: dict[str, Any], allowed: Sequence[str], source: str, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise UserError(f"{source}: unknown key '{where}{key}'; allowed: {', '.join(allowed)}")


def _table(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{source}: {where} must be a table ([{where}])")
    return value


def _parse_run(table: Any, source: str) -> RunSpec:
    table = dict(_table(table, source, "run"))
    _no_unknown(table, (*_RUN_FIELDS, "nodes", "gpus_per_node", "ddp", "nccl"), source, "run.")
    ddp = _table(table.pop("ddp", {}), source, "run.ddp")
    _no_unknown(ddp, _DDP_FIELDS, source, "run.ddp.")
    env = nccl_env(_table(table.pop("nccl", {}), source, "run.nccl"), where=f"{source}: run.nccl")
    if "gpus_per_node" in table:
        table["nproc_per_node"] = table.pop("gpus_per_node")
    try:
        return RunSpec(**table, ddp=DDPKnobs(**ddp), nccl_env=env)
    except UserError as exc:
        raise UserError(f"{source}: run.{exc}") from None


def _parse_axes(table: Any, run: RunSpec, source: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    table = _table(table, source, "axes")
    _no_unknown(table, _AXIS_KEYS, source, "axes.")
    axes: list[tuple[str, tuple[Any, ...]]] = []
    for name, values in table.items():
        if name in ("ddp", "nccl"):
            sub = _table(values, source, f"axes.{name}")
            allowed = _DDP_FIELDS if name == "ddp" else (*NCCL_KEYS, "extra_env")
            _no_unknown(sub, allowed, source, f"axes.{name}.")
            for key, sub_values in sub.items():
                full = f"{name}.{key}"
                axes.append((full, _axis_values(full, sub_values, run, source)))
        else:
            axes.append((name, _axis_values(name, values, run, source)))
    return tuple(axes)


def _axis_values(name: str, values: Any, run: RunSpec, source: str) -> tuple[Any, ...]:
    """Check an axis list value by value, so an error names the exact entry."""
    if name == "gpus_per_node" and values == "auto":
        return ("auto",)
    if not isinstance(values, list):
        raise UserError(f"{source}: axes.{name} = {values!r}: expected a list, e.g. [{values!r}]")
    if not values:
        raise UserError(f"{source}: axes.{name} is empty; give at least one value")
    for i, value in enumerate(values):
        where = f"{source}: axes.{name}[{i}]"
        try:
            _check_axis_value(name, value, run)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    return tuple(values)


def _check_axis_value(name: str, value: Any, run: RunSpec) -> None:
    """Validate one axis value by building the template with it (RunSpec knows the rules)."""
    if name in ("gpus_per_node", "global_batch"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{value!r} is not allowed; expected an integer >= 1")
    elif name.startswith("ddp."):
        dataclasses.replace(run.ddp, **{name[4:]: value})
    elif name.startswith("nccl."):
        nccl_env({name[5:]: value}, where="nccl")
    else:
        dataclasses.replace(run, **{name: value})


# -- built-in sweeps -------------------------------------------------------------------------


def builtin_sweeps() -> list[str]:
    """Names of the sweep files shipped in harness/sweeps/."""
    folder = importlib.resources.files("harness") / "sweeps"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_builtin(name: str) -> SweepSpec:
    folder = importlib.resources.files("harness") / "sweeps"
    resource = folder / f"{name}.toml"
    if not resource.is_file():
        raise UserError(f"no built-in sweep {name!r}; built-in: {', '.join(builtin_sweeps())}")
    return parse_sweep(resource.read_text(encoding="utf-8"), source=f"harness/sweeps/{name}.toml")


#: The built-in sweep ``distrinews-bench sweep`` runs with no argument: on a machine with GPUs,
#: and on one without.
DEFAULT_GPU_SWEEP = "default-gpu"
DEFAULT_CPU_SWEEP = "cpu-smoke"


def resolve_sweep(arg: str | None, *, gpu_count: int) -> SweepSpec:
    """A sweep from a path, a built-in name, or (None) the default fitted to the machine."""
    if arg is None:
        return load_builtin(DEFAULT_GPU_SWEEP if gpu_count > 0 else DEFAULT_CPU_SWEEP)
    path = Path(arg)
    if path.suffix == ".toml" or path.exists():
        return load_sweep(path)
    return load_builtin(arg)
