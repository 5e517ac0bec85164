"""poolformer_mixer (``models.pooling.token_mixer``): PoolFormer's
``AveragePool(k, stride 1, pads k // 2, count_include_pad=0)(x) - x``."""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.shape_rules import Minimum, register_shape_rule
from models.pooling.schemas.token_mixer import PoolFormerMixerParams


def poolformer_mixer_native(op: Ops, p: PoolFormerMixerParams, x: ir.Value) -> Outputs:
    k, half = p.pool_size, p.pool_size // 2
    mean = op.AveragePool(
        x, kernel_shape=[k, k], strides=[1, 1], pads=[half] * 4, count_include_pad=0
    )
    return op.Sub(mean, x)


def _same_shape(p: Any, shape: tuple[Any, ...], minimum: Minimum = min) -> tuple[Any, ...]:
    return shape


register_lowering(
    Lowering("poolformer_mixer", "native", poolformer_mixer_native, note="AveragePool, Sub")
)
register_shape_rule("poolformer_mixer", _same_shape)
