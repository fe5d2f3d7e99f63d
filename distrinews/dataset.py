"""AG News data: loading, tokenization (cached), padding and DDP-aware length-grouped batching.

AG News is a news-topic corpus: each item is a title and a short description labelled World,
Sports, Business or Sci/Tech (120,000 training and 7,600 test items, balanced classes).

The path from text to a training batch:

1. :func:`load_agnews` reads a *source* (the Hugging Face Hub, a local CSV/Parquet/JSONL file, or
   ``synthetic``) into :class:`NewsData`: texts and labels 0..3, whatever the source's own
   convention.
2. :func:`get_tokenizer` returns DistilBERT's WordPiece tokenizer. *Tokenization* splits text
   into sub-word pieces from a fixed 30,522-entry vocabulary and maps them to integer ids,
   framed by the special ``[CLS]`` (start; its final hidden state feeds the classifier) and
   ``[SEP]`` (end) tokens. *Truncation* cuts sequences longer than ``max_length``.
3. :class:`AGNewsDataset` tokenizes everything once, in one batched call, and caches the ids on
   disk keyed by (data, tokenizer, max_length): later runs, and every rank of a DDP job, read the
   cache instead of re-tokenizing. It is a ``torch.utils.data.Dataset`` — the map-style interface
   (``__len__`` plus ``__getitem__(i)``) that lets samplers address items by index, which is what
   ``DistributedSampler`` and :class:`LengthGroupedBatchSampler` need to hand each rank its own
   disjoint share of the indices.
4. Sequences differ in length but a batch is a rectangle, so shorter ones are *padded* with the
   ``[PAD]`` id; ``attention_mask`` is 1 on real tokens and 0 on padding so attention ignores
   it. *Dynamic padding* pads to the longest sequence of each batch instead of ``max_length``;
   *length grouping* puts sequences of similar length in the same batch, so little padding is
   left at all. :meth:`AGNewsDataset.batch` builds a padded batch with a few vectorised numpy
   operations — fast enough that the data path never limits a GPU.

Synthetic data needs no tokenizer and no download: token ids are drawn at random with lengths
from AG News' measured length distribution (:data:`AGNEWS_LENGTH_PERCENTILES`). It is for
throughput runs only; everything built from it says ``synthetic`` in its source name.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import math
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .errors import DataError, UserError
from .files import atomic_write
from .hub import hub_offline, offline_mode_set
from .model import DEFAULT_PRETRAINED, LABELS, VOCAB_SIZE
from .safeio import decimal

HUB_DATASET = "fancyzhx/ag_news"
CACHE_FORMAT_VERSION = 1
PAD_ID = 0  # [PAD] in the uncased WordPiece vocab
CLS_ID = 101  # [CLS]
SEP_ID = 102  # [SEP]
# First id of ordinary word pieces in the uncased vocab (ids below are [unused*] and specials);
# synthetic tokens are drawn from [SYNTH_FIRST_ID, VOCAB_SIZE).
SYNTH_FIRST_ID = 1996

#: Percentiles 0, 1, ..., 100 of the token count per item (title + " " + description, with
#: [CLS] and [SEP], no truncation) of the real AG News test split under the distilbert-base-uncased
#: tokenizer. Measured once from ../shared/data; tests/unit/test_dataset.py re-measures it when
#: the data is at hand. Mean 51.7, median 51, max 276; 50 of 7,600 items exceed 128 tokens.
AGNEWS_LENGTH_PERCENTILES: tuple[int, ...] = (
    18, 25, 27, 29, 30, 31, 32, 33, 34, 35, 35, 36, 36, 37, 37, 38, 38, 39, 39, 40, 40, 40, 41,
    41, 41, 42, 42, 42, 43, 43, 43, 44, 44, 44, 45, 45, 45, 46, 46, 46, 47, 47, 47, 47, 48, 48,
    48, 49, 49, 49, 49, 50, 50, 50, 51, 51, 51, 52, 52, 52, 52, 53, 53, 53, 54, 54, 54, 55, 55,
    55, 56, 56, 56, 57, 57, 58, 58, 59, 59, 59, 60, 60, 61, 62, 62, 63, 64, 64, 65, 66, 67, 68,
    70, 72, 74, 78, 82, 91, 107, 121, 276,
)  # fmt: skip

_ENTITY = re.compile(r"#(\d+);")
#: Longest text field accepted (Python csv's own field limit). AG News texts are under 1,000
#: characters; a multi-megabyte field is a broken file, and tokenizing it would stall a run.
MAX_FIELD_CHARS = 131_072


def clean_text(text: str) -> str:
    """Undo two quirks of the AG News corpus: ``\\`` used as a line break, and HTML entities
    stored without their ``&`` (``#36;`` is ``$``).

    An entity that names no Unicode character (beyond U+10FFFF, or a UTF-16 surrogate) raises
    ValueError; loaders turn it into a DataError naming the file and line.
    """
    return _ENTITY.sub(_entity, text.replace("\\", " ")).strip()


def _entity(match: re.Match[str]) -> str:
    digits = match.group(1)
    code = int(digits) if len(digits) <= 8 else -1
    if not 0 <= code <= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise ValueError(f"HTML entity #{digits[:12]}; names no Unicode character")
    return chr(code)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewsData:
    """Loaded items, before tokenization.

    ``texts`` is ``None`` for synthetic data, which carries ``token_ids`` (already tokenized,
    with [CLS]/[SEP]) instead. ``fingerprint`` identifies the content for the tokenization cache.
    """

    source: str
    labels: np.ndarray
    fingerprint: str
    texts: tuple[str, ...] | None = None
    token_ids: tuple[np.ndarray, ...] | None = None

    @property
    def synthetic(self) -> bool:
        return self.texts is None

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, eval_fraction: float, seed: int = 0) -> tuple[NewsData, NewsData]:
        """A seeded, stratification-free train/held-out split (for accuracy sanity checks)."""
        if not 0.0 < eval_fraction < 1.0:
            raise DataError(f"eval fraction must be in (0, 1), got {eval_fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        n_eval = max(1, round(len(self) * eval_fraction))
        return self._take(order[n_eval:], "train"), self._take(order[:n_eval], "heldout")

    def _take(self, idx: np.ndarray, part: str) -> NewsData:
        idx = np.sort(idx)
        return NewsData(
            source=f"{self.source}[{part}]",
            labels=self.labels[idx],
            fingerprint=_sha256(
                f"{self.fingerprint}:{part}:{hashlib.sha256(idx.tobytes()).hexdigest()}"
            ),
            texts=None if self.texts is None else tuple(self.texts[i] for i in idx),
            token_ids=None if self.token_ids is None else tuple(self.token_ids[i] for i in idx),
        )


def load_agnews(
    source: str | Path = "hub",
    *,
    split: str = "train",
    synthetic_size: int = 120_000,
    seed: int = 0,
) -> NewsData:
    """Load AG News from ``source``; labels always come out as 0..3 (World..Sci/Tech).

    ``source`` is one of:
      * ``"hub"`` — ``fancyzhx/ag_news`` through the ``datasets`` library (needs network);
      * a path to a ``.csv`` in the original AG News layout (class index 1..4, title,
        description; with or without a header row);
      * a path to a ``.parquet`` or ``.jsonl`` file with ``text`` and ``label`` columns (label
        0..3, the hub's convention, or a class name);
      * ``"synthetic"`` (or ``"synthetic:N"``) — N random token sequences with AG News' length
        distribution, balanced labels; for throughput runs only.
    """
    text = str(source)
    if text == "hub":
        return _load_hub(split)
    if text == "synthetic" or text.startswith("synthetic:"):
        size = synthetic_size
        if ":" in text:
            raw = text.split(":", 1)[1]
            if not (parsed := decimal(raw)) or parsed < 1:
                raise DataError(f"synthetic size must be a positive integer, got {raw!r}")
            size = parsed
        return synthetic_agnews(size, seed=seed)
    path = Path(text)
    if not path.exists():
        if path.suffix or os.sep in text or text.startswith("."):
            raise DataError(f"{path}: data file not found")
        raise DataError(
            f"unknown data source {text!r}; allowed: 'hub', 'synthetic', 'synthetic:N', "
            "or a path to a .csv, .parquet or .jsonl file"
        )
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a .csv, .parquet or .jsonl file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    loaders = {".csv": _load_csv, ".parquet": _load_parquet, ".jsonl": _load_jsonl}
    loader = loaders.get(path.suffix.lower())
    if loader is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r}; allowed: .csv, .parquet, .jsonl"
        )
    texts, labels = loader(path)
    if not texts:
        raise DataError(f"{path}: no data rows")
    return NewsData(
        source=str(path),
        labels=np.asarray(labels, dtype=np.int64),
        fingerprint=file_sha256(path),
        texts=tuple(texts),
    )


def _load_csv(path: Path) -> tuple[list[str], list[int]]:
    # utf-8-sig: a byte-order mark (Excel writes one) is dropped, so a header-less file's first
    # label reads "3", not "\ufeff3" (which looked like a header and lost the first row).
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    texts: list[str] = []
    labels: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:  # a field over the limit, a NUL byte, a broken quote
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if line == 1 and decimal(row[0].strip()) is None:
            continue  # header row, e.g. "label,title,description"
        if len(row) < 2:
            raise DataError(
                f"{path}:{line}: expected 3 columns (class index, title, description), "
                f"got {len(row)}"
            )
        raw = row[0].strip()
        if raw not in {"1", "2", "3", "4"}:
            raise DataError(f"{path}:{line}: label {raw!r} is outside 1..4")
        body = " ".join(cell for cell in row[1:3] if cell.strip())
        if not body.strip():
            raise DataError(f"{path}:{line}: missing text (empty title and description)")
        texts.append(_check_text(body, f"{path}:{line}"))
        labels.append(int(raw) - 1)  # the original files count classes from 1
    return texts, labels


def _label_from_value(value: Any, where: str) -> int:
    if isinstance(value, str) and value in LABELS:
        return LABELS.index(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < 4:
        return int(value)
    raise DataError(
        f"{where}: label {value!r} is not allowed; allowed: 0..3 or one of {', '.join(LABELS)}"
    )


def _check_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: missing text")
    if len(value) > MAX_FIELD_CHARS:
        raise DataError(
            f"{where}: text of {len(value):,} characters; at most {MAX_FIELD_CHARS:,} allowed"
        )
    try:
        text = clean_text(value)
        text.encode("utf-8")  # a lone surrogate (JSON "\ud800") cannot reach the tokenizer
    except ValueError as exc:  # UnicodeEncodeError is a ValueError
        reason = "a lone surrogate" if isinstance(exc, UnicodeEncodeError) else str(exc)
        raise DataError(f"{where}: {reason}") from None
    return text


def _load_jsonl(path: Path) -> tuple[list[str], list[int]]:
    from .safeio import loads_strict

    texts: list[str] = []
    labels: list[int] = []
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if line_no == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:  # also refuses bad UTF-8, NaN, deep nesting (no RecursionError)
                obj = loads_strict(line, where=where)
            except UserError as exc:
                raise DataError(str(exc)) from None
            if not isinstance(obj, dict) or "label" not in obj:
                raise DataError(f"{where}: expected an object with 'text' and 'label'")
            texts.append(_check_text(obj.get("text"), where))
            labels.append(_label_from_value(obj["label"], where))
    return texts, labels


def _load_parquet(path: Path) -> tuple[list[str], list[int]]:
    import pandas as pd  # lazy: the worker on a bare GPU node never reads Parquet

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: cannot read Parquet ({type(exc).__name__}: {exc})") from None
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}; need 'text' and 'label'")
    texts = [_check_text(t, f"{path}: row {i + 1}") for i, t in enumerate(frame["text"])]
    labels = [_label_from_value(v, f"{path}: row {i + 1}") for i, v in enumerate(frame["label"])]
    return texts, labels


def _load_hub(split: str) -> NewsData:
    try:
        import datasets  # lazy: heavy, and absent on bare GPU nodes
    except ImportError:
        raise DataError(
            "the 'datasets' package is needed for source 'hub'; install it, or use a local "
            "file or 'synthetic'"
        ) from None
    alternatives = (
        "offline alternatives: a local AG News .csv (original layout), a .parquet/.jsonl with "
        "text/label columns, or 'synthetic'"
    )
    if not offline_mode_set() and hub_offline():
        # Unreachable and not told to be offline: datasets would retry for a minute.
        raise DataError(
            f"cannot load {HUB_DATASET} ({split}): the Hugging Face Hub is unreachable "
            f"(HF_HUB_OFFLINE=1 uses a copy in the local cache); {alternatives}"
        )
    try:
        ds = datasets.load_dataset(HUB_DATASET, split=split)
    except Exception as exc:  # connection errors surface as several exception types
        raise DataError(
            f"cannot load {HUB_DATASET} ({split}) from the Hugging Face Hub "
            f"({type(exc).__name__}); {alternatives}"
        ) from None
    texts = [_check_text(t, f"{HUB_DATASET}[{split}] row {i}") for i, t in enumerate(ds["text"])]
    labels = [_label_from_value(v, f"{HUB_DATASET} row {i}") for i, v in enumerate(ds["label"])]
    return NewsData(
        source=f"hub:{HUB_DATASET}[{split}]",
        labels=np.asarray(labels, dtype=np.int64),
        fingerprint=_sha256(f"hub:{HUB_DATASET}:{split}:{getattr(ds, '_fingerprint', '')}"),
        texts=tuple(texts),
    )


def synthetic_agnews(size: int, *, seed: int = 0) -> NewsData:
    """``size`` random token sequences whose lengths follow AG News' (with [CLS]/[SEP])."""
    if size < 1:
        raise DataError(f"synthetic size must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
    lengths = sample_agnews_lengths(size, rng)
    ids = []
    for n in lengths:
        seq = rng.integers(SYNTH_FIRST_ID, VOCAB_SIZE, size=int(n), dtype=np.int32)
        seq[0], seq[-1] = CLS_ID, SEP_ID
        ids.append(seq)
    return NewsData(
        source=f"synthetic:{size}",
        labels=np.arange(size, dtype=np.int64) % len(LABELS),
        fingerprint=_sha256(f"synthetic:{size}:{seed}:{CACHE_FORMAT_VERSION}"),
        token_ids=tuple(ids),
    )


def sample_agnews_lengths(size: int, rng: np.random.Generator) -> np.ndarray:
    """Token counts drawn by inverse-CDF sampling from :data:`AGNEWS_LENGTH_PERCENTILES`."""
    quantiles = np.asarray(AGNEWS_LENGTH_PERCENTILES, dtype=np.float64)
    u = rng.random(size) * 100.0
    return np.rint(np.interp(u, np.arange(101), quantiles)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def get_tokenizer(name_or_path: str | Path = DEFAULT_PRETRAINED):
    """DistilBERT's tokenizer from a hub name, a local tokenizer directory, or a bare vocab.txt.

    A bare ``vocab.txt`` (one WordPiece per line, as ``distilbert-base-uncased-vocab.txt``)
    builds the real uncased tokenizer with no network at all.
    """
    from transformers import AutoTokenizer, DistilBertTokenizerFast

    path = Path(str(name_or_path))
    if path.is_file():
        n_lines = _check_vocab(path)
        # transformers 5 takes the file as `vocab=`; 4.x as `vocab_file=` (5.x silently ignores
        # `vocab_file=` and builds an empty vocab, hence the size check below).
        try:
            tok = DistilBertTokenizerFast(vocab=str(path), do_lower_case=True)
            if len(tok) != n_lines:
                raise TypeError
        except TypeError:
            tok = DistilBertTokenizerFast(vocab_file=str(path), do_lower_case=True)
        if len(tok) != n_lines:
            raise DataError(f"{path}: vocab has {n_lines} lines but the tokenizer saw {len(tok)}")
        return tok
    if str(name_or_path).endswith(".txt"):
        raise DataError(f"{path}: vocab file not found")
    try:
        # Offline or unreachable: the local cache only, no minute of retries.
        return AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=hub_offline())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot load tokenizer {str(name_or_path)!r} ({type(exc).__name__}); offline "
            "alternatives: a local tokenizer directory, or a bare vocab.txt such as "
            "distilbert-base-uncased-vocab.txt"
        ) from None


#: WordPieces every BERT-style vocab defines; without them the tokenizer cannot frame a text.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def _check_vocab(path: Path) -> int:
    """A bare vocab.txt must be UTF-8 text, one token per line, with the special tokens.

    Returns the number of tokens. One DataError line otherwise (binary, empty, incomplete).
    """
    raw = path.read_bytes()
    if b"\0" in raw:
        raise DataError(f"{path}: vocab file is binary (a NUL byte at offset {raw.index(0)})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: vocab file is not UTF-8 text") from None
    tokens = [t for t in text.splitlines() if t.strip()]
    if not tokens:
        raise DataError(f"{path}: vocab file is empty")
    missing = [t for t in SPECIAL_TOKENS if t not in set(tokens)]
    if missing:
        raise DataError(f"{path}: vocab lacks {', '.join(missing)}; not a WordPiece vocab.txt")
    return len(tokens)


def tokenizer_fingerprint(tokenizer) -> str:
    """Identifies a tokenizer by its class, vocabulary and lower-casing, for the cache key."""
    vocab = tokenizer.get_vocab()
    body = "\n".join(f"{tok}\t{idx}" for tok, idx in sorted(vocab.items(), key=lambda kv: kv[1]))
    lower = getattr(tokenizer, "do_lower_case", None)
    return _sha256(f"{type(tokenizer).__name__}:{lower}:{body}")


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    env = os.environ.get("DISTRINEWS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "distrinews"


class AGNewsDataset(Dataset):
    """Pre-tokenized AG News: ``dataset[i] -> {"input_ids", "attention_mask", "labels"}``.

    Token ids live in one dense ``(n, width)`` int32 matrix (``width`` = longest kept sequence),
    padded with [PAD], plus a length per row; an item is a row cut to its length, and a batch is
    one fancy-index of the matrix. Build it with :meth:`from_data` (tokenizes once, caches).
    """

    def __init__(
        self,
        ids: np.ndarray,
        lengths: np.ndarray,
        labels: np.ndarray,
        *,
        max_length: int,
        source: str,
        cache_hit: bool = False,
    ) -> None:
        if ids.ndim != 2 or len(ids) != len(lengths) or len(ids) != len(labels):
            raise ValueError("ids, lengths and labels must describe the same rows")
        self.ids = ids
        self.lengths = lengths
        self.labels = labels
        self.max_length = max_length
        self.source = source
        #: True when :meth:`from_data` read the token ids from the on-disk cache.
        self.cache_hit = cache_hit

    @classmethod
    def from_data(
        cls,
        data: NewsData,
        tokenizer=None,
        *,
        max_length: int = 128,
        cache_dir: str | Path | None = None,
    ) -> AGNewsDataset:
        """Tokenize ``data`` (or read the cache). ``cache_dir=None`` uses the default cache
        (``$DISTRINEWS_CACHE`` or ``~/.cache/distrinews``); pass ``False`` to disable it."""
        if max_length < 8:
            raise DataError(f"max_length must be >= 8, got {max_length}")
        if data.synthetic:
            ids, lengths = _pack([seq[:max_length] for seq in data.token_ids], max_length)
            for row, n in zip(ids, lengths, strict=True):
                row[n - 1] = SEP_ID  # a truncated sequence still ends with [SEP]
            return cls(ids, lengths, data.labels, max_length=max_length, source=data.source)
        if tokenizer is None:
            raise DataError(f"{data.source}: text data needs a tokenizer")
        key = _sha256(
            f"v{CACHE_FORMAT_VERSION}:{data.fingerprint}:{tokenizer_fingerprint(tokenizer)}:"
            f"{max_length}"
        )
        cache_file = None
        if cache_dir is not False:
            cache_file = Path(cache_dir or default_cache_dir()) / f"tokens-{key[:32]}.npz"
            cached = _read_cache(
                cache_file, len(data), vocab_size=len(tokenizer), max_length=max_length
            )
            if cached is not None:
                ids, lengths = cached
                return cls(
                    ids,
                    lengths,
                    data.labels,
                    max_length=max_length,
                    source=data.source,
                    cache_hit=True,
                )
        ids, lengths = pretokenize(data.texts, tokenizer, max_length=max_length)
        if cache_file is not None:
            _write_cache(cache_file, ids, lengths)
        return cls(ids, lengths, data.labels, max_length=max_length, source=data.source)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = int(self.lengths[index])
        return {
            "input_ids": torch.from_numpy(self.ids[index, :n].astype(np.int64)),
            "attention_mask": torch.ones(n, dtype=torch.int64),
            "labels": torch.tensor(int(self.labels[index]), dtype=torch.int64),
        }

    def batch(
        self,
        indices: Sequence[int] | np.ndarray,
        *,
        pad_to: int | None = None,
        pad_to_multiple_of: int = 8,
    ) -> dict[str, torch.Tensor]:
        """A padded batch of the given items, built with vectorised numpy ops.

        Dynamic padding (``pad_to=None``): pad to the longest item, rounded up to a multiple of
        ``pad_to_multiple_of`` (8 keeps tensor-core friendly shapes and bounds recompiles).
        Fixed padding: ``pad_to=max_length``.
        """
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[idx]
        width = (
            int(pad_to) if pad_to is not None else _round_up(int(lengths.max()), pad_to_multiple_of)
        )
        width = max(width, 1)
        have = min(width, self.ids.shape[1])
        ids = np.zeros((len(idx), width), dtype=np.int64)
        ids[:, :have] = self.ids[idx, :have]
        mask = np.arange(width)[None, :] < lengths[:, None]
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)),
            "labels": torch.from_numpy(self.labels[idx].astype(np.int64)),
        }

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        # DataLoader calls this for a whole batch of indices when it exists.
        return [self[i] for i in indices]

    def padding_stats(
        self,
        batches: Sequence[Sequence[int]],
        *,
        pad_to: int | None = None,
        pad_to_multiple_of: int = 8,
    ) -> dict[str, float]:
        """Real vs padded token counts over ``batches`` (what the hardware computes)."""
        real = padded = 0
        for b in batches:
            lengths = self.lengths[np.asarray(b, dtype=np.int64)]
            width = (
                pad_to if pad_to is not None else _round_up(int(lengths.max()), pad_to_multiple_of)
            )
            real += int(lengths.sum())
            padded += width * len(lengths)
        return {
            "real_tokens": float(real),
            "padded_tokens": float(padded),
            "padding_waste": 1.0 - real / padded if padded else 0.0,
        }


def collate(
    items: Sequence[dict[str, torch.Tensor]],
    *,
    pad_to: int | None = None,
    pad_to_multiple_of: int = 8,
) -> dict[str, torch.Tensor]:
    """Generic dynamic-padding collate for a list of dataset items (the DataLoader path).

    Produces the same batch as :meth:`AGNewsDataset.batch` for the same items.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    lengths = [len(it["input_ids"]) for it in items]
    width = pad_to if pad_to is not None else _round_up(max(lengths), pad_to_multiple_of)
    ids = torch.full((len(items), width), PAD_ID, dtype=torch.int64)
    mask = torch.zeros((len(items), width), dtype=torch.int64)
    for row, (it, n) in enumerate(zip(items, lengths, strict=True)):
        n = min(n, width)
        ids[row, :n] = it["input_ids"][:n]
        mask[row, :n] = it["attention_mask"][:n]
    labels = torch.stack([it["labels"] for it in items])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pretokenize(
    texts: Sequence[str], tokenizer, *, max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """One batched tokenizer call over all texts -> (dense id matrix, lengths)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        # The Rust tokenizer directly, without offsets and Python BatchEncoding conversion:
        # ~15% faster. Copied because truncation is mutable state of the backend object.
        backend = copy.deepcopy(backend)
        backend.enable_truncation(max_length)
        backend.no_padding()
        ids = [enc.ids for enc in backend.encode_batch_fast(list(texts))]
    else:
        ids = tokenizer(
            list(texts),
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
    return _pack(ids, max_length)


# --------------------------------------------------------------------------------------------
# Sampler
# --------------------------------------------------------------------------------------------


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Yields this rank's batches of indices, grouping items of similar length. DDP-aware.

    Per epoch (deterministic in ``(seed, epoch)``, identical on every rank):
      1. shuffle all indices;
      2. cut them into chunks of ``group_steps`` global steps, sort each chunk by length, and
         cut it into batches of ``batch_size`` — so each batch holds similar lengths;
      3. gather consecutive batches in groups of ``num_replicas`` (one *step*: the batches all
         ranks run at the same time, of similar length so no rank waits on a longer one), then
         shuffle the order of the steps;
      4. rank ``r`` takes batch ``r`` of every step.

    Every rank gets the same number of full batches, so no rank waits forever in an all-reduce.
    ``drop_last=True`` drops the tail that does not fill a step (a different tail each epoch):
    batches are disjoint across ranks and steps. ``drop_last=False`` fills the last step with
    items recycled from the start of the epoch's order (as ``DistributedSampler`` does), so
    every item is seen at least once and only those few recycled ones twice.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        group_steps: int = 50,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.group_steps = max(1, group_steps)
        self.epoch = 0
        step_items = batch_size * num_replicas
        n = len(self.lengths)
        self.num_steps = n // step_items if drop_last else math.ceil(n / step_items)
        if self.num_steps == 0:  # the user's batch and data: one line, not a traceback
            raise DataError(
                f"{n} items cannot fill one step of {num_replicas} rank(s) x {batch_size} per "
                "rank; use a smaller batch or more data"
            )

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch so that every epoch has a new (but reproducible) order."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_steps

    def steps(self) -> np.ndarray:
        """All ranks' batches for this epoch: an array ``(num_steps, num_replicas, batch)``."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        step_items = self.batch_size * self.num_replicas
        total = self.num_steps * step_items
        if total <= n:
            order = order[:total]
        else:  # recycle from the start so every rank gets the same number of full batches
            order = np.concatenate([order, np.resize(order, total - n)])
        chunk = step_items * self.group_steps
        parts = []
        for start in range(0, total, chunk):
            part = order[start : start + chunk]
            # stable sort on length keeps the shuffled order among equal lengths
            parts.append(part[np.argsort(-self.lengths[part], kind="stable")])
        grouped = np.concatenate(parts).reshape(self.num_steps, self.num_replicas, self.batch_size)
        if self.shuffle:
            grouped = grouped[rng.permutation(self.num_steps)]
        return grouped

    def __iter__(self) -> Iterator[list[int]]:
        for step in self.steps():
            yield step[self.rank].tolist()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _pack(seqs: Sequence[Sequence[int]], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((min(len(s), max_length) for s in seqs), dtype=np.int64, count=len(seqs))
    width = int(lengths.max()) if len(lengths) else 1
    ids = np.full((len(seqs), width), PAD_ID, dtype=np.int32)
    for row, (seq, n) in enumerate(zip(seqs, lengths, strict=True)):
        ids[row, :n] = seq[:n]
    return ids, lengths


def _round_up(value: int, multiple: int) -> int:
    return value if multiple <= 1 else -(-value // multiple) * multiple


def _read_cache(
    path: Path, rows: int, *, vocab_size: int, max_length: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (ids, lengths), or None (rebuild) unless every check below holds.

    The key already names data, tokenizer and max length; these checks catch a damaged or
    planted file with the right name: shapes and dtypes, every length in 1..width with width
    the longest length (and <= max_length), every id inside the vocabulary, and [PAD] after
    each row's length. An id beyond the vocabulary would index past the embedding table.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            ids, lengths = npz["ids"], npz["lengths"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # a damaged cache is rebuilt, never trusted
    if ids.ndim != 2 or lengths.ndim != 1 or len(ids) != rows or len(lengths) != rows:
        return None
    if ids.dtype != np.int32 or lengths.dtype.kind != "i" or rows == 0:
        return None
    width = ids.shape[1]
    if lengths.min() < 1 or lengths.max() != width or width > max_length:
        return None
    if ids.min() < 0 or ids.max() >= vocab_size:
        return None
    beyond = np.arange(width)[None, :] >= lengths[:, None]
    if (ids[beyond] != PAD_ID).any():
        return None
    return ids, lengths


def _write_cache(path: Path, ids: np.ndarray, lengths: np.ndarray) -> None:
    # Atomic: readers (other ranks, other runs) see either no cache or a complete one, never a
    # half-written file; like any file, a shared cache is readable by the team.
    # The cache is an optimisation: a read-only cache folder must not fail a run.
    with contextlib.suppress(OSError, UserError):
        atomic_write(path, lambda fh: np.savez(fh, ids=ids, lengths=lengths))


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
