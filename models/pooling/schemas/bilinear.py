"""Parameter schema and registry entries of ``models.pooling.bilinear``, without torch."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import model_validator

from models.pooling.errors import PoolInputError
from models.pooling.params import PoolParams, check_nchw, require
from models.pooling.registry import PoolSpec, TensorSpec, X, register_pool


class BilinearParams(PoolParams):
    """Bilinear pooling parameters.

    Attributes:
        signed_sqrt: apply ``sign(z) * sqrt(|z| + eps)`` elementwise (eps keeps the
            gradient finite at 0; 0 still maps to 0).
        normalize: divide by the L2 norm, floored at eps (``F.normalize``).
        eps: the small constant of both steps.
    """

    signed_sqrt: bool = True
    normalize: bool = True
    eps: float = 1e-12

    @model_validator(mode="after")
    def _check(self) -> BilinearParams:
        require(
            math.isfinite(self.eps) and self.eps > 0,
            f"eps must be a finite number > 0, got {self.eps}",
        )
        return self

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        """(N, C * C) for one input x; (N, C1 * C2) for inputs x and y."""
        if len(shapes) not in (1, 2):
            raise PoolInputError(f"bilinear: expected 1 or 2 inputs, got {len(shapes)}")
        n, c1, h, w = check_nchw(shapes[0], "bilinear")
        if len(shapes) == 1:
            return (n, c1 * c1)
        n2, c2, h2, w2 = check_nchw(shapes[1], "bilinear")
        if (n, h, w) != (n2, h2, w2):
            raise PoolInputError(
                f"bilinear: x {tuple(shapes[0])} and y {tuple(shapes[1])} must have the same "
                "batch size, height and width (resize one stream to the other's grid)"
            )
        return (n, c1 * c2)


def bilinear_work(params: BilinearParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """The outer products: N * C1 * C2 * H * W multiply-adds (C2 = C1 for one stream)."""
    n, c1, h, w = shapes[0]
    c2 = shapes[1][1] if len(shapes) > 1 else c1
    return n * c1 * c2 * h * w


register_pool(
    PoolSpec(
        "bilinear",
        BilinearParams,
        "models.pooling.bilinear:BilinearPool",
        "Bilinear pooling: x x^T / HW per sample, signed sqrt, L2; (N, C*C).",
        examples=(
            {},
            {"signed_sqrt": False},
            {"normalize": False},
            {"signed_sqrt": False, "normalize": False, "eps": 1e-3},
        ),
        work=bilinear_work,
    )
)


register_pool(
    PoolSpec(
        "bilinear2",
        BilinearParams,
        "models.pooling.bilinear:BilinearPool2",
        "Two-stream bilinear pooling: x y^T / HW, signed sqrt, L2; (N, C1*C2).",
        inputs=(
            X,
            TensorSpec("y", dims=("N", "C2", "H", "W"), doc="bilinear2: the second stream"),
        ),
        examples=(
            {},
            {"signed_sqrt": False},
            {"normalize": False},
            {"signed_sqrt": False, "normalize": False, "eps": 1e-3},
        ),
        work=bilinear_work,
    )
)
