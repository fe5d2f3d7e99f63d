"""Reading what others may have written: strict JSON.

A results folder on a cluster is writable by colleagues, a checkpoint may come from anywhere,
so what is read is checked for JSON that parses but is not data. Python's ``json`` accepts
``NaN`` and ``Infinity`` (not JSON), integers of any size (a ledger column is int64 in pandas
and Parquet), strings holding lone UTF-16 surrogates (``"\\ud800"``: valid JSON, not encodable
as UTF-8) and nesting deep enough to overflow the parser's recursion. :func:`loads_strict`
refuses all of them with one :class:`~distrinews.errors.UserError` line naming the place and
the field.

Writing is the other half (no writing through planted symlinks, atomic replaces):
:mod:`distrinews.files`.

Pure standard library, so the workload (``distrinews``) and the harness share it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from distrinews.errors import UserError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Deeper than any file this project writes (records nest 3 levels); deeper is refused before
#: the parser recurses into it.
MAX_DEPTH = 64


class _NotData(ValueError):
    """Raised from inside the JSON parser's hooks: a value that parses but is not data."""


def _no_constant(name: str) -> Any:
    raise _NotData(f"{name} is not a JSON number")


def _int64(digits: str) -> int:
    # Checked on the digits first: int() of thousands of digits is slow (and Python refuses
    # more than 4,300 of them with its own ValueError).
    if len(digits) < 19:  # the common case: cannot be out of range
        return int(digits)
    if len(digits.lstrip("-")) > 19 or not INT64_MIN <= (value := int(digits)) <= INT64_MAX:
        raise _NotData(f"integer {digits[:20]}... is beyond 64 bits")
    return value


#: What :func:`decimal` reads: ASCII digits only, short enough to stay below 10**18.
_DECIMAL = re.compile(r"[0-9]{1,18}")


def decimal(text: str) -> int | None:
    """``text`` as a non-negative integer when it is 1 to 18 ASCII digits (nothing else: no
    sign, space or underscore), else None.

    ``str.isdigit()`` is not that test: it is True for '²' and '①', which ``int()`` refuses
    with a ValueError, and for '٣' or '３', which ``int()`` reads as 3. A folder name, an
    environment variable or an option value spelled so is not a number this project wrote or
    documents, so it is not read as one. 18 digits keep ``int()`` cheap and the value in int64.
    """
    return int(text) if _DECIMAL.fullmatch(text) else None


#: A \uD800-\uDFFF escape: the only way a lone surrogate gets into text decoded from UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def loads_strict(text: str | bytes, *, where: str) -> Any:
    """``json.loads`` that refuses what is not data (see the module docstring).

    ``where`` names the source in the message ("path: line 3"); the message also names the
    field holding the bad value where there is one. Raises UserError.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    if _max_depth(text) > MAX_DEPTH:
        raise UserError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep")
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=_int64)
    except _NotData as exc:
        # The error path only: parse again leniently to name the field that holds the value.
        try:
            bad = first_bad_value(json.loads(text))
        except ValueError:  # an integer too long for Python itself
            bad = None
        field = f"field {bad[0]}: " if bad and bad[0] else ""
        raise UserError(f"{where}: {field}{exc}; use null for a missing number") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    # The walk over every value is the slow part; only an escape can hide a lone surrogate.
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        check_value(value, where=where)
    return value


def check_value(value: Any, *, where: str, field: str = "") -> None:
    """Refuse non-finite floats, integers beyond int64 and lone surrogates anywhere in ``value``.

    For data that arrived by another parser (TOML accepts ``nan`` and ``inf``).
    """
    bad = first_bad_value(value, field=field)
    if bad is not None:
        name, problem = bad
        raise UserError(f"{where}: {f'field {name}' if name else 'value'}{problem}")


def first_bad_value(value: Any, *, field: str = "") -> tuple[str, str] | None:
    """(field path, what is wrong) of the first value that is not data, or None."""
    stack: list[tuple[str, Any]] = [(field, value)]
    while stack:
        name, item = stack.pop()
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return name, f" = {item}: not a finite number"
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                return name, f" = {str(item)[:20]}...: integer beyond 64 bits"
        elif isinstance(item, str):
            if _unencodable(item):
                return name, " holds a lone surrogate (not encodable as UTF-8)"
        elif isinstance(item, dict):
            for key, sub in item.items():
                if _unencodable(str(key)):
                    return name or "key", " holds a lone surrogate (not encodable as UTF-8)"
                stack.append((f"{name}.{key}" if name else str(key), sub))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{name}[{i}]", sub) for i, sub in enumerate(item))
    return None


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
