"""max_unpool (``models.pooling.unpool``): scatter x to its per-plane indices on zeros.

A zero (N, C, out_h * out_w) tensor, ScatterElements along the flattened plane (torch's
indices are per plane, so no offset is added), Reshape to (N, C, out_h, out_w). The output
size is ``output_size`` when given, else ``(in - 1) * stride - pad_begin - pad_end + kernel``
computed from ``Shape``, so the graph serves any input size. ONNX's own MaxUnpool is not
used: its indices count over the whole tensor. An index outside the plane is an
onnxruntime error at run time (the graph cannot raise the library's PoolInputError).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import const_i64
from export.runtime.lowerings._cost import INT64, Shape, in_elements, out_elements
from models.pooling.schemas.unpool import MaxUnpoolParams


def _output_hw(emit: Ops, p: MaxUnpoolParams, x: ir.Value) -> ir.Value:
    """[out_h, out_w] as int64: the explicit size, or the inverse of the pool's length."""
    if p.output_size is not None:
        return const_i64(emit, list(p.output_size))
    left, right, top, bottom = p.padding
    (kh, kw), (sh, sw) = p.kernel_size, p.strides
    hw_minus_1 = emit.Sub(emit.Shape(x, start=2), const_i64(emit, [1, 1]))
    scaled = emit.Mul(hw_minus_1, const_i64(emit, [sh, sw]))
    return emit.Add(scaled, const_i64(emit, [kh - top - bottom, kw - left - right]))


def max_unpool_decomposed(emit: Ops, p: MaxUnpoolParams, x: ir.Value, indices: ir.Value) -> Outputs:
    out_hw = _output_hw(emit, p, x)
    nc = emit.Shape(x, start=0, end=2)
    flat_shape = emit.Concat(nc, emit.ReduceProd(out_hw, keepdims=1), axis=0)
    zero = ir.tensor(np.array([0.0], dtype=np.float32))
    zeros = emit.CastLike(emit.ConstantOfShape(flat_shape, value=zero), x)
    flat_indices = emit.Reshape(indices, const_i64(emit, [0, 0, -1]))
    flat_x = emit.Reshape(x, const_i64(emit, [0, 0, -1]))
    scattered = emit.ScatterElements(zeros, flat_indices, flat_x, axis=2)
    return emit.Reshape(scattered, emit.Concat(nc, out_hw, axis=0))


_F32 = 4  # ConstantOfShape's zeros are float32 before CastLike, whatever x's dtype


def _unpool_nodes(p: MaxUnpoolParams, x: Shape) -> int:
    """12 for the scatter (Shape, ReduceProd, two Concats, ConstantOfShape, CastLike, three
    Reshapes, two shape Constants, ScatterElements); the output size is one Constant when
    given, else 7 to compute it from Shape (Shape, Sub, Mul, Add and their Constants)."""
    return 12 + (1 if p.output_size is not None else 7)


def _unpool_peak(p: MaxUnpoolParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """At ScatterElements: the zeros and the scattered result (output-sized) with the
    Reshape copies of x and of its int64 indices; the float32 zeros before their CastLike
    only win when the output is much larger than x."""
    out, inp = out_elements(p, shapes), in_elements(shapes)
    return max(2 * out * itemsize + inp * (itemsize + INT64), out * (_F32 + itemsize))


register_lowering(
    Lowering(
        "max_unpool",
        "decomposition",
        max_unpool_decomposed,
        inputs=("x", "indices"),
        nodes=_unpool_nodes,
        peak_bytes=_unpool_peak,
        note="ScatterElements of x at the per-plane indices into zeros, Reshape",
    )
)
