"""Parameter schema and registry entry of ``models.pooling.mixed``, without torch."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import model_validator

from models.pooling.params import WindowParams, require, window_work
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


def mixed_work(params: MixedParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """A max and an average over every window."""
    return 2 * window_work(params, shapes)


register_pool(
    PoolSpec(
        "mixed",
        MixedParams,
        "models.pooling.mixed:MixedPool",
        "Mixed pooling alpha*max + (1-alpha)*avg over each window (Lee et al. 2016).",
        examples=(
            {"kernel_size": 3},
            {"kernel_size": 3, "stride": 2, "padding": 1, "alpha": 0.3, "count_include_pad": False},
            {"kernel_size": 2, "alpha": 0.0, "ceil_mode": True},
            {"kernel_size": 2, "stride": 1, "padding": (0, 1, 0, 1), "alpha": 1.0},
        ),
        work=mixed_work,
    )
)
