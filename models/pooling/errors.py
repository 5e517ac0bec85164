"""Errors for bad pooling parameters or inputs.

Every error subclasses ``ValueError`` so plain callers can catch one type, and the
HTTP layer maps the whole family to 422 without inspecting messages.
"""


class PoolError(ValueError):
    """Base class: the caller asked for something the library cannot do."""


class UnknownPoolError(PoolError):
    """The op name is not in the registry."""


class PoolParamError(PoolError):
    """The op's parameters are invalid on their own (kernel <= 0, stride 0, ...)."""


class PoolInputError(PoolError):
    """The input tensor does not fit the op (wrong rank, window larger than the padded input)."""
