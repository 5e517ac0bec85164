"""Parameter schema and registry entry of ``models.pooling.unpool``, without torch."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import model_validator

from models.pooling.errors import PoolInputError
from models.pooling.params import (
    KernelParams,
    OptionalPair,
    Padding,
    check_nchw,
    check_padding,
    require,
)
from models.pooling.registry import PoolSpec, TensorSpec, X, register_pool


class MaxUnpoolParams(KernelParams):
    """Max unpooling parameters: those of the max pool being inverted.

    Attributes:
        kernel_size: the pool's window.
        stride: the pool's stride (defaults to the kernel).
        padding: the pool's padding, (left, right, top, bottom) once normalised.
        output_size: (h, w) of the pool's input, to pick among the sizes that pool to
            the same shape; default ``(in - 1) * stride - pad_begin - pad_end + kernel``.
    """

    padding: Padding = (0, 0, 0, 0)
    output_size: OptionalPair = None

    @model_validator(mode="after")
    def _check(self) -> MaxUnpoolParams:
        check_padding(self.padding, self.kernel_size)
        require(
            self.output_size is None or min(self.output_size) > 0,
            f"output_size must be > 0, got {self.output_size}",
        )
        return self

    def default_hw(self, h: int, w: int) -> tuple[int, int]:
        """The output size when ``output_size`` is not given."""
        left, right, top, bottom = self.padding
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        return (h - 1) * sh - top - bottom + kh, (w - 1) * sw - left - right + kw

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """The output (h, w) for an h x w input, checked the way torch checks it."""
        default = self.default_hw(h, w)
        if self.output_size is None:
            if min(default) < 1:
                raise PoolInputError(
                    f"max_unpool: a {h}x{w} input gives an empty output {default}; "
                    "check kernel_size, stride and padding, or give output_size"
                )
            return default
        for size, base, stride in zip(self.output_size, default, self.strides, strict=True):
            if not base - stride < size < base + stride:
                raise PoolInputError(
                    f"max_unpool: output_size {self.output_size} is not a size a "
                    f"{h}x{w} pool output can come from: each dim must be strictly between "
                    f"default - stride and default + stride, with default {default} and "
                    f"stride {self.strides}"
                )
        return self.output_size

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        """Shape for (x_shape[, indices_shape]); indices must have x's shape."""
        n, c, h, w = check_nchw(shapes[0], "max_unpool")
        if len(shapes) > 1 and tuple(shapes[1]) != tuple(shapes[0]):
            raise PoolInputError(
                f"max_unpool: indices {tuple(shapes[1])} must have the shape of x "
                f"{tuple(shapes[0])}"
            )
        return (n, c, *self.output_hw(h, w))


def unpool_work(params: MaxUnpoolParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """Zero the output, then scatter every input element."""
    return math.prod(params.output_shape(*shapes)) + math.prod(shapes[0])


register_pool(
    PoolSpec(
        "max_unpool",
        MaxUnpoolParams,
        "models.pooling.unpool:MaxUnpool",
        "Max unpooling (torch MaxUnpool2d): scatter values to max-pool indices, zeros elsewhere.",
        inputs=(
            X,
            TensorSpec(
                "indices",
                dtype="int64",
                doc="max_unpool: the max pool's indices into each output plane",
                bounds="output_plane",
            ),
        ),
        examples=(
            {"kernel_size": 2},
            {"kernel_size": 3, "stride": 2, "padding": 1},
            {"kernel_size": (2, 3), "stride": (2, 1), "padding": (1, 0, 1, 1)},
            {"kernel_size": 3, "stride": 3},
        ),
        work=unpool_work,
    )
)
