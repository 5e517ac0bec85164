"""gem (``models.pooling.gem``): ``mean(max(x, eps) ** p) ** (1 / p)`` over H and W.

Built from ReduceMean, never an AveragePool whose kernel is the input size (the form that
torch's exporter freezes to the traced H and W). The exponent is ``params.p``: a trained
module's learned ``p`` stays with torch's own export (``export.torch_export`` only swaps
parameter-free layers).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import const_i64, scalar_like
from export.runtime.lowerings._cost import Shape, in_elements
from export.runtime.lowerings.adaptive import global_shape
from export.runtime.shape_rules import register_shape_rule
from models.pooling.schemas.gem import GeMParams


def gem_decomposed(emit: Ops, p: GeMParams, x: ir.Value) -> Outputs:
    clamped = emit.Max(x, scalar_like(emit, p.eps, x))
    powered = emit.Pow(clamped, scalar_like(emit, p.p, x))
    mean = emit.ReduceMean(powered, const_i64(emit, [2, 3]), keepdims=1)
    return emit.Pow(mean, scalar_like(emit, 1.0 / p.p, x))


def _gem_peak(p: GeMParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """The clamped input and its power, both input-sized, meet at the first Pow; the
    (N, C, 1, 1) mean and result are negligible beside them."""
    return 2 * in_elements(shapes) * itemsize


register_lowering(
    Lowering(
        "gem",
        "decomposition",
        gem_decomposed,
        note="Max, Pow, ReduceMean, Pow",
        # three scalars (Constant + CastLike each), Max, Pow, axes Constant, ReduceMean, Pow
        nodes=lambda p, x: 11,
        peak_bytes=_gem_peak,
    )
)
register_shape_rule("gem", global_shape)
