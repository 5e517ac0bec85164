"""Parameter schema and registry entry of ``models.pooling.token_mixer``, without torch."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import model_validator

from models.pooling.params import PoolParams, check_nchw, require
from models.pooling.registry import PoolSpec, register_pool


class PoolFormerMixerParams(PoolParams):
    """PoolFormer mixer parameters.

    Attributes:
        pool_size: the odd window side; odd, so the output keeps the input's size.
    """

    pool_size: int = 3

    @model_validator(mode="after")
    def _check(self) -> PoolFormerMixerParams:
        require(
            self.pool_size > 0 and self.pool_size % 2 == 1,
            f"pool_size must be odd and > 0 (so the output keeps the input's size), "
            f"got {self.pool_size}",
        )
        return self

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        return check_nchw(shapes[0], "poolformer_mixer")


def mixer_work(params: PoolFormerMixerParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """A pool_size x pool_size mean at every position, then the subtraction."""
    return math.prod(shapes[0]) * (params.pool_size**2 + 1)


register_pool(
    PoolSpec(
        "poolformer_mixer",
        PoolFormerMixerParams,
        "models.pooling.token_mixer:PoolFormerMixer",
        "PoolFormer token mixer: AvgPool2d(k, 1, k // 2, count_include_pad=False)(x) - x.",
        examples=({}, {"pool_size": 5}),
        work=mixer_work,
    )
)
