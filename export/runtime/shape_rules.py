"""Output shapes written as plain integer arithmetic, one rule per op.

torch's exporter traces the ``poolserve::pool`` custom op with symbolic sizes, so its fake
implementation needs the output shape as an expression of the input dims. Comparisons and
``int()`` on a symbolic dim make torch specialise it to the traced value; these rules use
only ``+``, ``-``, ``*``, ``//`` and the ``minimum`` they are given (``torch.sym_min`` when
torch traces, the builtin ``min`` otherwise), which keep every dim symbolic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from export.runtime.errors import LoweringError
from models.pooling.params import Minimum, window_length

ShapeRule = Callable[[Any, tuple[Any, ...], Minimum], tuple[Any, ...]]

_RULES: dict[str, ShapeRule] = {}


def register_shape_rule(op: str, rule: ShapeRule) -> None:
    _RULES[op] = rule


def output_shape(
    op: str, params: Any, shape: tuple[Any, ...], minimum: Minimum = min
) -> tuple[Any, ...]:
    """The op's output shape for an input ``shape`` whose dims may be symbolic."""
    if op not in _RULES:
        raise LoweringError(f"op {op!r} has no shape rule, so it cannot be exported inside a model")
    return _RULES[op](params, shape, minimum)


def window_shape(p: Any, shape: tuple[Any, ...], minimum: Minimum = min) -> tuple[Any, ...]:
    """Sliding-window schemas (``WindowParams``): (N, C, out_h, out_w)."""
    n, c, h, w = shape
    left, right, top, bottom = p.padding
    (kh, kw), (sh, sw), (dh, dw) = p.kernel_size, p.strides, p.dilation
    out_h = window_length(h, kh, sh, (top, bottom), dh, p.ceil_mode, minimum)
    out_w = window_length(w, kw, sw, (left, right), dw, p.ceil_mode, minimum)
    return n, c, out_h, out_w
