"""Parameter schema and registry entry of ``models.pooling.fractional``, without torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema, model_validator

from models.pooling.errors import PoolInputError
from models.pooling.params import OptionalPair, Pair, PoolParams, check_nchw, require, to_pair
from models.pooling.registry import PoolSpec, TensorSpec, X, register_pool

RatioPair = Annotated[
    tuple[float, float] | None,
    BeforeValidator(to_pair),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number"},
                {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                {"type": "null"},
            ]
        }
    ),
]
"""A float or an (h, w) pair of floats, normalised to a pair."""


class FractionalMaxParams(PoolParams):
    """Fractional max pooling parameters.

    Attributes:
        kernel_size: the pooling window (Graham's is 2; torch lets it be any size).
        output_size: the output (h, w); exactly one of this and ``output_ratio``.
        output_ratio: output size as a fraction of the input's, each in (0, 1); the size
            is ``int(in * ratio)``, as torch computes it.
        return_indices: also return the flat per-plane index of each maximum.
        seed: draw the samples from a generator seeded with this, for a repeatable pool.
    """

    kernel_size: Pair
    output_size: OptionalPair = None
    output_ratio: RatioPair = None
    return_indices: bool = False
    seed: int | None = None

    @model_validator(mode="after")
    def _check(self) -> FractionalMaxParams:
        require(min(self.kernel_size) > 0, f"kernel_size must be > 0, got {self.kernel_size}")
        require(
            (self.output_size is None) != (self.output_ratio is None),
            "give exactly one of output_size and output_ratio",
        )
        require(
            self.output_size is None or min(self.output_size) > 0,
            f"output_size must be > 0, got {self.output_size}",
        )
        require(
            self.output_ratio is None or all(0 < r < 1 for r in self.output_ratio),
            f"output_ratio must be in (0, 1) (exclusive), got {self.output_ratio}",
        )
        require(
            self.seed is None or 0 <= self.seed < 2**63,
            f"seed must be in [0, 2**63), got {self.seed}",
        )
        return self

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """The output (h, w); every window must fit inside the h x w input."""
        if self.output_ratio is not None:
            oh, ow = int(h * self.output_ratio[0]), int(w * self.output_ratio[1])
        else:
            oh, ow = self.output_size or (0, 0)  # never (0, 0): the validator requires one
        if oh < 1 or ow < 1:
            raise PoolInputError(
                f"fractional_max: output_ratio {self.output_ratio} gives an empty output "
                f"({oh}x{ow}) for a {h}x{w} input; use a larger ratio or input"
            )
        kh, kw = self.kernel_size
        if oh + kh - 1 > h or ow + kw - 1 > w:
            raise PoolInputError(
                f"fractional_max: output {oh}x{ow} with kernel {self.kernel_size} needs an "
                f"input of at least {oh + kh - 1}x{ow + kw - 1}, got {h}x{w}; "
                "use a smaller output or kernel"
            )
        return oh, ow

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = check_nchw(shapes[0], "fractional_max")
        return (n, c, *self.output_hw(h, w))


def fractional_work(params: FractionalMaxParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """Every output element reads its kernel's k_h * k_w inputs."""
    kh, kw = params.kernel_size
    return math.prod(params.output_shape(*shapes)) * kh * kw


register_pool(
    PoolSpec(
        "fractional_max",
        FractionalMaxParams,
        "models.pooling.fractional:FractionalMaxPool",
        "Fractional max pooling (Graham 2014, torch FractionalMaxPool2d), optionally seeded.",
        inputs=(
            X,
            TensorSpec(
                "samples",
                dims=("N", "C", 2),
                doc="fractional_max: (N, C, 2) samples in [0, 1); drawn from seed if absent",
                bounds="unit",
                seed_param="seed",
            ),
        ),
        indices=True,
        examples=(
            {"kernel_size": 2, "output_ratio": 0.7},
            {"kernel_size": 2, "output_size": (7, 9)},
            {"kernel_size": (3, 2), "output_size": (5, 8), "return_indices": True},
            {"kernel_size": 3, "output_ratio": (0.5, 0.75)},
            {"kernel_size": 2, "output_size": (1, 3), "return_indices": True},
            {"kernel_size": 1, "output_size": (8, 8)},
            {"kernel_size": 3, "output_ratio": (0.3, 0.45), "return_indices": True},
        ),
        work=fractional_work,
        function_path="models.pooling.fractional:fractional_max_pool",
    )
)
