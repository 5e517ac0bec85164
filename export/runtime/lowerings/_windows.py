"""Every window's values as a tensor, in standard ONNX, for ops with no pooling node (median,
softpool): the padded input is cut into k*k strided slices, one per window position.

Sizes are computed in the graph from ``Shape``, so H and W stay dynamic; the arithmetic is
torch's pooled length (``export.runtime.shape_rules.window_length``) on int64 tensors.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from export.runtime.lowering import Ops
from export.runtime.lowerings._common import const_i64, scalar_like


def _extent(p: Any) -> list[int]:
    (kh, kw), (dh, dw) = p.kernel_size, p.dilation
    return [dh * (kh - 1) + 1, dw * (kw - 1) + 1]


def pooled_hw(emit: Ops, x: ir.Value, p: Any) -> ir.Value:
    """The output (oh, ow) of a window schema on ``x`` (unpadded), as int64[2]."""
    left, right, top, bottom = p.padding
    hw = emit.Shape(x, start=2)
    strides = const_i64(emit, list(p.strides))
    span = emit.Sub(
        emit.Add(hw, const_i64(emit, [top + bottom, left + right])), const_i64(emit, _extent(p))
    )
    if not p.ceil_mode:
        return emit.Add(emit.Div(span, strides), const_i64(emit, [1, 1]))
    # The last window must start inside the input or its leading padding.
    steps = _ceil_div(emit, span, strides, p)
    starts = _ceil_div(emit, emit.Add(hw, const_i64(emit, [top, left])), strides, p)
    return emit.Min(emit.Add(steps, const_i64(emit, [1, 1])), starts)


def _ceil_div(emit: Ops, a: ir.Value, strides: ir.Value, p: Any) -> ir.Value:
    """ceil(a / s) for a >= 0 (int64 Div truncates, which is floor there)."""
    return emit.Div(emit.Add(a, const_i64(emit, [s - 1 for s in p.strides])), strides)


def pad_overhang(emit: Ops, xp: ir.Value, out_hw: ir.Value, p: Any, fill: float) -> ir.Value:
    """Extend the padded input at the bottom and right so that every ceil_mode window fits,
    filling the overhang with ``fill``. A no-op in floor mode."""
    if not p.ceil_mode:
        return xp
    strides = const_i64(emit, list(p.strides))
    need = emit.Add(
        emit.Mul(emit.Sub(out_hw, const_i64(emit, [1, 1])), strides), const_i64(emit, _extent(p))
    )
    extra = emit.Max(emit.Sub(need, emit.Shape(xp, start=2)), const_i64(emit, [0, 0]))
    pads = emit.Concat(const_i64(emit, [0, 0, 0, 0, 0, 0]), extra, axis=0)
    return emit.Pad(xp, pads, scalar_like(emit, fill, xp))


def window_stack(emit: Ops, xp: ir.Value, out_hw: ir.Value, p: Any) -> ir.Value:
    """(N, C, K, oh, ow): window position k = a * kw + b along axis 2, for an input that is
    already padded (and extended by ``pad_overhang``)."""
    (kh, kw), (dh, dw) = p.kernel_size, p.dilation
    strides = list(p.strides)
    reach = emit.Add(
        emit.Mul(emit.Sub(out_hw, const_i64(emit, [1, 1])), const_i64(emit, strides)), 1
    )
    axes, steps = const_i64(emit, [2, 3]), const_i64(emit, strides)
    slices = []
    for a in range(kh):
        for b in range(kw):
            starts = const_i64(emit, [a * dh, b * dw])
            cut = emit.Slice(xp, starts, emit.Add(starts, reach), axes, steps)
            slices.append(emit.Unsqueeze(cut, const_i64(emit, [2])))
    return emit.Concat(*slices, axis=2)
