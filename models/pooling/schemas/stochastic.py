"""Parameter schema and registry entry of ``models.pooling.stochastic``, without torch."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from models.pooling.params import WindowParams, require, window_work
from models.pooling.registry import PoolSpec, register_pool

_MAX_SEED = 2**63 - 1


class StochasticParams(WindowParams):
    """Window parameters plus the pooling rule.

    Negative inputs are clamped to 0 and a window with no positive value gives 0; padding is
    zeros, which never contributes (see ``models.pooling.stochastic``).

    Attributes:
        mode: ``"expectation"`` (default; ``sum a**2 / sum a``) or ``"sample"`` (one value per
            window, drawn with probability proportional to it).
        seed: seeds the generator for ``"sample"``, afresh on every call.
    """

    mode: Literal["expectation", "sample"] = "expectation"
    seed: int = 0

    @model_validator(mode="after")
    def _check_seed(self) -> StochasticParams:
        require(0 <= self.seed <= _MAX_SEED, f"seed must be in [0, 2**63 - 1], got {self.seed}")
        return self


register_pool(
    PoolSpec(
        "stochastic",
        StochasticParams,
        "models.pooling.stochastic:StochasticPool",
        "Stochastic pooling (Zeiler & Fergus 2013): expectation sum(a^2)/sum(a), or a seeded "
        "draw with p proportional to a.",
        examples=(
            {"kernel_size": 3},
            {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
            {"kernel_size": 2, "dilation": 2},
        ),
        work=window_work,
    )
)
