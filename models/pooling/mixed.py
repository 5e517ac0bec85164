"""Mixed max-average pooling (Lee, Gallagher, Tu, "Generalizing Pooling Functions in
Convolutional Neural Networks: Mixed, Gated, and Tree", AISTATS 2016).

``alpha * max_pool(x) + (1 - alpha) * avg_pool(x)`` over the same window. The paper learns
``alpha`` per layer; here it is a fixed parameter in [0, 1] (default 0.5), set from a trained
model. Both halves are this library's ``max_pool`` and ``avg_pool``, so they get asymmetric
padding, dilation and ceil_mode with torch's rules. The average half counts the padding as
``avg`` does, chosen by ``count_include_pad`` (default True, torch's default).
``alpha = 1`` returns exactly the max pool and ``alpha = 0`` exactly the average pool (the
other half is not computed, so an infinite value there cannot turn the result into NaN).
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.schemas.mixed import MixedParams as MixedParams
from models.pooling.window import avg_pool, max_pool


def mixed_pool(x: Tensor, p: MixedParams) -> Tensor:
    """``alpha * max + (1 - alpha) * avg`` over each window."""
    check_float(x, "mixed")
    p.output_shape(tuple(x.shape))
    if p.alpha == 0.0:
        return avg_pool(x, p.avg_params())
    high = cast(Tensor, max_pool(x, p.max_params()))  # a tensor: return_indices is off
    if p.alpha == 1.0:
        return high
    return p.alpha * high + (1.0 - p.alpha) * avg_pool(x, p.avg_params())


class MixedPool(nn.Module):
    def __init__(self, params: MixedParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return mixed_pool(x, self.params)
