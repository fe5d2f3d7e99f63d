"""Reading what others may have written: strict JSON, and no writing through planted symlinks.

Two hazards meet every reader and writer of shared folders (a results folder on a cluster is
writable by colleagues, a checkpoint may come from anywhere):

- **JSON that parses but is not data.** Python's ``json`` accepts ``NaN`` and ``Infinity``
  (not JSON), integers of any size (a ledger column is int64 in pandas and Parquet), strings
  holding lone UTF-16 surrogates (``"\\ud800"``: valid JSON, not encodable as UTF-8) and
  nesting deep enough to overflow the parser's recursion. :func:`loads_strict` refuses all of
  them with one :class:`~distrinews.errors.UserError` line naming the place and the field.
- **Symlinks planted where a file belongs.** Opening ``ledger.jsonl`` for appending follows a
  symlink to whatever it names; :func:`open_nofollow` refuses instead (``O_NOFOLLOW``), and
  :func:`refuse_symlink` is the check for paths about to be replaced or created.

Pure standard library, so the workload (``distrinews``) and the harness share it.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any

from distrinews.errors import UserError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Deeper than any file this project writes (records nest 3 levels); deeper is refused before
#: the parser recurses into it.
MAX_DEPTH = 64


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_strict(text: str | bytes, *, where: str) -> Any:
    """``json.loads`` that refuses what is not data (see the module docstring).

    ``where`` names the source in the message ("path: line 3"). Raises UserError.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    if _max_depth(text) > MAX_DEPTH:
        raise UserError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:  # from _no_constant: NaN, Infinity, -Infinity
        raise UserError(f"{where}: {exc}; use null for a missing number") from None
    check_value(value, where=where)
    return value


def check_value(value: Any, *, where: str, field: str = "") -> None:
    """Refuse non-finite floats, integers beyond int64 and lone surrogates anywhere in ``value``.

    For data that arrived by another parser (TOML accepts ``nan`` and ``inf``).
    """
    stack: list[tuple[str, Any]] = [(field, value)]
    while stack:
        name, item = stack.pop()
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise UserError(f"{where}: {name or 'value'} = {item}: not a finite number")
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise UserError(
                    f"{where}: {name or 'value'} = {str(item)[:20]}...: integer beyond 64 bits"
                )
        elif isinstance(item, str):
            _check_text(item, where=where, name=name)
        elif isinstance(item, dict):
            for key, sub in item.items():
                _check_text(str(key), where=where, name=name or "key")
                stack.append((f"{name}.{key}" if name else str(key), sub))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{name}[{i}]", sub) for i, sub in enumerate(item))


def _check_text(text: str, *, where: str, name: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(
            f"{where}: {name or 'value'} holds a lone surrogate (not encodable as UTF-8)"
        ) from None


def _max_depth(text: str) -> int:
    """Deepest bracket nesting in a JSON text (strings skipped); cheap, no recursion."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0  # the common case (flat rows): too few brackets to nest too deep
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def refuse_symlink(path: Path, *, what: str = "file") -> None:
    """UserError when ``path`` is a symlink (it would redirect a write somewhere else)."""
    if Path(path).is_symlink():
        raise UserError(
            f"{path}: is a symlink (to {os.readlink(path)}); refusing to write a {what} "
            "through it -- remove the link"
        )


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symlink at ``path`` with one UserError line."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_symlink(path)
        raise
