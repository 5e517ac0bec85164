"""max / avg / min (``models.pooling.window``).

ONNX MaxPool and AveragePool (opset 19+) already take torch's asymmetric pads, ceil_mode,
dilation and count_include_pad, so those are native. AveragePool has no divisor_override,
which both torch exporters silently drop; the decomposition rebuilds the window sums from
two count maps and divides by the override.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, outputs, register_lowering
from export.runtime.lowerings._common import (
    const_i64,
    ones_plane,
    plane_size,
    scalar_like,
    window_attrs,
)
from export.runtime.lowerings._cost import INT64, Shape, in_elements, out_elements
from export.runtime.shape_rules import register_shape_rule, window_shape
from models.pooling.schemas.window import AvgParams, MaxParams


def max_native(emit: Ops, p: MaxParams, x: ir.Value) -> Outputs:
    """MaxPool; ONNX indices count over the whole tensor, torch's over one plane, so the
    indices are taken modulo H*W."""
    if not p.return_indices:
        return emit.MaxPool(x, **window_attrs(p))
    values, flat = outputs(emit.MaxPool(x, **window_attrs(p), _outputs=2), 2)
    return values, emit.Mod(flat, plane_size(emit, x))


def min_native(emit: Ops, p: MaxParams, x: ir.Value) -> Outputs:
    """-MaxPool(-x), with the same per-plane indices as max."""
    result = max_native(emit, p, emit.Neg(x))
    if isinstance(result, tuple):
        return emit.Neg(result[0]), result[1]
    return emit.Neg(result)


def avg_native(emit: Ops, p: AvgParams, x: ir.Value) -> Outputs:
    return emit.AveragePool(x, **window_attrs(p), count_include_pad=int(p.count_include_pad))


def _no_divisor(p: AvgParams) -> str | None:
    if p.divisor_override is not None:
        return "ONNX AveragePool has no divisor_override (use the decomposition)"
    return None


def avg_decomposed(emit: Ops, p: AvgParams, x: ir.Value) -> Outputs:
    """Window sum / divisor, for every avg option including divisor_override.

    The sum is the count_include_pad mean times its count: LpPool(p=1) over ones padded
    with ones counts the input plus declared padding inside each window, never the
    ceil_mode overhang, exactly the count torch divides by.
    """
    mean_with_pad = emit.AveragePool(x, **window_attrs(p), count_include_pad=1)
    if p.count_include_pad and p.divisor_override is None:
        return mean_with_pad
    ones = ones_plane(emit, x)
    pads = window_attrs(p, pads=False)
    with_pad = emit.LpPool(
        emit.Pad(ones, _pad_amounts(emit, p), scalar_like(emit, 1.0, x)), p=1, **pads
    )
    sums = emit.Mul(mean_with_pad, with_pad)
    if p.divisor_override is not None:
        return emit.Div(sums, scalar_like(emit, float(p.divisor_override), x))
    real = emit.LpPool(emit.Pad(ones, _pad_amounts(emit, p)), p=1, **pads)
    return emit.Div(sums, real)


def _pad_amounts(emit: Ops, p: AvgParams) -> ir.Value:
    """Pad's [begin..., end...] over all four axes for the declared padding."""
    left, right, top, bottom = p.padding
    return const_i64(emit, [0, 0, top, left, 0, 0, bottom, right])


def _max_nodes(p: MaxParams, x: Shape) -> int:
    return 4 if p.return_indices else 1  # MaxPool (+ Shape, ReduceProd, Mod)


def _max_peak(p: MaxParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """The output; with indices also ONNX's flat indices and their per-plane remainder."""
    return out_elements(p, shapes) * (itemsize + (2 * INT64 if p.return_indices else 0))


def _min_nodes(p: MaxParams, x: Shape) -> int:
    return _max_nodes(p, x) + 2  # max's graph between two Negs


def _min_peak(p: MaxParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """-x is alive while MaxPool writes its output (and flat indices, which Mod reads
    after it); the final Neg then holds the pooled values twice."""
    out, indices = out_elements(p, shapes), INT64 if p.return_indices else 0
    pooling = in_elements(shapes) * itemsize + out * (itemsize + indices)
    return max(pooling, out * (2 * itemsize + 2 * indices))


def _avg_decomposed_nodes(p: AvgParams, x: Shape) -> int:
    """AveragePool alone when its count is torch's; else + ones plane (5), the padded
    count map (Constant, scalar 2, Pad, LpPool), Mul, and a Div by the override's scalar
    (2 + 1) or by a second count map (Constant, Pad, LpPool, Div)."""
    if p.count_include_pad and p.divisor_override is None:
        return 1
    return 12 + (3 if p.divisor_override is not None else 4)


def _avg_decomposed_peak(p: AvgParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """Two output-sized tensors (mean and sums, then sums and the quotient); the count
    maps are (1, 1, ...) planes, of which about one H x W plane is alive beside them."""
    out = out_elements(p, shapes) * itemsize
    if p.count_include_pad and p.divisor_override is None:
        return out
    return 2 * out + shapes[0][2] * shapes[0][3] * itemsize


register_lowering(
    Lowering(
        "max",
        "native",
        max_native,
        note="MaxPool (+ Mod for indices)",
        nodes=_max_nodes,
        peak_bytes=_max_peak,
    )
)
register_lowering(
    Lowering(
        "min",
        "native",
        min_native,
        note="Neg, MaxPool, Neg",
        nodes=_min_nodes,
        peak_bytes=_min_peak,
    )
)
register_lowering(
    Lowering(
        "avg",
        "native",
        avg_native,
        limitation=_no_divisor,
        note="AveragePool",
        nodes=lambda p, x: 1,
        peak_bytes=lambda p, shapes, itemsize: out_elements(p, shapes) * itemsize,
    )
)
register_lowering(
    Lowering(
        "avg",
        "decomposition",
        avg_decomposed,
        note="AveragePool x LpPool(p=1) count maps; the only form with divisor_override",
        nodes=_avg_decomposed_nodes,
        peak_bytes=_avg_decomposed_peak,
    )
)

for _name in ("max", "min", "avg"):
    register_shape_rule(_name, window_shape)
