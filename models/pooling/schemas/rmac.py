"""Parameter schema and registry entry of ``models.pooling.rmac``, without torch."""

from __future__ import annotations

import math

from pydantic import model_validator

from models.pooling.params import PoolParams, check_nchw, require
from models.pooling.registry import PoolSpec, register_pool

MAX_LEVELS = 10
"""Upper bound on ``levels``: region count grows as levels**3 (715 regions at 10)."""


class RMACParams(PoolParams):
    """R-MAC parameters.

    Attributes:
        levels: number of region scales (cirtorch's ``L``).
        eps: added to every L2 norm (not clamped), as cirtorch's ``L2N``.
    """

    levels: int = 3
    eps: float = 1e-6

    @model_validator(mode="after")
    def _check(self) -> RMACParams:
        require(
            1 <= self.levels <= MAX_LEVELS,
            f"levels must be between 1 and {MAX_LEVELS}, got {self.levels}",
        )
        require(
            math.isfinite(self.eps) and self.eps > 0,
            f"eps must be a finite number > 0, got {self.eps}",
        )
        return self

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, _, _ = check_nchw(shapes[0], "rmac")
        return (n, c, 1, 1)


register_pool(
    PoolSpec(
        "rmac",
        RMACParams,
        "models.pooling.rmac:RMAC",
        "Regional MAC (cirtorch LF.rmac): sum of L2-normalised region maxima and global MAC.",
    )
)
