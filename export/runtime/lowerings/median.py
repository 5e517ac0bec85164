"""median (``models.pooling.median``): the lower median of every window.

ONNX has no median and torch's exporters fail on ``aten.median``. The decomposition pads
(reflect / edge / zeros), cuts the k*k window positions into strided slices, keeps the
(K + 1) // 2 smallest with TopK and picks the lower median. A ceil_mode window that hangs
past the padded input has +inf in the overhang and ranks over the positions it covers, as
in the library. The custom lowering is one ``ai.onnx.contrib`` node run by a NumPy kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, outputs, register_lowering
from export.runtime.lowerings._common import const_i64, ones_plane, scalar_like
from export.runtime.lowerings._cost import INT64, Shape, out_elements, window_area
from export.runtime.lowerings._windows import pad_overhang, pooled_hw, window_stack
from export.runtime.shape_rules import register_shape_rule, window_shape
from export.runtime.versions import CUSTOM_DOMAIN, CUSTOM_OPSET
from models.pooling.schemas.median import PAD_MODES, MedianParams


def pad_declared(emit: Ops, x: ir.Value, p: MedianParams) -> ir.Value:
    left, right, top, bottom = p.padding
    if p.padding == (0, 0, 0, 0):
        return x
    pads = const_i64(emit, [0, 0, top, left, 0, 0, bottom, right])
    return emit.Pad(x, pads, mode=PAD_MODES[p.padding_mode])


def median_decomposed(emit: Ops, p: MedianParams, x: ir.Value) -> Outputs:
    out_hw = pooled_hw(emit, x, p)
    xp = pad_overhang(emit, pad_declared(emit, x, p), out_hw, p, float("inf"))
    stack = window_stack(emit, xp, out_hw, p)
    size = p.kernel_size[0] * p.kernel_size[1]
    smallest, _ = outputs(
        emit.TopK(stack, const_i64(emit, [(size + 1) // 2]), axis=2, largest=0, _outputs=2), 2
    )
    rank = _median_rank(emit, x, out_hw, p, size)
    median = emit.GatherElements(smallest, _expand_rank(emit, rank, smallest), axis=2)
    median = emit.Squeeze(median, const_i64(emit, [2]))
    return _nan_if_any_nan(emit, stack, median)


def _median_rank(emit: Ops, x: ir.Value, out_hw: ir.Value, p: MedianParams, size: int) -> ir.Value:
    """Index of the lower median per window, (1, 1, 1, oh, ow): (covered - 1) // 2, where
    ``covered`` counts window positions inside the padded input (all K in floor mode)."""
    if not p.ceil_mode:
        return emit.Reshape(const_i64(emit, [(size - 1) // 2]), const_i64(emit, [1, 1, 1, 1, 1]))
    mask = emit.Pad(ones_plane(emit, x), _declared_pads(emit, p), scalar_like(emit, 1.0, x))
    mask = pad_overhang(emit, mask, out_hw, p, 0.0)
    covered = emit.ReduceSum(window_stack(emit, mask, out_hw, p), const_i64(emit, [2]), keepdims=1)
    return emit.Div(emit.Sub(emit.Cast(covered, to=ir.DataType.INT64), 1), 2)


def _declared_pads(emit: Ops, p: MedianParams) -> ir.Value:
    left, right, top, bottom = p.padding
    return const_i64(emit, [0, 0, top, left, 0, 0, bottom, right])


def _expand_rank(emit: Ops, rank: ir.Value, smallest: ir.Value) -> ir.Value:
    shape = emit.Shape(smallest)
    target = emit.Concat(
        emit.Slice(shape, const_i64(emit, [0]), const_i64(emit, [2])),
        const_i64(emit, [1]),
        emit.Slice(shape, const_i64(emit, [3]), const_i64(emit, [5])),
        axis=0,
    )
    return emit.Expand(rank, target)


def _nan_if_any_nan(emit: Ops, stack: ir.Value, median: ir.Value) -> ir.Value:
    """A NaN anywhere in a window makes its median NaN, as torch.median does."""
    any_nan = emit.ReduceMax(
        emit.Cast(emit.IsNaN(stack), to=ir.DataType.INT32), const_i64(emit, [2]), keepdims=0
    )
    nan = scalar_like(emit, float("nan"), median)
    return emit.Where(emit.Cast(any_nan, to=ir.DataType.BOOL), nan, median)


def median_custom(emit: Ops, p: MedianParams, x: ir.Value) -> Outputs:
    return emit.MedianPool2d(
        x, params=p.model_dump_json(), _domain=CUSTOM_DOMAIN, _version=CUSTOM_OPSET
    )


def pooled_hw_nodes(p: Any) -> int:
    """``pooled_hw``: 9 nodes of floor-mode length arithmetic, 8 more for ceil_mode's clamp."""
    return 17 if p.ceil_mode else 9


def overhang_nodes(p: Any) -> int:
    """``pad_overhang``: the extra bottom/right length, its Pad and fill; nothing in floor mode."""
    return 15 if p.ceil_mode else 0


def stack_nodes(p: Any) -> int:
    """``window_stack``: 7 shared constants and arithmetic and a Concat, plus Constant, Add,
    Slice, Constant, Unsqueeze per window position."""
    return 8 + 5 * window_area(p)


def _median_nodes(p: MedianParams, x: Shape) -> int:
    declared = 0 if p.padding == (0, 0, 0, 0) else 2  # Constant + Pad
    # The rank is one reshaped constant, or in ceil_mode counted over a padded ones mask
    # (ones_plane 5, pads 1, fill 2, Pad 1) cut into its own window stack (+ ReduceSum and
    # its axes, Cast, Sub, Div).
    rank = 9 + overhang_nodes(p) + stack_nodes(p) + 5 if p.ceil_mode else 3
    # TopK + k, GatherElements, the rank's Expand (10), Squeeze + axes, the NaN rule (8).
    tail = 2 + 1 + 10 + 2 + 8
    return pooled_hw_nodes(p) + declared + overhang_nodes(p) + stack_nodes(p) + rank + tail


def _median_peak(p: MedianParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """The larger of two moments. Concat: the k*k unsqueezed slices and the stack they form.
    GatherElements: the stack (read again by the NaN rule), TopK's (K + 1) // 2 values and
    int64 indices (never read, so the measurement keeps them to the end), the expanded
    int64 rank and the gathered median. The ceil_mode mask stack is one plane: ignored."""
    size, out = window_area(p), out_elements(p, shapes)
    kept = (size + 1) // 2
    concat = 2 * size * out * itemsize
    gather = out * (size * itemsize + kept * (itemsize + INT64) + INT64 + itemsize)
    return max(concat, gather)


def _custom_peak(p: MedianParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """Only the kernel's output: its scratch lives in NumPy, outside the graph."""
    return out_elements(p, shapes) * itemsize


register_lowering(
    Lowering(
        "median",
        "decomposition",
        median_decomposed,
        note="Pad, k*k strided Slices, Concat, TopK, GatherElements",
        nodes=_median_nodes,
        peak_bytes=_median_peak,
    )
)
register_lowering(
    Lowering(
        "median",
        "custom",
        median_custom,
        dtypes=frozenset({"float32"}),
        note="ai.onnx.contrib MedianPool2d (onnxruntime-extensions PyOp, NumPy)",
        nodes=lambda p, x: 1,  # the one contrib node
        peak_bytes=_custom_peak,
    )
)
register_shape_rule("median", window_shape)
