"""Errors for bad pooling parameters or inputs, and the one way a validation error is told.

Every error subclasses ``ValueError`` so plain callers can catch one type, and the
HTTP layer maps the whole family to 422 without inspecting messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class PoolError(ValueError):
    """Base class: the caller asked for something the library cannot do."""


class UnknownPoolError(PoolError):
    """The op name is not in the registry."""


class PoolParamError(PoolError):
    """The op's parameters are invalid on their own (kernel <= 0, stride 0, ...)."""


class PoolInputError(PoolError):
    """The input tensor does not fit the op (wrong rank, window larger than the padded input)."""


MAX_PROBLEMS = 5
"""A message names at most this many problems: the client chooses how many it makes."""


def describe_validation_errors(
    errors: Iterable[Mapping[str, Any]], whole: str = "params", fields: Iterable[str] = ()
) -> str:
    """One short line from pydantic's error list (``exc.errors()``): each location and
    message. Only the location and message are read, never the input; a key the schema does
    not have (``extra_forbidden``) is not named either, so nothing the client chose is echoed
    back; the message lists the ``fields`` the schema does take instead. An error about the
    whole object is located at ``whole``."""
    parts, unknown = [], 0
    for err in errors:
        if err.get("type") == "extra_forbidden":
            unknown += 1
            continue
        where = ".".join(str(p) for p in err.get("loc", ())) or whole
        parts.append(f"{where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}")
    if unknown:
        accepted = ", ".join(fields) or "none"
        parts.append(f"{unknown} unknown field(s) (not echoed); the fields are: {accepted}")
    shown = "; ".join(parts[:MAX_PROBLEMS]) or f"the {whole} are invalid"
    more = len(parts) - MAX_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")
