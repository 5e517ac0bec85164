"""bilinear, bilinear2 (``models.pooling.bilinear``): ``x y^T / HW``, signed sqrt, L2.

Each sample is a (C, HW) matrix: Reshape, MatMul with the transposed second stream, flatten
row-major to (N, C1 * C2) and divide by H * W read from ``Shape``, so any size works. The
signed square root is the module's ``sign(z) * sqrt(|z| + eps)`` (not ``sqrt(|z|)``), and the
L2 step is ``F.normalize``'s ``z / max(||z||, eps)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import const_i64, plane_size, scalar_like
from export.runtime.lowerings._cost import Shape, in_elements, out_elements
from export.runtime.shape_rules import register_shape_rule
from models.pooling.params import Minimum
from models.pooling.schemas.bilinear import BilinearParams


def _outer_mean(emit: Ops, x: ir.Value, y: ir.Value) -> ir.Value:
    """(N, C1 * C2): each sample's x y^T over its H * W locations, divided by H * W."""
    xs = emit.Reshape(x, const_i64(emit, [0, 0, -1]))
    ys = emit.Reshape(y, const_i64(emit, [0, 0, -1]))
    z = emit.Reshape(emit.MatMul(xs, emit.Transpose(ys, perm=[0, 2, 1])), const_i64(emit, [0, -1]))
    return emit.Div(z, emit.CastLike(plane_size(emit, x), x))


def _finish(emit: Ops, p: BilinearParams, z: ir.Value) -> ir.Value:
    eps = scalar_like(emit, p.eps, z)
    if p.signed_sqrt:
        z = emit.Mul(emit.Sign(z), emit.Sqrt(emit.Add(emit.Abs(z), eps)))
    if p.normalize:
        norm = emit.ReduceL2(z, const_i64(emit, [1]), keepdims=1)
        z = emit.Div(z, emit.Max(norm, eps))
    return z


def bilinear_decomposed(emit: Ops, p: BilinearParams, x: ir.Value) -> Outputs:
    return _finish(emit, p, _outer_mean(emit, x, x))


def bilinear2_decomposed(emit: Ops, p: BilinearParams, x: ir.Value, y: ir.Value) -> Outputs:
    return _finish(emit, p, _outer_mean(emit, x, y))


def _bilinear_shape(p: Any, shape: tuple[Any, ...], minimum: Minimum = min) -> tuple[Any, ...]:
    n, c, _, _ = shape
    return n, c * c


def _bilinear_nodes(p: BilinearParams, x: Shape) -> int:
    """12 for the outer mean (three Reshapes with their shape Constants, Transpose, MatMul,
    Shape, ReduceProd, CastLike, Div), 2 for eps (built even when no step uses it), then 5
    for the signed sqrt and 4 for the L2 step. One stream still reshapes x twice."""
    return 14 + (5 if p.signed_sqrt else 0) + (4 if p.normalize else 0)


def _bilinear_peak(p: BilinearParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """The larger of two phases. Reshape copies both streams (x twice for one stream) and
    Transpose copies y again, so x + 2y are alive at once (x + y + the product at the
    MatMul). After it, elementwise steps on the (N, C1 * C2) result keep three such tensors
    alive through the signed sqrt (Sign, Abs + eps, Sqrt), two otherwise."""
    x, y, out = in_elements(shapes), math.prod(shapes[-1]), out_elements(p, shapes)
    streams = x + max(2 * y, y + out)
    finish = (3 if p.signed_sqrt else 2) * out
    return max(streams, finish) * itemsize


NOTE = "Reshape, MatMul(x, y^T), Div by H*W from Shape, Sign*Sqrt(Abs+eps), ReduceL2"
register_lowering(
    Lowering(
        "bilinear",
        "decomposition",
        bilinear_decomposed,
        note=NOTE,
        nodes=_bilinear_nodes,
        peak_bytes=_bilinear_peak,
    )
)
register_lowering(
    Lowering(
        "bilinear2",
        "decomposition",
        bilinear2_decomposed,
        inputs=("x", "y"),
        note=NOTE,
        nodes=_bilinear_nodes,
        peak_bytes=_bilinear_peak,
    )
)
register_shape_rule("bilinear", _bilinear_shape)
