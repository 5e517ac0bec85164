"""stochastic (``models.pooling.stochastic``), the expectation mode:
``sum a**2 / sum a`` over each window of ``a = relu(x)``, 0 where the window has no positive
value, computed in float32 as the library does for 16-bit inputs.

The ``sample`` mode draws from torch's seeded generator, a stream ONNX cannot reproduce, so
it has no lowering.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import window_attrs
from export.runtime.lowerings._cost import Shape, in_elements, out_elements
from export.runtime.shape_rules import register_shape_rule, window_shape
from models.pooling.schemas.stochastic import StochasticParams


def stochastic_native(emit: Ops, p: StochasticParams, x: ir.Value) -> Outputs:
    a = emit.Relu(emit.Cast(x, to=ir.DataType.FLOAT))
    window = window_attrs(p)
    num = emit.AveragePool(emit.Mul(a, a), **window, count_include_pad=1)
    den = emit.AveragePool(a, **window, count_include_pad=1)
    zero = emit.Constant(value_float=0.0)
    out = emit.Where(emit.Greater(den, zero), emit.Div(num, den), zero)
    return emit.CastLike(out, x)


FLOAT32 = 4
"""The graph computes in float32 whatever the input dtype."""


def _stochastic_peak(p: StochasticParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """At the first AveragePool: a and a * a (input-sized) and the pooled sum of squares;
    the tail (bool mask, quotient, Where, cast) is output-sized and smaller."""
    return (2 * in_elements(shapes) + out_elements(p, shapes)) * FLOAT32


def _expectation_only(p: StochasticParams) -> str | None:
    if p.mode != "expectation":
        return "mode 'sample' draws from torch's generator; only 'expectation' lowers to ONNX"
    return None


register_lowering(
    Lowering(
        "stochastic",
        "native",
        stochastic_native,
        limitation=_expectation_only,
        note="expectation mode: Relu, AveragePool of a^2 and a, Div, Where",
        # Cast, Relu, Mul, two AveragePools, Constant, Greater, Div, Where, CastLike
        nodes=lambda p, x: 10,
        peak_bytes=_stochastic_peak,
    )
)
register_shape_rule("stochastic", window_shape)
