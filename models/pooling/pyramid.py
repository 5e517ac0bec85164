"""Spatial pyramid pooling: SPPNet's fixed-length vector and YOLO's same-size SPP / SPPF.

``spp`` (He et al., "Spatial Pyramid Pooling in Deep Convolutional Networks") pools each
level ``l`` to an ``l x l`` grid and concatenates the flattened levels, so any input size
gives a vector of ``C * sum(l^2)`` values. The grid uses adaptive bins
(``adaptive.adaptive_bins``) rather than the paper's ``window = ceil(a/n)``,
``stride = floor(a/n)`` rule, because that rule does not always give ``n`` bins: for
``a = 7, n = 4`` it gives a window of 2 at stride 1, i.e. 6 bins, and for ``a < n`` the
stride is 0. Adaptive bins always give exactly ``n``; when ``n`` divides ``a`` they are the
paper's windows.

``yolo_spp`` (YOLOv3-SPP) and ``sppf`` (YOLOv5) keep H x W and concatenate stride-1
max pools along C. They are the parameter-free core only: the 1x1 convolutions that
YOLOv5 puts before and after belong to the model, not the pooling op.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from models.pooling.adaptive import adaptive_pool
from models.pooling.checks import check_float
from models.pooling.schemas.pyramid import SPPFParams as SPPFParams
from models.pooling.schemas.pyramid import SPPParams as SPPParams
from models.pooling.schemas.pyramid import YoloSPPParams as YoloSPPParams
from models.pooling.schemas.window import MaxParams
from models.pooling.window import max_pool


def spp_pool(x: Tensor, p: SPPParams) -> Tensor:
    """SPPNet pooling: each level's (N, C, l, l) grid flattened C-major, levels in order.

    Returns:
        (N, C * sum(l^2)) for any input size.
    """
    check_float(x, "spp")
    p.output_shape(tuple(x.shape))
    parts = [adaptive_pool(x, (level, level), p.mode).flatten(1) for level in p.levels]
    return torch.cat(parts, dim=1)


def _same_max(x: Tensor, k: int) -> Tensor:
    """k x k max pool at stride 1 with k // 2 padding (odd k), so H x W is kept."""
    # return_indices is off, so max_pool returns a single tensor.
    params = MaxParams(kernel_size=(k, k), stride=(1, 1), padding=(k // 2,) * 4)
    return cast(Tensor, max_pool(x, params))


def yolo_spp_pool(x: Tensor, p: YoloSPPParams) -> Tensor:
    """YOLOv3-SPP: ``cat([x, maxpool_k1(x), maxpool_k2(x), ...], dim=1)``."""
    check_float(x, "yolo_spp")
    p.output_shape(tuple(x.shape))
    return torch.cat([x, *(_same_max(x, k) for k in p.kernel_sizes)], dim=1)


def sppf_pool(x: Tensor, p: SPPFParams) -> Tensor:
    """YOLOv5 SPPF: ``y1 = m(x), y2 = m(y1), y3 = m(y2)``, then ``cat([x, y1, y2, y3])``.

    Chaining a k-window max pool is exactly one (2k-1) and one (3k-2) window pool, so this
    equals ``yolo_spp`` with kernels (k, 2k-1, 3k-2) at a fraction of the cost.
    """
    check_float(x, "sppf")
    p.output_shape(tuple(x.shape))
    y1 = _same_max(x, p.kernel_size)
    y2 = _same_max(y1, p.kernel_size)
    y3 = _same_max(y2, p.kernel_size)
    return torch.cat([x, y1, y2, y3], dim=1)


class SpatialPyramidPool(nn.Module):
    def __init__(self, params: SPPParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return spp_pool(x, self.params)


class YoloSPP(nn.Module):
    def __init__(self, params: YoloSPPParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return yolo_spp_pool(x, self.params)


class SPPF(nn.Module):
    def __init__(self, params: SPPFParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return sppf_pool(x, self.params)
