"""Generalised-mean (GeM) pooling (Radenović, Tolias and Chum, TPAMI 2018).

GeM clamps the activations at ``eps``, raises them to the power ``p``, averages over the
whole map and takes the p-th root: ``p = 1`` is average pooling and ``p -> inf`` tends to
max pooling. cirtorch learns ``p`` (initialised to 3); the module does the same.

The mean runs over dims (2, 3) rather than through an ``avg_pool2d`` whose kernel is the
input size: the ONNX exporter keeps H and W dynamic for a mean, but silently fixes them
for a size-valued kernel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.errors import PoolInputError
from models.pooling.params import require
from models.pooling.schemas.gem import GeMParams as GeMParams


def _exponent(p: Tensor | float, x: Tensor) -> Tensor | float:
    """A float p as is; a tensor p of 1 value (GeM) or C values (cirtorch's GeMmp) as (-1, 1, 1)
    in x's dtype, so that 1 / p is as precise as x."""
    if not isinstance(p, Tensor):
        require(math.isfinite(p) and p > 0, f"gem: p must be a finite number > 0, got {p}")
        return float(p)
    channels = x.shape[1]
    if p.numel() not in (1, channels):
        raise PoolInputError(
            f"gem: a tensor p needs 1 value or one per channel ({channels}), got shape "
            f"{tuple(p.shape)}"
        )
    return p.to(x.dtype).reshape(-1, 1, 1)


def gem_pool(x: Tensor, params: GeMParams, p: Tensor | float | None = None) -> Tensor:
    """Generalised mean over H and W: ``mean(clamp(x, min=eps) ** p) ** (1 / p)``.

    Args:
        x: activations, (N, C, H, W).
        params: the op's parameters.
        p: the exponent, overriding ``params.p``: a float, or a tensor with one value
            (the learnable p) or one value per channel. A tensor p is not range-checked
            (that would need its value); keep it > 0.

    Returns:
        The pooled descriptor, (N, C, 1, 1).
    """
    check_float(x, "gem")
    params.output_shape(tuple(x.shape))
    exponent = _exponent(params.p if p is None else p, x)
    pooled = x.clamp(min=params.eps).pow(exponent).mean(dim=(2, 3), keepdim=True)
    return pooled.pow(1.0 / exponent)


class GeM(nn.Module):
    """GeM with cirtorch's learnable exponent.

    Its one parameter ``p`` has shape (1,), so a cirtorch checkpoint's ``pool.p`` loads
    into it unchanged.
    """

    def __init__(self, params: GeMParams) -> None:
        super().__init__()
        self.params = params
        self.p = nn.Parameter(torch.full((1,), params.p))

    def forward(self, x: Tensor) -> Tensor:
        return gem_pool(x, self.params, self.p)
