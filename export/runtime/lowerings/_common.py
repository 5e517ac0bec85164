"""Small ONNX-building helpers shared by the lowerings."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir

from export.runtime.lowering import Ops


def onnx_pads(padding: tuple[int, int, int, int]) -> list[int]:
    """Our (left, right, top, bottom) padding as ONNX's [top, left, bottom, right]."""
    left, right, top, bottom = padding
    return [top, left, bottom, right]


def window_attrs(p: Any, *, pads: bool = True) -> dict[str, Any]:
    """The ONNX pooling attributes of a sliding-window schema (``WindowParams``)."""
    attrs: dict[str, Any] = {
        "kernel_shape": list(p.kernel_size),
        "strides": list(p.strides),
        "dilations": list(p.dilation),
        "ceil_mode": int(p.ceil_mode),
    }
    if pads:
        attrs["pads"] = onnx_pads(p.padding)
    return attrs


def const_i64(emit: Ops, values: list[int]) -> ir.Value:
    """A 1-D int64 constant (shapes, axes, slice bounds)."""
    return emit.Constant(value=ir.tensor(np.array(values, dtype=np.int64)))


def scalar_like(emit: Ops, value: float, like: ir.Value) -> ir.Value:
    """A scalar of ``like``'s dtype, so one graph serves float16, float32 and float64."""
    return emit.CastLike(emit.Constant(value_float=value), like)


def ones_plane(emit: Ops, x: ir.Value) -> ir.Value:
    """A (1, 1, H, W) tensor of ones with ``x``'s spatial size and dtype."""
    shape = emit.Concat(const_i64(emit, [1, 1]), emit.Shape(x, start=2), axis=0)
    one = ir.tensor(np.array([1.0], dtype=np.float32))
    return emit.CastLike(emit.ConstantOfShape(shape, value=one), x)


def plane_size(emit: Ops, x: ir.Value) -> ir.Value:
    """H * W of an NCHW tensor, as an int64 scalar."""
    return emit.ReduceProd(emit.Shape(x, start=2), keepdims=0)
