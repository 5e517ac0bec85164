"""spp, yolo_spp, sppf (``models.pooling.pyramid``).

``spp`` pools each level with the adaptive per-bin slices (so any input size works) and
flattens C-major, as ``torch.flatten(1)``; YOLO's SPP and SPPF are stride-1 MaxPools with
k // 2 padding, concatenated after the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._cost import Shape, in_elements, out_elements
from export.runtime.lowerings.adaptive import (
    adaptive,
    adaptive_nodes,
    adaptive_peak,
    reduce_max,
    reduce_mean,
)
from export.runtime.shape_rules import register_shape_rule
from models.pooling.params import Minimum
from models.pooling.schemas.pyramid import SPPFParams, SPPParams, YoloSPPParams


def spp_decomposed(emit: Ops, p: SPPParams, x: ir.Value) -> Outputs:
    reduce = reduce_max if p.mode == "max" else reduce_mean
    levels = [emit.Flatten(adaptive(emit, x, (level, level), reduce), axis=1) for level in p.levels]
    return levels[0] if len(levels) == 1 else emit.Concat(*levels, axis=1)


def _same_max(emit: Ops, x: ir.Value, k: int) -> ir.Value:
    h = k // 2
    return emit.MaxPool(x, kernel_shape=[k, k], strides=[1, 1], pads=[h, h, h, h])


def yolo_spp_native(emit: Ops, p: YoloSPPParams, x: ir.Value) -> Outputs:
    return emit.Concat(x, *(_same_max(emit, x, k) for k in p.kernel_sizes), axis=1)


def sppf_native(emit: Ops, p: SPPFParams, x: ir.Value) -> Outputs:
    y1 = _same_max(emit, x, p.kernel_size)
    y2 = _same_max(emit, y1, p.kernel_size)
    return emit.Concat(x, y1, y2, _same_max(emit, y2, p.kernel_size), axis=1)


def _spp_shape(p: Any, shape: tuple[Any, ...], minimum: Minimum = min) -> tuple[Any, ...]:
    return shape[0], shape[1] * sum(level * level for level in p.levels)


def _yolo_shape(p: Any, shape: tuple[Any, ...], minimum: Minimum = min) -> tuple[Any, ...]:
    n, c, h, w = shape
    return n, c * (1 + len(p.kernel_sizes)), h, w


def _sppf_shape(p: Any, shape: tuple[Any, ...], minimum: Minimum = min) -> tuple[Any, ...]:
    n, c, h, w = shape
    return n, 4 * c, h, w


def _spp_nodes(p: SPPParams, x: Shape) -> int:
    """Each level's adaptive pass and its Flatten; a Concat joins several levels."""
    per_level = sum(adaptive_nodes((level, level)) + 1 for level in p.levels)
    return per_level + (len(p.levels) > 1)


def _spp_peak(p: SPPParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """The largest level's adaptive pass beside the levels flattened before it (at most the
    whole output); at the end the flattened levels and their Concat."""
    out = out_elements(p, shapes)
    widest = max(adaptive_peak((level, level), shapes[0]) for level in p.levels)
    return max(out + widest, 2 * out) * itemsize


def _yolo_spp_nodes(p: YoloSPPParams, x: Shape) -> int:
    """One MaxPool per kernel size and the Concat."""
    return len(p.kernel_sizes) + 1


def _yolo_spp_peak(p: YoloSPPParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """Every pooled copy of x waits for the Concat, which holds them and x once more."""
    return (2 * len(p.kernel_sizes) + 1) * in_elements(shapes) * itemsize


def _sppf_nodes(p: SPPFParams, x: Shape) -> int:
    """Three chained MaxPools and the Concat."""
    return 4


def _sppf_peak(p: SPPFParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """The three pooled copies of x stay alive into the Concat of four."""
    return 7 * in_elements(shapes) * itemsize


register_lowering(
    Lowering(
        "spp",
        "decomposition",
        spp_decomposed,
        note="adaptive per-bin Slices, Flatten, Concat",
        nodes=_spp_nodes,
        peak_bytes=_spp_peak,
    )
)
register_lowering(
    Lowering(
        "yolo_spp",
        "native",
        yolo_spp_native,
        note="MaxPool x k, Concat",
        nodes=_yolo_spp_nodes,
        peak_bytes=_yolo_spp_peak,
    )
)
register_lowering(
    Lowering(
        "sppf",
        "native",
        sppf_native,
        note="3 chained MaxPools, Concat",
        nodes=_sppf_nodes,
        peak_bytes=_sppf_peak,
    )
)
register_shape_rule("spp", _spp_shape)
register_shape_rule("yolo_spp", _yolo_shape)
register_shape_rule("sppf", _sppf_shape)
