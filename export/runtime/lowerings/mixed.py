"""mixed (``models.pooling.mixed``): ``alpha * MaxPool + (1 - alpha) * AveragePool``, with
the library's shortcuts at alpha 0 and 1 (only one half is computed)."""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import scalar_like, window_attrs
from export.runtime.lowerings._cost import Shape, out_elements
from export.runtime.shape_rules import register_shape_rule, window_shape
from models.pooling.schemas.mixed import MixedParams


def mixed_native(emit: Ops, p: MixedParams, x: ir.Value) -> Outputs:
    avg = emit.AveragePool(x, **window_attrs(p), count_include_pad=int(p.count_include_pad))
    if p.alpha == 0.0:
        return avg
    high = emit.MaxPool(x, **window_attrs(p))
    if p.alpha == 1.0:
        return high
    return emit.Add(
        emit.Mul(high, scalar_like(emit, p.alpha, x)),
        emit.Mul(avg, scalar_like(emit, 1.0 - p.alpha, x)),
    )


def _mixed_nodes(p: MixedParams, x: Shape) -> int:
    """AveragePool is always built (at alpha 1 it is left unused); the blend adds MaxPool,
    two scalars (Constant + CastLike each), two Muls and Add."""
    return {0.0: 1, 1.0: 2}.get(p.alpha, 9)


def _mixed_peak(p: MixedParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """Output-sized tensors only: at alpha 1 the unused average stays beside the max; the
    blend holds three at a time (two operands and the result of each Mul and the Add)."""
    count = {0.0: 1, 1.0: 2}.get(p.alpha, 3)
    return count * out_elements(p, shapes) * itemsize


register_lowering(
    Lowering(
        "mixed",
        "native",
        mixed_native,
        note="MaxPool, AveragePool, Mul, Add",
        nodes=_mixed_nodes,
        peak_bytes=_mixed_peak,
    )
)
register_shape_rule("mixed", window_shape)
