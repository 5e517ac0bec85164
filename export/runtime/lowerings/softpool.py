"""softpool (``models.pooling.softpool``): the softmax-weighted sum of every window.

As in the library the softmax is taken per window, so large inputs stay finite (the paper's
``avg(x * exp(x)) / avg(exp(x))`` overflows float32 past x = 88). The windows come from the
k*k strided slices; padding and the ceil_mode overhang are -inf, whose weight is 0.
"""

from __future__ import annotations

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import const_i64, onnx_pads, scalar_like
from export.runtime.lowerings._windows import pad_overhang, pooled_hw, window_stack
from export.runtime.shape_rules import register_shape_rule, window_shape
from models.pooling.schemas.softpool import SoftParams


def softpool_decomposed(op: Ops, p: SoftParams, x: ir.Value) -> Outputs:
    out_hw = pooled_hw(op, x, p)
    top, left, bottom, right = onnx_pads(p.padding)
    pads = const_i64(op, [0, 0, top, left, 0, 0, bottom, right])
    xp = op.Pad(x, pads, scalar_like(op, float("-inf"), x))
    stack = window_stack(op, pad_overhang(op, xp, out_hw, p, float("-inf")), out_hw, p)
    weights = op.Softmax(stack, axis=2)
    # 0 * -inf would be NaN; padded positions contribute 0.
    values = op.Where(op.IsInf(stack, detect_positive=0), scalar_like(op, 0.0, x), stack)
    return op.ReduceSum(op.Mul(weights, values), const_i64(op, [2]), keepdims=0)


register_lowering(
    Lowering(
        "softpool",
        "decomposition",
        softpool_decomposed,
        note="-inf Pad, k*k strided Slices, Softmax over the window, ReduceSum",
    )
)
register_shape_rule("softpool", window_shape)
