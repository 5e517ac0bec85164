"""Parameter schemas and registry entries of ``models.pooling.adaptive``, without torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema, model_validator

from models.pooling.params import PoolParams, adaptive_span, check_nchw, require, to_pair
from models.pooling.registry import PoolSpec, register_pool

OutputSize = Annotated[
    tuple[int | None, int | None],
    BeforeValidator(to_pair),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer"},
                {
                    "type": "array",
                    "items": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                    "minItems": 2,
                    "maxItems": 2,
                },
            ],
            "description": "int, or (h, w) where null keeps that input dimension",
        }
    ),
]
"""An adaptive output size: an int or an (h, w) pair; a null entry keeps the input size."""


class AdaptiveParams(PoolParams):
    """Parameters of ``adaptive_avg``: the output grid, as torch's ``output_size``."""

    output_size: OutputSize

    @model_validator(mode="after")
    def _check_size(self) -> AdaptiveParams:
        require(
            all(s is None or s > 0 for s in self.output_size),
            f"output_size entries must be > 0 or null, got {self.output_size}",
        )
        return self

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """The (oh, ow) grid for an h x w input: null entries take the input size."""
        oh, ow = self.output_size
        return (h if oh is None else oh, w if ow is None else ow)

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = check_nchw(shapes[0], type(self).__name__)
        return (n, c, *self.output_hw(h, w))


class AdaptiveMaxParams(AdaptiveParams):
    """Parameters of ``adaptive_max``; ``return_indices`` adds torch's flat per-plane argmax."""

    return_indices: bool = False


class AvgMaxParams(AdaptiveParams):
    """Parameters of ``avgmax_add``: the adaptive grid, global (1 x 1) by default."""

    output_size: OutputSize = (1, 1)


class AvgMaxCatParams(AvgMaxParams):
    """``avgmax_cat`` doubles the channels: [avg, max]."""

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, oh, ow = super().output_shape(*shapes)
        return (n, 2 * c, oh, ow)


class GlobalParams(PoolParams):
    """Global pooling has no parameters; the output is (N, C, 1, 1)."""

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, _, _ = check_nchw(shapes[0], type(self).__name__)
        return (n, c, 1, 1)


def adaptive_work(params: AdaptiveParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """Every element each of torch's bins reads (bins overlap where the split is not exact)."""
    n, c, h, w = shapes[0]
    oh, ow = params.output_hw(h, w)
    return n * c * adaptive_span(h, oh) * adaptive_span(w, ow)


def both_work(params: AdaptiveParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """avg and max over the same bins."""
    return 2 * adaptive_work(params, shapes)


register_pool(
    PoolSpec(
        "adaptive_avg",
        AdaptiveParams,
        "models.pooling.adaptive:AdaptiveAvgPool",
        "Adaptive mean to any output_size with torch's bins (AdaptiveAvgPool2d).",
        examples=(
            {"output_size": 7},
            {"output_size": 3},
            {"output_size": (4, 2)},
            {"output_size": (5, None)},
            {"output_size": (20, 1)},
            {"output_size": 1},
        ),
        work=adaptive_work,
    )
)


register_pool(
    PoolSpec(
        "adaptive_max",
        AdaptiveMaxParams,
        "models.pooling.adaptive:AdaptiveMaxPool",
        "Adaptive max to any output_size with torch's bins (AdaptiveMaxPool2d), "
        "with return_indices.",
        indices=True,
        examples=(
            {"output_size": 7},
            {"output_size": 3},
            {"output_size": (4, 5), "return_indices": True},
            {"output_size": (None, 3)},
            {"output_size": (3, None), "return_indices": True},
            {"output_size": (17, 2), "return_indices": True},
            {"output_size": 1, "return_indices": True},
        ),
        work=adaptive_work,
    )
)


register_pool(
    PoolSpec(
        "global_avg",
        GlobalParams,
        "models.pooling.adaptive:GlobalAvgPool",
        "Global mean over H, W (SPoC).",
    )
)


register_pool(
    PoolSpec(
        "global_max",
        GlobalParams,
        "models.pooling.adaptive:GlobalMaxPool",
        "Global max over H, W (MAC).",
    )
)


register_pool(
    PoolSpec(
        "avgmax_add",
        AvgMaxParams,
        "models.pooling.adaptive:AvgMaxAddPool",
        "0.5 * (adaptive avg + adaptive max), output_size 1 by default (timm avgmax).",
        examples=({}, {"output_size": 3}),
        work=both_work,
    )
)


register_pool(
    PoolSpec(
        "avgmax_cat",
        AvgMaxCatParams,
        "models.pooling.adaptive:AvgMaxCatPool",
        "Channel concat [adaptive avg, adaptive max], 2C channels (timm catavgmax).",
        examples=({}, {"output_size": (2, 3)}),
        work=both_work,
    )
)
