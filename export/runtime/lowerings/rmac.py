"""rmac (``models.pooling.rmac``): cirtorch's R-MAC on a map of one fixed size.

The region grid is Python arithmetic on (H, W) (``rmac_regions``, shared with the torch op
through the torch-free schema module), so the graph is built for one size: the caller
passes ``static_hw`` and the input's H and W dims are numbers. Each region is a constant
Slice and a ReduceMax; the global MAC and the region maxima are stacked along a last axis,
each divided by its channel L2 norm plus eps (cirtorch's ``L2N``: ``+ eps``, no clamp) and
summed, without a final normalisation, as the library returns it.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, outputs, register_lowering, static_hw
from export.runtime.lowerings._common import const_i64, scalar_like
from export.runtime.lowerings._cost import Shape
from models.pooling.schemas.rmac import RMACParams, rmac_regions


def _region_max(emit: Ops, x: ir.Value, top: int, left: int, side: int) -> ir.Value:
    """max over x[:, :, top : top + side, left : left + side], as (N, C, 1, 1)."""
    starts, ends = const_i64(emit, [top, left]), const_i64(emit, [top + side, left + side])
    region = emit.Slice(x, starts, ends, const_i64(emit, [2, 3]))
    return emit.ReduceMax(region, const_i64(emit, [2, 3]), keepdims=1)


def rmac_decomposed(emit: Ops, p: RMACParams, x: ir.Value) -> Outputs:
    h, w = static_hw(x)
    maxima = [emit.ReduceMax(x, const_i64(emit, [2, 3]), keepdims=1)]  # the global MAC
    maxima += [_region_max(emit, x, *region) for region in rmac_regions(h, w, p.levels)]
    stacked = emit.Concat(*maxima, axis=3) if len(maxima) > 1 else maxima[0]  # (N, C, 1, R + 1)
    norms = emit.ReduceL2(stacked, const_i64(emit, [1]), keepdims=1)
    normalised = emit.Div(stacked, emit.Add(norms, scalar_like(emit, p.eps, x)))
    if len(maxima) == 1:
        return normalised
    # Summed one region after another, in the library's order: the descriptor reaches R + 1
    # (51 at 11x47), where a different float32 summation order moves it by several 1e-6.
    terms = outputs(
        emit.Split(normalised, axis=3, num_outputs=len(maxima), _outputs=len(maxima)), len(maxima)
    )
    total = terms[0]
    for term in terms[1:]:
        total = emit.Add(total, term)
    return total


def _rmac_nodes(p: RMACParams, x: Shape) -> int:
    """Global max 2 (axes Constant, ReduceMax); per region 6 (starts, ends and axes
    Constants, Slice, axes Constant, ReduceMax) plus its Add into the sum; the L2 step 6
    (axes Constant, ReduceL2, eps Constant + CastLike, Add, Div); with regions also Concat
    and Split. Region count depends on (H, W), the graph's fixed size."""
    regions = len(rmac_regions(x[2], x[3], p.levels))
    return 8 + (7 * regions + 2 if regions else 0)


def _rmac_peak(p: RMACParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """Each region's Slice is a copy that lives only until its ReduceMax, so the largest
    region (level 1's square, the short side) dominates; on tiny maps with many regions the
    (N, C, 1, R + 1) stack and its normalised copy (plus the Split pieces) can win."""
    n, c, h, w = shapes[0]
    regions = rmac_regions(h, w, p.levels)
    side = max((s for _, _, s in regions), default=0)
    return n * c * max(side * side + 2, 2 * (len(regions) + 1)) * itemsize


register_lowering(
    Lowering(
        "rmac",
        "decomposition",
        rmac_decomposed,
        needs_static_hw=True,
        nodes=_rmac_nodes,
        peak_bytes=_rmac_peak,
        note="fixed (H, W): per-region Slice + ReduceMax, Concat, ReduceL2, Div, ReduceSum",
    )
)
