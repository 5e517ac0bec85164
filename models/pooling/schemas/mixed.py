"""Parameter schema and registry entry of ``models.pooling.mixed``, without torch."""

from __future__ import annotations

import math

from pydantic import model_validator

from models.pooling.params import WindowParams, require
from models.pooling.registry import PoolSpec, register_pool
from models.pooling.schemas.window import AvgParams, MaxParams


class MixedParams(WindowParams):
    """Window parameters plus the mixing weight.

    Attributes:
        alpha: weight of the max half, in [0, 1]; the average half gets ``1 - alpha``.
        count_include_pad: whether the average half divides by the padded positions too.
    """

    alpha: float = 0.5
    count_include_pad: bool = True

    @model_validator(mode="after")
    def _check_alpha(self) -> MixedParams:
        require(
            0.0 <= self.alpha <= 1.0 and not math.isnan(self.alpha),
            f"alpha must be in [0, 1], got {self.alpha}",
        )
        return self

    def max_params(self) -> MaxParams:
        return MaxParams(**self.model_dump(include=set(WindowParams.model_fields)))

    def avg_params(self) -> AvgParams:
        window = self.model_dump(include=set(WindowParams.model_fields))
        return AvgParams(**window, count_include_pad=self.count_include_pad)


register_pool(
    PoolSpec(
        "mixed",
        MixedParams,
        "models.pooling.mixed:MixedPool",
        "Mixed pooling alpha*max + (1-alpha)*avg over each window (Lee et al. 2016).",
    )
)
