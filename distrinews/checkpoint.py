"""Checkpoints: atomic save, exact resume, and loading a trained model for inference.

A checkpoint is a *directory* (``OUT/checkpoints/step-00000120/``) holding:

* ``checkpoint.pt`` — model weights, optimizer and GradScaler state, and the training position
  (optimizer step, epoch, batch within the epoch) plus every rank's random-number-generator
  state. Together these make a resumed run continue *exactly*: the same batches in the same
  order, the same dropout masks, the same optimizer moments — so the losses after a resume equal
  the uninterrupted run's bit for bit (on CPU; CUDA kernels may be non-deterministic);
* ``config.json`` — the model config, ``max_length``, label names, tokenizer info, the step, and
  the size and SHA-256 of ``checkpoint.pt`` (a truncated or corrupt file is caught before
  ``torch.load`` sees it);
* ``tokenizer/`` — ``tokenizer.save_pretrained`` output, so serving works offline.

Writes are atomic (:func:`distrinews.files.atomic_folder`): everything goes into a hidden temp
directory next to the target, each file is fsynced, then one ``rename`` makes the checkpoint
appear complete or not at all. A kill during a save leaves the previous checkpoints untouched
and, at worst, a ``.tmp-*`` folder that is ignored.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .dataset import file_sha256
from .errors import UserError
from .files import atomic_folder
from .layout import CHECKPOINTS_DIR, CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE
from .model import LABELS, NewsClassifier
from .safeio import decimal, loads_strict

FORMAT_VERSION = 1
_PREFIX = "step-"
#: Config fields that fix the shape of every weight: a checkpoint only fits a model that agrees.
SHAPE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings")


class CheckpointError(UserError):
    """A checkpoint that cannot be used: missing, truncated, corrupt, or for another model."""


@dataclass(frozen=True, kw_only=True)
class InferenceBundle:
    """Everything serving needs, loaded from one checkpoint."""

    model: NewsClassifier
    """The classifier in eval mode, on ``map_location``."""
    tokenizer: Any
    """The tokenizer saved with the checkpoint, or None when the run had none (synthetic data)."""
    max_length: int
    """Tokens per sequence the model was trained with (truncate inputs to it)."""
    labels: tuple[str, ...]
    """Class names in logit order."""
    meta: dict[str, Any] = field(default_factory=dict)
    """config.json as written (step, epoch, source data, accuracy, ...), plus ``path``."""


@dataclass(frozen=True, kw_only=True)
class TrainingState:
    """Where a run stood when its checkpoint was written (:func:`load_training_state`)."""

    step: int
    """Optimizer steps completed."""
    epoch: int
    """Epoch the next batch comes from."""
    batch_in_epoch: int
    """Micro-batches of that epoch already consumed."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON-able state the trainer stored (e.g. the last accuracy)."""


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def rng_state(device: torch.device) -> dict[str, torch.Tensor | None]:
    """This process's torch RNG states (CPU and, on CUDA, the current device's)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: Mapping[str, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(
    out_dir: str | Path,
    *,
    model: NewsClassifier,
    optimizer: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler | None,
    state: TrainingState,
    rank_rng: list[dict[str, torch.Tensor | None]],
    max_length: int,
    tokenizer: Any = None,
    meta: Mapping[str, Any] | None = None,
    keep_last: int = 2,
) -> Path:
    """Write ``out_dir/checkpoints/step-<step>/`` atomically; return its path.

    ``rank_rng`` holds every rank's :func:`rng_state` (index = rank), gathered by the caller:
    dropout draws differ per rank, and an exact resume must restore each one. Only rank 0
    calls this. ``keep_last`` older checkpoints are kept (0 keeps all).
    """
    root = Path(out_dir) / CHECKPOINTS_DIR
    final = root / f"{_PREFIX}{state.step:08d}"
    with atomic_folder(final) as tmp:
        payload = {
            "format_version": FORMAT_VERSION,
            "model": model.state_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "scaler": None if scaler is None or not scaler.is_enabled() else scaler.state_dict(),
            "rank_rng": rank_rng,
        }
        weights = tmp / WEIGHTS_FILE
        with weights.open("wb") as fh:
            torch.save(payload, fh)
        tok_saved = False
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
            tok_saved = True
        config = {
            "format_version": FORMAT_VERSION,
            "model_config": model.config.to_dict(),
            "max_length": int(max_length),
            "labels": list(LABELS),
            "tokenizer": {"saved": tok_saved, "class": type(tokenizer).__name__},
            "step": state.step,
            "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch,
            "world_size": len(rank_rng),
            "extra": dict(state.extra),
            "meta": dict(meta or {}),
            "checkpoint_bytes": weights.stat().st_size,
            "checkpoint_sha256": file_sha256(weights),
        }
        # config.json last: its presence (with the checksum) marks a complete checkpoint.
        with (tmp / CONFIG_FILE).open("w") as fh:
            json.dump(config, fh, indent=2, sort_keys=True)
    if keep_last > 0:
        for stale in list_checkpoints(out_dir)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------
# Finding and verifying
# --------------------------------------------------------------------------------------------


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``out_dir/checkpoints``, oldest first."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        step = decimal(path.name[len(_PREFIX) :])  # ASCII only: 'step-²' is not a checkpoint
        if path.name.startswith(_PREFIX) and step is not None and (path / CONFIG_FILE).is_file():
            found.append((step, path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from itself, its checkpoint.pt, or a training output directory."""
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS_FILE, CONFIG_FILE):
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if (path / WEIGHTS_FILE).exists() or (path / CONFIG_FILE).exists():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(
            f"{path}: not a checkpoint (no {CONFIG_FILE} + {WEIGHTS_FILE}) and no complete "
            f"checkpoint under {path / CHECKPOINTS_DIR}"
        )
    return latest


def read_config(ckpt: Path) -> dict[str, Any]:
    """config.json of a checkpoint directory, with the weights file checked against it."""
    cfg_path = ckpt / CONFIG_FILE
    try:
        config = loads_strict(cfg_path.read_bytes(), where=str(cfg_path))
    except FileNotFoundError:
        raise CheckpointError(f"{cfg_path}: missing (incomplete checkpoint)") from None
    except OSError as exc:
        raise CheckpointError(f"{cfg_path}: unreadable ({exc.strerror})") from None
    except UserError as exc:  # NaN/Infinity, huge integers, bad UTF-8, not JSON
        detail = str(exc).removeprefix(f"{cfg_path}: ")
        raise CheckpointError(f"{cfg_path}: unreadable ({detail})") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format_version {version!r} is not supported; "
            f"this distrinews reads {FORMAT_VERSION}"
        )
    _check_config_types(config, cfg_path)
    weights = ckpt / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    size = weights.stat().st_size
    if size != config.get("checkpoint_bytes"):
        expected = config.get("checkpoint_bytes")
        raise CheckpointError(
            f"{weights}: truncated or corrupt ({size} bytes, expected {expected})"
        )
    if file_sha256(weights) != config.get("checkpoint_sha256"):
        raise CheckpointError(f"{weights}: corrupt (SHA-256 does not match {CONFIG_FILE})")
    return config


#: config.json fields every loader relies on, and the JSON types they must have.
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "step": (int,),
    "epoch": (int,),
    "batch_in_epoch": (int,),
    "max_length": (int,),
    "world_size": (int,),
    "checkpoint_bytes": (int,),
    "checkpoint_sha256": (str,),
    "model_config": (dict,),
}


def _check_config_types(config: dict[str, Any], cfg_path: Path) -> None:
    """One line naming the field when config.json holds a wrong type (a list for a step...)."""
    for name, types in _CONFIG_TYPES.items():
        value = config.get(name)
        if value is None:
            raise CheckpointError(f"{cfg_path}: field {name} is missing")
        if isinstance(value, bool) or not isinstance(value, types):
            raise CheckpointError(
                f"{cfg_path}: field {name} = {str(value)[:40]!r}: expected "
                f"{' or '.join(t.__name__ for t in types)}"
            )
    if not 1 <= config["max_length"] <= 8192:
        raise CheckpointError(f"{cfg_path}: field max_length = {config['max_length']}: not 1..8192")
    labels = config.get("labels", LABELS)
    if not isinstance(labels, list | tuple) or not all(isinstance(x, str) for x in labels):
        raise CheckpointError(f"{cfg_path}: field labels: expected a list of names")
    for key in ("tokenizer", "extra"):
        if key in config and not isinstance(config[key], dict):
            raise CheckpointError(f"{cfg_path}: field {key}: expected an object")


def check_shape(config: Mapping[str, Any], model: NewsClassifier, *, where: Path) -> None:
    """Raise CheckpointError if the checkpoint's weights cannot fit ``model``."""
    theirs = config.get("model_config", {})
    ours = model.config.to_dict()
    diffs = [
        f"{name} {theirs.get(name)!r} vs {ours.get(name)!r}"
        for name in SHAPE_FIELDS
        if theirs.get(name) != ours.get(name)
    ]
    if len(theirs.get("id2label", {})) != len(ours.get("id2label", {})):
        diffs.append(f"labels {len(theirs.get('id2label', {}))} vs {len(ours.get('id2label', {}))}")
    if diffs:
        raise CheckpointError(
            f"{where}: checkpoint is for another model shape (checkpoint vs this run: "
            f"{', '.join(diffs)})"
        )


def _load_payload(ckpt: Path, map_location: Any, **kwargs: Any) -> Any:
    """``torch.load`` of the weights file, data only; any failure is one CheckpointError line."""
    path = ckpt / WEIGHTS_FILE
    try:
        # weights_only: a checkpoint is data; never execute pickled code from a file on disk.
        return torch.load(path, map_location=map_location, weights_only=True, **kwargs)
    except pickle.UnpicklingError as exc:
        if not str(exc).startswith("Weights only load failed"):
            raise CheckpointError(f"{path}: cannot load (not a torch.save file)") from None
        # torch's message is a page (the type it refused, how to allow it): the point is that
        # this file holds objects, not weights, and loading them would run their code.
        raise CheckpointError(
            f"{path}: holds pickled objects that are not tensors or plain data; refusing to "
            "load it (it would run their code) -- not a checkpoint distrinews wrote"
        ) from None
    except Exception as exc:  # a torn zip, a bad storage, a wrong type: the file is unusable
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{path}: cannot load ({first})") from None


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_training_state(
    path: str | Path,
    *,
    model: NewsClassifier,
    optimizer: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler | None,
    rank: int,
    world_size: int,
    device: torch.device,
) -> TrainingState:
    """Restore model, optimizer, scaler and this rank's RNG from a checkpoint (exact resume).

    Everything is verified (checksum, shape, world size) before anything is modified.
    """
    ckpt = resolve_checkpoint(path)
    config = read_config(ckpt)
    check_shape(config, model, where=ckpt)
    if config.get("world_size") != world_size:
        raise CheckpointError(
            f"{ckpt}: written by {config.get('world_size')} rank(s); an exact resume needs the "
            f"same world size, this run has {world_size}"
        )
    payload = _load_payload(ckpt, "cpu")
    # Everything is checked before anything is loaded: a checkpoint written by another program
    # (or edited, with its checksum updated) must fail here with one line, not mid-load or in
    # the first optimizer step with a traceback.
    where = ckpt / WEIGHTS_FILE
    if not isinstance(payload, dict):
        raise CheckpointError(f"{where}: holds a {type(payload).__name__}, not a checkpoint")
    _check_model_state(_model_state(payload, ckpt), model, where=where)
    rank_rng = payload.get("rank_rng")
    if not isinstance(rank_rng, list) or len(rank_rng) != world_size:
        held = f"{len(rank_rng)}" if isinstance(rank_rng, list) else "no list of"
        raise CheckpointError(f"{ckpt}: holds {held} RNG states for {world_size} ranks")
    _check_rng_state(rank_rng[rank], where=where, rank=rank)
    if (payload.get("scaler") is None) != (scaler is None or not scaler.is_enabled()):
        raise CheckpointError(f"{ckpt}: precision differs (GradScaler state present vs not)")
    if optimizer is not None:
        if payload.get("optimizer") is None:
            raise CheckpointError(f"{ckpt}: holds no optimizer state; cannot resume training")
        _check_optimizer_state(payload["optimizer"], optimizer, where=where)
    try:
        model.load_state_dict(payload["model"])
        if optimizer is not None:
            optimizer.load_state_dict(payload["optimizer"])
        if scaler is not None and payload.get("scaler") is not None:
            scaler.load_state_dict(payload["scaler"])
        set_rng_state(rank_rng[rank], device)
    except Exception as exc:  # what the checks above cannot foresee: still one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{where}: cannot restore the training state ({first})") from None
    return TrainingState(
        step=int(config["step"]),
        epoch=int(config["epoch"]),
        batch_in_epoch=int(config["batch_in_epoch"]),
        extra=dict(config.get("extra", {})),
    )


def check_resumable(out_dir: str | Path, *, world_size: int) -> Path | None:
    """The checkpoint a run in ``out_dir`` would resume from, checked as far as it can be
    without the model (config and checksum, world size, a weights file of plain data holding
    model weights, every rank's RNG state, optimizer groups); None when there is none.

    For the launcher of a multi-rank run: a bad checkpoint is one line here, before torchrun
    starts ranks that would each refuse it. The file is memory-mapped, so this costs little.
    """
    ckpt = latest_checkpoint(out_dir)
    if ckpt is None:
        return None
    config = read_config(ckpt)
    if config.get("world_size") != world_size:
        raise CheckpointError(
            f"{ckpt}: written by {config.get('world_size')} rank(s); an exact resume needs the "
            f"same world size, this run has {world_size}"
        )
    payload = _load_payload(ckpt, "cpu", mmap=True)
    where = ckpt / WEIGHTS_FILE
    if not isinstance(payload, dict):
        raise CheckpointError(f"{where}: holds a {type(payload).__name__}, not a checkpoint")
    state = _model_state(payload, ckpt)
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{where}: its model weights are not all named tensors")
    rank_rng = payload.get("rank_rng")
    if not isinstance(rank_rng, list) or len(rank_rng) != world_size:
        held = f"{len(rank_rng)}" if isinstance(rank_rng, list) else "no list of"
        raise CheckpointError(f"{ckpt}: holds {held} RNG states for {world_size} ranks")
    for rank, rng in enumerate(rank_rng):
        _check_rng_state(rng, where=where, rank=rank)
    optimizer = payload.get("optimizer")
    if optimizer is not None and not (
        isinstance(optimizer, dict) and isinstance(optimizer.get("param_groups"), list)
    ):
        raise CheckpointError(f"{where}: optimizer state is not for this model's parameters")
    return ckpt


def load_for_inference(path: str | Path, *, map_location: Any = "cpu") -> InferenceBundle:
    """The trained classifier (eval mode), its tokenizer and settings, from a checkpoint.

    ``path`` is a checkpoint directory or a training output directory (the latest checkpoint in
    it is used). Raises :class:`CheckpointError` with a one-line message when it cannot.
    """
    from transformers import AutoTokenizer

    ckpt = resolve_checkpoint(path)
    config = read_config(ckpt)
    model = _model_from_config(ckpt, config)
    payload = _load_payload(ckpt, map_location)
    try:
        model.load_state_dict(_model_state(payload, ckpt))
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{ckpt / WEIGHTS_FILE}: weights do not fit ({first})") from None
    model.to(map_location).eval()
    tokenizer = None
    if config.get("tokenizer", {}).get("saved"):
        if not (ckpt / TOKENIZER_DIR).is_dir():
            raise CheckpointError(f"{ckpt / TOKENIZER_DIR}: missing (config.json says saved)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(ckpt / TOKENIZER_DIR))
        except Exception as exc:  # any failure here means the file cannot be used
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise CheckpointError(
                f"{ckpt / TOKENIZER_DIR}: cannot load tokenizer ({first})"
            ) from None
    return InferenceBundle(
        model=model,
        tokenizer=tokenizer,
        max_length=int(config["max_length"]),
        labels=tuple(config.get("labels", LABELS)),
        meta={**config, "path": str(ckpt)},
    )


def check_inference(path: str | Path) -> Path:
    """Everything :func:`load_for_inference` needs, checked without building real weights.

    The model is built on the ``meta`` device (shapes only, no memory) and the weights file is
    memory-mapped, so a multi-GB checkpoint is checked in well under a second: the config
    describes a buildable model, the file holds a state dict with exactly that model's keys
    and shapes, and a saved tokenizer is present. Raises CheckpointError; returns the folder.
    """
    ckpt = resolve_checkpoint(path)
    config = read_config(ckpt)
    with torch.device("meta"):
        model = _model_from_config(ckpt, config)
    payload = _load_payload(ckpt, "cpu", mmap=True)
    _check_model_state(_model_state(payload, ckpt), model, where=ckpt / WEIGHTS_FILE)
    if config.get("tokenizer", {}).get("saved") and not (ckpt / TOKENIZER_DIR).is_dir():
        raise CheckpointError(f"{ckpt / TOKENIZER_DIR}: missing (config.json says saved)")
    return ckpt


def _model_from_config(ckpt: Path, config: dict[str, Any]) -> NewsClassifier:
    from transformers import DistilBertConfig

    try:
        hf_config = DistilBertConfig.from_dict(config["model_config"])
        # An impossible shape (dim not divisible by n_heads, negative sizes, a string where a
        # size belongs) fails here, in torch or transformers, with many exception types.
        return NewsClassifier.from_config(hf_config)
    except Exception as exc:  # any failure here means the config cannot be a model
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{ckpt / CONFIG_FILE}: bad model_config ({first})") from None


def _check_model_state(state: Mapping[str, Any], model: torch.nn.Module, *, where: Path) -> None:
    """CheckpointError unless ``state`` holds exactly ``model``'s weights, with their shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in expected.items():
        value = state.get(key)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{where}: weights do not fit ({key}: {got}, expected {shape})")
    extra = sorted(str(k) for k in set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{where}: unexpected weight {extra[0]!r}")


def _check_rng_state(state: Any, *, where: Path, rank: int) -> None:
    """CheckpointError unless ``state`` is what :func:`rng_state` wrote (a generator state that
    ``torch.set_rng_state`` takes)."""
    cpu = state.get("cpu") if isinstance(state, dict) else None
    size = torch.get_rng_state().numel()
    if not (isinstance(cpu, torch.Tensor) and cpu.dtype == torch.uint8 and cpu.numel() == size):
        raise CheckpointError(f"{where}: rank {rank}'s RNG state is not a CPU generator state")
    cuda = state.get("cuda")
    if cuda is not None and not (isinstance(cuda, torch.Tensor) and cuda.dtype == torch.uint8):
        raise CheckpointError(f"{where}: rank {rank}'s CUDA RNG state is not a generator state")


def _check_optimizer_state(state: Any, optimizer: torch.optim.Optimizer, *, where: Path) -> None:
    """CheckpointError unless ``state`` fits ``optimizer``: the same groups and parameters, and
    every per-parameter tensor (Adam's moments) the shape of its parameter."""
    groups = state.get("param_groups") if isinstance(state, dict) else None
    per_param = state.get("state") if isinstance(state, dict) else None
    ours = optimizer.param_groups
    if (
        not isinstance(groups, list)
        or not isinstance(per_param, dict)
        or len(groups) != len(ours)
        or any(
            not isinstance(g, dict)
            or not isinstance(g.get("params"), list)
            or len(g["params"]) != len(o["params"])
            for g, o in zip(groups, ours, strict=False)
        )
    ):
        raise CheckpointError(f"{where}: optimizer state is not for this model's parameters")
    params = [p for group in ours for p in group["params"]]
    ids = [i for group in groups for i in group["params"]]
    if not all(type(i) is int for i in ids):
        raise CheckpointError(f"{where}: optimizer state names its parameters wrongly")
    shape_of = {i: tuple(p.shape) for i, p in zip(ids, params, strict=True)}
    for index, entry in per_param.items():
        if type(index) is not int or index not in shape_of or not isinstance(entry, dict):
            raise CheckpointError(f"{where}: optimizer state for an unknown parameter {index!r}")
        for name, value in entry.items():
            if not isinstance(value, torch.Tensor) or value.ndim == 0:
                continue  # a step count, a scalar
            if tuple(value.shape) != shape_of[index]:
                raise CheckpointError(
                    f"{where}: optimizer {name} of parameter {index} has shape "
                    f"{tuple(value.shape)}, expected {shape_of[index]}"
                )


def _model_state(payload: Any, ckpt: Path) -> dict[str, Any]:
    """The model's state dict inside a checkpoint payload, or CheckpointError."""
    state = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{ckpt / WEIGHTS_FILE}: holds no model weights")
    return state
