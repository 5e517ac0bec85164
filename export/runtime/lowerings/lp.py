"""lp (``models.pooling.lp``), written as ``F.lp_pool2d`` computes it.

ONNX LpPool takes ``|x| ** p``; torch takes ``x ** p`` (so an odd p with a negative window
sum gives NaN, not a norm) and scales a ceil_mode window's covered mean by the full area.
The decomposition repeats torch's steps: AveragePool of ``x ** p`` (the overhang excluded
from the divisor), times kh * kw, to the power 1 / p; ``p = inf`` is MaxPool of ``|x|``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import scalar_like
from export.runtime.lowerings._cost import Shape, in_elements, out_elements
from export.runtime.shape_rules import register_shape_rule
from models.pooling.params import Minimum, window_length
from models.pooling.schemas.lp import LpParams


def lp_decomposed(emit: Ops, p: LpParams, x: ir.Value) -> Outputs:
    window = {
        "kernel_shape": list(p.kernel_size),
        "strides": list(p.strides),
        "ceil_mode": int(p.ceil_mode),
    }
    if math.isinf(p.norm_type):
        return emit.MaxPool(emit.Abs(x), **window)
    powered = emit.Pow(x, scalar_like(emit, p.norm_type, x))
    mean = emit.AveragePool(powered, **window, count_include_pad=0)
    area = scalar_like(emit, float(p.kernel_size[0] * p.kernel_size[1]), x)
    return emit.Pow(emit.Mul(mean, area), scalar_like(emit, 1.0 / p.norm_type, x))


def _lp_shape(p: Any, shape: tuple[Any, ...], minimum: Minimum = min) -> tuple[Any, ...]:
    n, c, h, w = shape
    (kh, kw), (sh, sw) = p.kernel_size, p.strides
    out_h = window_length(h, kh, sh, (0, 0), 1, p.ceil_mode, minimum)
    return n, c, out_h, window_length(w, kw, sw, (0, 0), 1, p.ceil_mode, minimum)


def _lp_nodes(p: LpParams, x: Shape) -> int:
    """Abs, MaxPool for p = inf; else three scalars (Constant + CastLike each) and Pow,
    AveragePool, Mul, Pow."""
    return 2 if math.isinf(p.norm_type) else 10


def _lp_peak(p: LpParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """The input-sized |x| or x ** p alive while the pool writes its output; afterwards
    only two output-sized tensors (Mul, then Pow) are alive at once."""
    out = out_elements(p, shapes)
    return max(in_elements(shapes) + out, 2 * out) * itemsize


register_lowering(
    Lowering(
        "lp",
        "decomposition",
        lp_decomposed,
        note="Pow, AveragePool, Mul, Pow (torch's form)",
        nodes=_lp_nodes,
        peak_bytes=_lp_peak,
    )
)
register_shape_rule("lp", _lp_shape)
