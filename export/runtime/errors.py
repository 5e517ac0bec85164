"""Errors raised by the export layer.

``LoweringError`` is a ``ValueError`` so the HTTP layer can map it to 422 like the pooling
library's ``PoolError``; ``ExportError`` means an artifact failed the parity gate and must
not be shipped.
"""


class LoweringError(ValueError):
    """No lowering can build this op with these parameters (unknown op, unsupported option)."""


class ExportError(RuntimeError):
    """An exported artifact failed a check: checker, parity with torch, or dynamic dims."""
