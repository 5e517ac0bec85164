"""Parameter schema and registry entry of ``models.pooling.lp``, without torch."""

from __future__ import annotations

import math

from pydantic import model_validator

from models.pooling.errors import PoolInputError
from models.pooling.params import (
    KernelParams,
    check_nchw,
    pooled_length,
    require,
    window_work,
)
from models.pooling.registry import PoolSpec, register_pool


class LpParams(KernelParams):
    """Parameters of ``F.lp_pool2d``.

    Attributes:
        norm_type: the power p; any value > 0, or ``inf`` for the max of ``|x|``.
        kernel_size: window (h, w).
        stride: step (h, w); defaults to ``kernel_size``.
        ceil_mode: round the output size up; the overhanging windows are scaled as if full.
    """

    norm_type: float
    ceil_mode: bool = False

    @model_validator(mode="after")
    def _check(self) -> LpParams:
        p = self.norm_type
        require(
            p > 0 and not math.isnan(p),
            f"norm_type must be > 0 (or inf for the max of |x|), got {p}",
        )
        return self

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = check_nchw(shapes[0], "lp")
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        oh = pooled_length(h, kh, sh, 0, 0, 1, self.ceil_mode)
        ow = pooled_length(w, kw, sw, 0, 0, 1, self.ceil_mode)
        if oh < 1 or ow < 1:
            raise PoolInputError(
                f"lp: window {self.kernel_size} is larger than the {h}x{w} input; "
                "use a smaller kernel_size (lp pooling has no padding)"
            )
        return n, c, oh, ow


register_pool(
    PoolSpec(
        "lp",
        LpParams,
        "models.pooling.lp:LpPool",
        "Power-average pooling (sum x^p)^(1/p) over each window (torch LPPool2d); p=inf is max|x|.",
        examples=(
            {"kernel_size": 3, "norm_type": 2.0},
            {"norm_type": 2, "kernel_size": 3, "stride": 2},
            {"norm_type": 3, "kernel_size": (2, 3), "stride": (2, 1), "ceil_mode": True},
            {"norm_type": 1.5, "kernel_size": 2, "ceil_mode": True},
            {"norm_type": float("inf"), "kernel_size": 3, "stride": 2, "ceil_mode": True},
        ),
        work=window_work,
    )
)
