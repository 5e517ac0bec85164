"""adaptive_avg, adaptive_max, global_avg, global_max, avgmax_add, avgmax_cat
(``models.pooling.adaptive``).

torch's exporters fail on non-divisible adaptive max and, under dynamic H/W, emit an adaptive
avg that is only right at the traced size. Here every bin is an explicit slice whose bounds
are computed in the graph from the input size, torch's ``[floor(i*S/n), ceil((i+1)*S/n))``,
so one graph is right at every size. Mean and max over a bin rectangle are separable, so
the values pool along W, then along H (oh + ow slices, not oh * ow). Indices need the argmax
of each rectangle, so that path slices every cell. A null ``output_size`` entry keeps that
axis as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, outputs, register_lowering
from export.runtime.lowerings._common import const_i64, scalar_like
from export.runtime.lowerings._cost import INT64, Shape, out_elements
from export.runtime.shape_rules import register_shape_rule
from export.runtime.versions import CUSTOM_DOMAIN, CUSTOM_OPSET
from models.pooling.params import Minimum
from models.pooling.schemas.adaptive import AdaptiveMaxParams, AdaptiveParams

Reduce = Callable[[Ops, ir.Value, int], ir.Value]


def reduce_mean(emit: Ops, x: ir.Value, axis: int) -> ir.Value:
    return emit.ReduceMean(x, const_i64(emit, [axis]), keepdims=1)


def reduce_max(emit: Ops, x: ir.Value, axis: int) -> ir.Value:
    return emit.ReduceMax(x, const_i64(emit, [axis]), keepdims=1)


def bin_bounds(emit: Ops, size: ir.Value, i: int, n: int) -> tuple[ir.Value, ir.Value]:
    """Bin ``i`` of ``n`` over an axis of length ``size`` (int64[1]): [start, end)."""
    start = emit.Div(emit.Mul(size, i), n)
    end = emit.Div(emit.Add(emit.Mul(size, i + 1), n - 1), n)
    return start, end


def pool_axis(emit: Ops, x: ir.Value, axis: int, n: int | None, reduce: Reduce) -> ir.Value:
    """Reduce every adaptive bin along one axis; ``None`` leaves the axis as it is."""
    if n is None:
        return x
    size = emit.Shape(x, start=axis, end=axis + 1)
    cells = []
    for i in range(n):
        start, end = bin_bounds(emit, size, i, n)
        cells.append(reduce(emit, emit.Slice(x, start, end, const_i64(emit, [axis])), axis))
    return cells[0] if n == 1 else emit.Concat(*cells, axis=axis)


def adaptive(
    emit: Ops, x: ir.Value, size: tuple[int | None, int | None], reduce: Reduce
) -> ir.Value:
    """Adaptive pooling of NCHW ``x`` to ``size``; (1, 1) is a plain reduction."""
    if size == (1, 1):
        axes = const_i64(emit, [2, 3])
        reduced = emit.ReduceMean if reduce is reduce_mean else emit.ReduceMax
        result: ir.Value = reduced(x, axes, keepdims=1)
        return result
    return pool_axis(emit, pool_axis(emit, x, 3, size[1], reduce), 2, size[0], reduce)


def adaptive_avg_decomposed(emit: Ops, p: AdaptiveParams, x: ir.Value) -> Outputs:
    return adaptive(emit, x, p.output_size, reduce_mean)


def adaptive_max_decomposed(emit: Ops, p: AdaptiveMaxParams, x: ir.Value) -> Outputs:
    if not p.return_indices:
        return adaptive(emit, x, p.output_size, reduce_max)
    oh, ow = p.output_size
    if oh is None or ow is None:  # refused by _indices_need_sizes
        raise ValueError("adaptive_max indices need an explicit output_size")
    return _max_with_indices(emit, x, oh, ow)


def _indices_need_sizes(p: AdaptiveMaxParams) -> str | None:
    if p.return_indices and None in p.output_size:
        return "return_indices with a null output_size entry has only the custom lowering"
    return None


def _max_with_indices(emit: Ops, x: ir.Value, oh: int, ow: int) -> Outputs:
    """Per cell: the rectangle's max and the first position holding it, as torch's flat
    per-plane index ``row * W + col``."""
    heights, width = emit.Shape(x, start=2, end=3), emit.Shape(x, start=3, end=4)
    values, indices = [], []
    for i in range(oh):
        top, bottom = bin_bounds(emit, heights, i, oh)
        for j in range(ow):
            left, right = bin_bounds(emit, width, j, ow)
            starts, ends = emit.Concat(top, left, axis=0), emit.Concat(bottom, right, axis=0)
            cell = emit.Reshape(emit.Slice(x, starts, ends, const_i64(emit, [2, 3])), [0, 0, -1])
            local = emit.ArgMax(cell, axis=2, keepdims=1)
            span = emit.Sub(right, left)
            row, col = emit.Add(top, emit.Div(local, span)), emit.Add(left, emit.Mod(local, span))
            indices.append(emit.Add(emit.Mul(row, width), col))
            values.append(emit.ReduceMax(cell, const_i64(emit, [2]), keepdims=1))
    grid = emit.Concat(emit.Shape(x, start=0, end=2), const_i64(emit, [oh, ow]), axis=0)
    return (
        emit.Reshape(emit.Concat(*values, axis=2), grid),
        emit.Reshape(emit.Concat(*indices, axis=2), grid),
    )


def adaptive_max_custom(emit: Ops, p: AdaptiveMaxParams, x: ir.Value) -> Outputs:
    if p.return_indices:
        return outputs(
            emit.AdaptiveMaxPool2dWithIndices(
                x,
                params=p.model_dump_json(),
                _domain=CUSTOM_DOMAIN,
                _version=CUSTOM_OPSET,
                _outputs=2,
            ),
            2,
        )
    return emit.AdaptiveMaxPool2d(
        x, params=p.model_dump_json(), _domain=CUSTOM_DOMAIN, _version=CUSTOM_OPSET
    )


def global_avg_native(emit: Ops, p: Any, x: ir.Value) -> Outputs:
    return emit.GlobalAveragePool(x)


def global_max_native(emit: Ops, p: Any, x: ir.Value) -> Outputs:
    return emit.GlobalMaxPool(x)


def avgmax_add_decomposed(emit: Ops, p: AdaptiveParams, x: ir.Value) -> Outputs:
    """0.5 * (avg + max), timm's order of operations."""
    avg = adaptive(emit, x, p.output_size, reduce_mean)
    return emit.Mul(
        emit.Add(avg, adaptive(emit, x, p.output_size, reduce_max)), scalar_like(emit, 0.5, x)
    )


def avgmax_cat_decomposed(emit: Ops, p: AdaptiveParams, x: ir.Value) -> Outputs:
    avg = adaptive(emit, x, p.output_size, reduce_mean)
    return emit.Concat(avg, adaptive(emit, x, p.output_size, reduce_max), axis=1)


def _adaptive_shape(p: Any, shape: tuple[Any, ...], minimum: Minimum = min) -> tuple[Any, ...]:
    n, c, h, w = shape
    oh, ow = p.output_size
    return n, c, h if oh is None else oh, w if ow is None else ow


def _cat_shape(p: Any, shape: tuple[Any, ...], minimum: Minimum = min) -> tuple[Any, ...]:
    n, c, oh, ow = _adaptive_shape(p, shape)
    return n, 2 * c, oh, ow


def global_shape(p: Any, shape: tuple[Any, ...], minimum: Minimum = min) -> tuple[Any, ...]:
    return shape[0], shape[1], 1, 1


# Costs. The per-bin decompositions unroll every bin, so their counts are closed forms in
# output_size: a request for a huge grid is refused from these numbers, never by building it.

SizePair = tuple[int | None, int | None]


def _axis_nodes(bins: int | None) -> int:
    """``pool_axis``: Shape, then per bin 5 bound nodes, Slice, its axes, the reduction and
    its axes; a Concat joins several bins."""
    return 0 if bins is None else 1 + 9 * bins + (bins > 1)


def adaptive_nodes(size: SizePair) -> int:
    """Nodes ``adaptive`` emits; (1, 1) is one reduction and its axes."""
    return 2 if size == (1, 1) else _axis_nodes(size[1]) + _axis_nodes(size[0])


def _widest_bin(size: int, bins: int) -> int:
    """The longest of torch's bins: with q, r = divmod(size, bins), bin i is
    q + ceil((i + 1) r / bins) - floor(i r / bins) long, q + 2 when a multiple of bins lies
    strictly inside (i r, (i + 1) r), which some i has unless r divides bins."""
    q, r = divmod(size, bins)
    return q if r == 0 else q + 1 + (bins % r != 0)


def adaptive_peak(size: SizePair, shape: Shape) -> int:
    """Float elements alive at once in ``adaptive``. Each axis pass holds the bins reduced
    so far plus the widest bin's slice (or, at its end, the bins plus their Concat); the H
    pass also holds the W pass's result until its last slice."""
    n, c, h, w = shape
    oh, ow = size
    if size == (1, 1):
        return n * c
    along_w = 0 if ow is None else n * c * h * (ow + _widest_bin(w, ow))
    held, width = (0, w) if ow is None else (n * c * h * ow, ow)
    along_h = 0 if oh is None else held + n * c * width * (oh + _widest_bin(h, oh))
    return max(along_w, along_h)


def _indices_nodes(oh: int, ow: int) -> int:
    """``_max_with_indices``: 2 Shapes, 5 bound nodes per row, 20 nodes per cell (bounds,
    slice, argmax arithmetic, max), and 7 to build the grid and reshape both results."""
    return 9 + 5 * oh + 20 * oh * ow


def _indices_peak(oh: int, ow: int, shape: Shape, itemsize: int) -> int:
    """Per cell the slice and its reshaped copy of the largest rectangle, beside every cell's
    max and index so far; at the end the values plus the indices, concatenated and reshaped."""
    n, c, h, w = shape
    cells = n * c * oh * ow
    rectangle = n * c * _widest_bin(h, oh) * _widest_bin(w, ow)
    while_slicing = 2 * rectangle * itemsize + cells * (itemsize + INT64)
    return max(while_slicing, cells * (itemsize + 2 * INT64))


def _adaptive_avg_nodes(p: AdaptiveParams, x: Shape) -> int:
    return adaptive_nodes(p.output_size)


def _adaptive_avg_peak(p: AdaptiveParams, shapes: Sequence[Shape], itemsize: int) -> int:
    return adaptive_peak(p.output_size, shapes[0]) * itemsize


def _adaptive_max_nodes(p: AdaptiveMaxParams, x: Shape) -> int:
    oh, ow = p.output_size
    if p.return_indices and oh is not None and ow is not None:
        return _indices_nodes(oh, ow)
    return adaptive_nodes(p.output_size)


def _adaptive_max_peak(p: AdaptiveMaxParams, shapes: Sequence[Shape], itemsize: int) -> int:
    oh, ow = p.output_size
    if p.return_indices and oh is not None and ow is not None:
        return _indices_peak(oh, ow, shapes[0], itemsize)
    return adaptive_peak(p.output_size, shapes[0]) * itemsize


def _one_node(p: Any, x: Shape) -> int:
    """A single native or contrib node."""
    return 1


def _outputs_only(p: Any, shapes: Sequence[Shape], itemsize: int) -> int:
    """A single node holds nothing but its outputs (a custom op's indices are int64)."""
    indices = INT64 if getattr(p, "return_indices", False) else 0
    return out_elements(p, shapes) * (itemsize + indices)


def _avgmax_nodes(p: AdaptiveParams, x: Shape) -> int:
    """The avg and max passes, then Add, and Mul by 0.5 (Constant + CastLike)."""
    return 2 * adaptive_nodes(p.output_size) + 4


def _avgmax_peak(p: AdaptiveParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """The avg result stays alive through the max pass; then avg, max and their sum."""
    half = out_elements(p, shapes)
    return max(half + adaptive_peak(p.output_size, shapes[0]), 3 * half) * itemsize


def _avgmax_cat_nodes(p: AdaptiveParams, x: Shape) -> int:
    """The avg and max passes and one Concat."""
    return 2 * adaptive_nodes(p.output_size) + 1


def _avgmax_cat_peak(p: AdaptiveParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """As avgmax_add, ending with avg, max and their Concat (twice each)."""
    half = out_elements(p, shapes) // 2
    return max(half + adaptive_peak(p.output_size, shapes[0]), 4 * half) * itemsize


_SLICES = "per-bin Slices with bounds from Shape, ReduceMean/ReduceMax, Concat"
register_lowering(
    Lowering(
        "adaptive_avg",
        "decomposition",
        adaptive_avg_decomposed,
        note=_SLICES,
        nodes=_adaptive_avg_nodes,
        peak_bytes=_adaptive_avg_peak,
    )
)
register_lowering(
    Lowering(
        "adaptive_max",
        "decomposition",
        adaptive_max_decomposed,
        limitation=_indices_need_sizes,
        note=_SLICES + "; indices by ArgMax per cell",
        nodes=_adaptive_max_nodes,
        peak_bytes=_adaptive_max_peak,
    )
)
register_lowering(
    Lowering(
        "adaptive_max",
        "custom",
        adaptive_max_custom,
        dtypes=frozenset({"float32"}),
        note="ai.onnx.contrib AdaptiveMaxPool2d[WithIndices] (onnxruntime-extensions PyOp)",
        nodes=_one_node,
        peak_bytes=_outputs_only,
    )
)
register_lowering(
    Lowering(
        "global_avg",
        "native",
        global_avg_native,
        note="GlobalAveragePool",
        nodes=_one_node,
        peak_bytes=_outputs_only,
    )
)
register_lowering(
    Lowering(
        "global_max",
        "native",
        global_max_native,
        note="GlobalMaxPool",
        nodes=_one_node,
        peak_bytes=_outputs_only,
    )
)
register_lowering(
    Lowering(
        "avgmax_add",
        "decomposition",
        avgmax_add_decomposed,
        note="adaptive avg + max",
        nodes=_avgmax_nodes,
        peak_bytes=_avgmax_peak,
    )
)
register_lowering(
    Lowering(
        "avgmax_cat",
        "decomposition",
        avgmax_cat_decomposed,
        note="Concat(avg, max)",
        nodes=_avgmax_cat_nodes,
        peak_bytes=_avgmax_cat_peak,
    )
)
for _name in ("adaptive_avg", "adaptive_max", "avgmax_add"):
    register_shape_rule(_name, _adaptive_shape)
register_shape_rule("avgmax_cat", _cat_shape)
for _name in ("global_avg", "global_max"):
    register_shape_rule(_name, global_shape)
