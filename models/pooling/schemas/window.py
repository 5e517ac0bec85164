"""Parameter schemas and registry entries of ``models.pooling.window``, without torch."""

from __future__ import annotations

from pydantic import model_validator

from models.pooling.params import WindowParams, require
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
    )
)


register_pool(
    PoolSpec(
        "avg",
        AvgParams,
        "models.pooling.window:AvgPool",
        "Sliding-window mean (torch AvgPool2d), with "
        "count_include_pad, divisor_override, asymmetric padding and dilation.",
    )
)


register_pool(
    PoolSpec("min", MaxParams, "models.pooling.window:MinPool", "Sliding-window minimum, -max(-x).")
)
