"""Bilinear (second-order) pooling (Lin, RoyChowdhury and Maji, ICCV 2015).

Each sample's feature map is read as a C x HW matrix and pooled into the average outer
product of its location vectors, ``B = x y^T / (H W)``, then (as in the paper) passed
through a signed square root and L2-normalised. The result is flattened row-major, so
entry ``(i, j)`` of B is element ``i * C2 + j`` of the (N, C1 * C2) output.

Two ops share one schema, because a registered op has a fixed list of inputs:

- ``bilinear``: one input; B = x x^T (the symmetric, "homogeneous" form), (N, C * C).
- ``bilinear2``: two inputs x (N, C1, H, W) and y (N, C2, H, W) from two streams with the
  same N, H and W; B = x y^T, (N, C1 * C2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.errors import PoolInputError
from models.pooling.schemas.bilinear import BilinearParams as BilinearParams


def _check_pair(x: Tensor, y: Tensor) -> None:
    check_float(y, "bilinear")
    if y.dtype != x.dtype or y.device != x.device:
        raise PoolInputError(
            f"bilinear: x and y must share dtype and device, got {x.dtype} on {x.device} "
            f"and {y.dtype} on {y.device}"
        )


def bilinear_pool(x: Tensor, params: BilinearParams, y: Tensor | None = None) -> Tensor:
    """Average outer product of x's and y's location vectors, signed sqrt, L2.

    Args:
        x: features, (N, C1, H, W).
        params: the op's parameters.
        y: second-stream features, (N, C2, H, W); x itself when omitted.

    Returns:
        (N, C1 * C2), row-major over (C1, C2).
    """
    check_float(x, "bilinear")
    if y is None:
        params.output_shape(tuple(x.shape))
    else:
        _check_pair(x, y)
        params.output_shape(tuple(x.shape), tuple(y.shape))
    xs = x.flatten(2)
    ys = xs if y is None else y.flatten(2)
    z = torch.bmm(xs, ys.transpose(1, 2)).flatten(1) / xs.shape[-1]
    if params.signed_sqrt:
        z = torch.sign(z) * torch.sqrt(z.abs() + params.eps)
    if params.normalize:
        z = F.normalize(z, p=2.0, dim=1, eps=params.eps)
    return z


class BilinearPool(nn.Module):
    """``bilinear``: one input; no parameters."""

    def __init__(self, params: BilinearParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return bilinear_pool(x, self.params)


class BilinearPool2(nn.Module):
    """``bilinear2``: two inputs x and y; no parameters."""

    def __init__(self, params: BilinearParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return bilinear_pool(x, self.params, y)
