"""Parameter schemas and registry entries of ``models.pooling.pyramid``, without torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import model_validator

from models.pooling.params import PoolParams, adaptive_span, check_nchw, require
from models.pooling.registry import PoolSpec, register_pool


class SPPParams(PoolParams):
    """SPPNet pyramid: one ``l x l`` adaptive grid per level, pooled by ``mode``."""

    levels: tuple[int, ...] = (1, 2, 4)
    mode: Literal["max", "avg"] = "max"

    @model_validator(mode="after")
    def _check_levels(self) -> SPPParams:
        require(len(self.levels) > 0, "levels must name at least one level, e.g. [1, 2, 4]")
        require(
            all(level > 0 for level in self.levels),
            f"every level must be > 0 (an l x l grid), got {list(self.levels)}",
        )
        return self

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, _, _ = check_nchw(shapes[0], "spp")
        return (n, c * sum(level * level for level in self.levels))


def _check_odd_kernel(k: int, field: str) -> None:
    require(
        k > 0 and k % 2 == 1,
        f"{field} must be odd and > 0 so that padding k // 2 keeps H x W, got {k}",
    )


class YoloSPPParams(PoolParams):
    """YOLOv3-SPP: one stride-1, pad-k//2 max pool per kernel size, concatenated after x."""

    kernel_sizes: tuple[int, ...] = (5, 9, 13)

    @model_validator(mode="after")
    def _check_kernels(self) -> YoloSPPParams:
        require(len(self.kernel_sizes) > 0, "kernel_sizes must name at least one kernel")
        for k in self.kernel_sizes:
            _check_odd_kernel(k, "kernel_sizes")
        return self

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = check_nchw(shapes[0], "yolo_spp")
        return (n, c * (1 + len(self.kernel_sizes)), h, w)


class SPPFParams(PoolParams):
    """YOLOv5 SPPF: one stride-1, pad-k//2 max pool applied three times in sequence."""

    kernel_size: int = 5

    @model_validator(mode="after")
    def _check_kernel(self) -> SPPFParams:
        _check_odd_kernel(self.kernel_size, "kernel_size")
        return self

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = check_nchw(shapes[0], "sppf")
        return (n, 4 * c, h, w)


def spp_work(params: SPPParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """One adaptive l x l grid per level."""
    n, c, h, w = shapes[0]
    return sum(n * c * adaptive_span(h, lv) * adaptive_span(w, lv) for lv in params.levels)


def yolo_spp_work(params: YoloSPPParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """A k x k stride-1 max per kernel size at every position, and the concatenation."""
    return math.prod(shapes[0]) * (1 + sum(k * k for k in params.kernel_sizes))


def sppf_work(params: SPPFParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """The same k x k stride-1 max three times, and the concatenation."""
    return math.prod(shapes[0]) * (1 + 3 * params.kernel_size**2)


register_pool(
    PoolSpec(
        "spp",
        SPPParams,
        "models.pooling.pyramid:SpatialPyramidPool",
        "SPPNet spatial pyramid: adaptive l x l grids per level, flattened and concatenated "
        "to (N, C * sum(l^2)) for any input size.",
        examples=({}, {"levels": (1, 3, 6), "mode": "avg"}),
        work=spp_work,
    )
)


register_pool(
    PoolSpec(
        "yolo_spp",
        YoloSPPParams,
        "models.pooling.pyramid:YoloSPP",
        "YOLOv3-SPP: concat [x, stride-1 max pools of kernel_sizes (5, 9, 13)] along C.",
        examples=({}, {"kernel_sizes": (3, 7)}),
        work=yolo_spp_work,
    )
)


register_pool(
    PoolSpec(
        "sppf",
        SPPFParams,
        "models.pooling.pyramid:SPPF",
        "YOLOv5 SPPF: concat [x, m(x), m(m(x)), m(m(m(x)))] of one stride-1 max pool.",
        examples=({}, {"kernel_size": 3}),
        work=sppf_work,
    )
)
