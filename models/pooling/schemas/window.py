"""Parameter schemas and registry entries of ``models.pooling.window``, without torch."""

from __future__ import annotations

from pydantic import model_validator

from models.pooling.params import WindowParams, require, window_work
from models.pooling.registry import PoolSpec, register_pool


class MaxParams(WindowParams):
    return_indices: bool = False


class AvgParams(WindowParams):
    count_include_pad: bool = True
    divisor_override: int | None = None

    @model_validator(mode="after")
    def _check_divisor(self) -> AvgParams:
        require(
            self.divisor_override is None or self.divisor_override > 0,
            f"divisor_override must be > 0 or null, got {self.divisor_override}",
        )
        return self


register_pool(
    PoolSpec(
        "max",
        MaxParams,
        "models.pooling.window:MaxPool",
        "Sliding-window maximum (torch MaxPool2d), with asymmetric padding and return_indices.",
        indices=True,
        examples=(
            {"kernel_size": 3},
            {"kernel_size": 3, "stride": 2, "padding": 1},
            {
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
                "ceil_mode": True,
                "return_indices": True,
            },
            {"kernel_size": (2, 3), "stride": (1, 2), "dilation": (2, 1), "return_indices": True},
            {"kernel_size": 2, "stride": 1, "padding": (0, 1, 0, 1), "return_indices": True},
            {
                "kernel_size": 5,
                "stride": 3,
                "padding": (2, 0, 1, 2),
                "dilation": 2,
                "ceil_mode": True,
            },
        ),
        work=window_work,
    )
)


register_pool(
    PoolSpec(
        "avg",
        AvgParams,
        "models.pooling.window:AvgPool",
        "Sliding-window mean (torch AvgPool2d), with "
        "count_include_pad, divisor_override, asymmetric padding and dilation.",
        examples=(
            {"kernel_size": 3},
            {
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
                "ceil_mode": True,
                "count_include_pad": False,
            },
            {"kernel_size": 3, "stride": 1, "padding": 1, "count_include_pad": False},
            {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
            {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0, 1, 0), "dilation": (2, 1)},
            {"kernel_size": 3, "stride": 2, "padding": (0, 1, 1, 0), "count_include_pad": False},
            {"kernel_size": (2, 3), "stride": (1, 2), "divisor_override": 4},
            {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "divisor_override": 5},
        ),
        work=window_work,
    )
)


register_pool(
    PoolSpec(
        "min",
        MaxParams,
        "models.pooling.window:MinPool",
        "Sliding-window minimum, -max(-x).",
        indices=True,
        examples=(
            {"kernel_size": 3},
            {"kernel_size": 3, "stride": 2, "padding": (1, 0, 0, 1), "ceil_mode": True},
            {"kernel_size": 2, "return_indices": True},
        ),
        work=window_work,
    )
)
