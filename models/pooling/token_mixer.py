"""PoolFormer's token mixer (Yu et al., "MetaFormer Is Actually What You Need for Vision",
CVPR 2022).

``AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)(x) - x``:
a stride-1 mean over each pixel's neighbourhood, averaging only the real pixels at the
border, minus the pixel itself (the PoolFormer block adds its own residual). The mean is
the library's ``avg`` op, so both agree by construction.
"""

from __future__ import annotations

from functools import cache

from torch import Tensor, nn

from models.pooling.schemas.token_mixer import PoolFormerMixerParams as PoolFormerMixerParams
from models.pooling.schemas.window import AvgParams
from models.pooling.window import avg_pool


@cache
def _avg_params(pool_size: int) -> AvgParams:
    """The mean's parameters, validated once per pool size rather than on every call."""
    pad = pool_size // 2
    return AvgParams(
        kernel_size=(pool_size, pool_size),
        stride=(1, 1),
        padding=(pad, pad, pad, pad),
        count_include_pad=False,
    )


def poolformer_mixer(x: Tensor, params: PoolFormerMixerParams) -> Tensor:
    """Neighbourhood mean (real pixels only) minus the pixel.

    Args:
        x: input, (N, C, H, W).
        params: the op's parameters.

    Returns:
        The mixed map, the shape of x.
    """
    params.output_shape(tuple(x.shape))
    return avg_pool(x, _avg_params(params.pool_size)) - x


class PoolFormerMixer(nn.Module):
    """PoolFormer's ``Pooling`` token mixer; no parameters."""

    def __init__(self, params: PoolFormerMixerParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return poolformer_mixer(x, self.params)
