"""softpool (``models.pooling.softpool``): the softmax-weighted sum of every window.

As in the library the softmax is taken per window, so large inputs stay finite (the paper's
``avg(x * exp(x)) / avg(exp(x))`` overflows float32 past x = 88). The windows come from the
k*k strided slices; padding and the ceil_mode overhang are -inf, whose weight is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import const_i64, onnx_pads, scalar_like
from export.runtime.lowerings._cost import Shape, out_elements, window_area
from export.runtime.lowerings._windows import pad_overhang, pooled_hw, window_stack
from export.runtime.lowerings.median import overhang_nodes, pooled_hw_nodes, stack_nodes
from export.runtime.shape_rules import register_shape_rule, window_shape
from models.pooling.schemas.softpool import SoftParams


def softpool_decomposed(emit: Ops, p: SoftParams, x: ir.Value) -> Outputs:
    out_hw = pooled_hw(emit, x, p)
    top, left, bottom, right = onnx_pads(p.padding)
    pads = const_i64(emit, [0, 0, top, left, 0, 0, bottom, right])
    xp = emit.Pad(x, pads, scalar_like(emit, float("-inf"), x))
    stack = window_stack(emit, pad_overhang(emit, xp, out_hw, p, float("-inf")), out_hw, p)
    weights = emit.Softmax(stack, axis=2)
    # 0 * -inf would be NaN; padded positions contribute 0.
    values = emit.Where(emit.IsInf(stack, detect_positive=0), scalar_like(emit, 0.0, x), stack)
    return emit.ReduceSum(emit.Mul(weights, values), const_i64(emit, [2]), keepdims=0)


def _softpool_nodes(p: SoftParams, x: Shape) -> int:
    # The -inf Pad (pads 1, fill 2, Pad 1); after the stack Softmax, IsInf, the 0 fill (2),
    # Where, Mul, ReduceSum and its axes.
    return pooled_hw_nodes(p) + 4 + overhang_nodes(p) + stack_nodes(p) + 8


def _softpool_peak(p: SoftParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """At the Where: the stack, its softmax weights, the IsInf mask (1 byte an element) and
    the masked values, each one element per window position per output."""
    return window_area(p) * out_elements(p, shapes) * (3 * itemsize + 1)


register_lowering(
    Lowering(
        "softpool",
        "decomposition",
        softpool_decomposed,
        note="-inf Pad, k*k strided Slices, Softmax over the window, ReduceSum",
        nodes=_softpool_nodes,
        peak_bytes=_softpool_peak,
    )
)
register_shape_rule("softpool", window_shape)
