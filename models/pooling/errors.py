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


def describe_validation_errors(errors: Iterable[Mapping[str, Any]], whole: str = "params") -> str:
    """One line from pydantic's error list (``exc.errors()``): each location and message.

    Only the location and message are read, never the input, so nothing the client sent is
    echoed back; an error about the whole object is located at ``whole``.
    """
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ())) or whole
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts) or f"the {whole} are invalid"
