"""Parameter schema and registry entry of ``models.pooling.softpool``, without torch."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import model_validator

from models.pooling.params import WindowParams, require, window_work
from models.pooling.registry import PoolSpec, register_pool


class SoftParams(WindowParams):
    """Window parameters (kernel_size, stride, padding, ceil_mode); dilation must stay 1.

    Padded positions and the ceil_mode overhang get weight 0.
    """

    @model_validator(mode="after")
    def _check_dilation(self) -> SoftParams:
        require(
            self.dilation == (1, 1),
            f"softpool does not support dilation, got {self.dilation}; use dilation=1",
        )
        return self


SOFTPOOL_STEPS = 10
"""Per window element: its copy into the window stack, the softmax (max, subtract, exp,
sum, divide), the masks and the weighted sum; measured at about that many elementary
operations' time."""


def softpool_work(params: SoftParams, shapes: Sequence[tuple[int, ...]]) -> int:
    return window_work(params, shapes) * SOFTPOOL_STEPS


register_pool(
    PoolSpec(
        "softpool",
        SoftParams,
        "models.pooling.softpool:SoftPool",
        "SoftPool (Stergiou et al. 2021): softmax-weighted sum of each window, numerically stable.",
        examples=(
            {"kernel_size": 3},
            {"kernel_size": 2},
            {"kernel_size": 3, "stride": 2, "padding": (1, 0, 1, 1), "ceil_mode": True},
        ),
        work=softpool_work,
    )
)
