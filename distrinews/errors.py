"""The one exception type that means "the user gave us something wrong".

Anything raised as a :class:`UserError` is reported by the CLI as a single line (what was wrong,
where, and what is allowed) with a non-zero exit and no traceback. Everything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a file, a field or a value, with what is allowed instead."""


class DataError(UserError):
    """A data source that cannot be loaded: missing, empty, malformed, or unreachable."""
