"""Parameter schema and registry entry of ``models.pooling.gem``, without torch."""

from __future__ import annotations

import math

from pydantic import model_validator

from models.pooling.params import PoolParams, check_nchw, require
from models.pooling.registry import PoolSpec, register_pool


class GeMParams(PoolParams):
    """GeM parameters.

    Attributes:
        p: the exponent (> 0); the module's learnable ``p`` starts here.
        eps: activations are clamped to at least ``eps`` before the power.
    """

    p: float = 3.0
    eps: float = 1e-6

    @model_validator(mode="after")
    def _check(self) -> GeMParams:
        require(
            math.isfinite(self.p) and self.p > 0, f"p must be a finite number > 0, got {self.p}"
        )
        require(
            math.isfinite(self.eps) and self.eps > 0,
            f"eps must be a finite number > 0, got {self.eps}",
        )
        return self

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, _, _ = check_nchw(shapes[0], "gem")
        return (n, c, 1, 1)


register_pool(
    PoolSpec(
        "gem",
        GeMParams,
        "models.pooling.gem:GeM",
        "Generalised mean (cirtorch GeM): (mean of clamp(x, eps)^p)^(1/p) with a learnable p.",
        examples=({}, {"p": 1.5, "eps": 1e-3}),
    )
)
