"""poolformer_mixer (``models.pooling.token_mixer``): PoolFormer's
``AveragePool(k, stride 1, pads k // 2, count_include_pad=0)(x) - x``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._cost import Shape, in_elements
from export.runtime.shape_rules import register_shape_rule
from models.pooling.params import Minimum
from models.pooling.schemas.token_mixer import PoolFormerMixerParams


def poolformer_mixer_native(emit: Ops, p: PoolFormerMixerParams, x: ir.Value) -> Outputs:
    k, half = p.pool_size, p.pool_size // 2
    mean = emit.AveragePool(
        x, kernel_shape=[k, k], strides=[1, 1], pads=[half] * 4, count_include_pad=0
    )
    return emit.Sub(mean, x)


def _same_shape(p: Any, shape: tuple[Any, ...], minimum: Minimum = min) -> tuple[Any, ...]:
    return shape


def _mixer_peak(p: PoolFormerMixerParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """The mean and the output, both x's size, alive together at the Sub."""
    return 2 * in_elements(shapes) * itemsize


register_lowering(
    Lowering(
        "poolformer_mixer",
        "native",
        poolformer_mixer_native,
        note="AveragePool, Sub",
        nodes=lambda p, x: 2,  # AveragePool, Sub
        peak_bytes=_mixer_peak,
    )
)
register_shape_rule("poolformer_mixer", _same_shape)
