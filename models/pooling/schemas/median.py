"""Parameter schema and registry entry of ``models.pooling.median``, without torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from models.pooling.errors import PoolInputError
from models.pooling.params import WindowParams, window_work
from models.pooling.registry import PoolSpec, register_pool

PAD_MODES: dict[str, Literal["reflect", "edge", "constant"]] = {
    "reflect": "reflect",
    "replicate": "edge",
    "zeros": "constant",
}
"""Each ``padding_mode`` by the name numpy.pad and ONNX Pad both give it."""


class MedianParams(WindowParams):
    """Window parameters plus what the padding holds.

    Attributes:
        padding_mode: ``"reflect"`` (default), ``"replicate"`` or ``"zeros"``; the padded
            values count as window values. Reflect needs padding < input size on each side.
    """

    padding_mode: Literal["reflect", "replicate", "zeros"] = "reflect"

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        shape = super().output_shape(*shapes)
        h, w = shapes[0][2], shapes[0][3]
        left, right, top, bottom = self.padding
        if self.padding_mode == "reflect" and (max(left, right) >= w or max(top, bottom) >= h):
            raise PoolInputError(
                f"median: reflect padding {self.padding} (left, right, top, bottom) must be "
                f"smaller than the {h}x{w} input on each side; use less padding or "
                "padding_mode='replicate'"
            )
        return shape


def median_work(params: MedianParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """Every window laid out (K copies) and partly sorted (about log2 K compares per
    element): measured about as slow per unit as the other ops' elementary operations."""
    area = params.kernel_size[0] * params.kernel_size[1]
    return window_work(params, shapes) * (math.ceil(math.log2(area)) + 2 if area > 1 else 1)


register_pool(
    PoolSpec(
        "median",
        MedianParams,
        "models.pooling.median:MedianPool",
        "Sliding-window lower median (median filter), with reflect/replicate/zeros padding.",
        examples=(
            {"kernel_size": 3},
            {"kernel_size": 3, "stride": 2, "padding": 1},
            {"kernel_size": 3, "stride": 1, "padding": 1},
            {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
            {
                "kernel_size": (2, 3),
                "stride": (2, 1),
                "padding": (1, 0, 1, 0),
                "padding_mode": "zeros",
            },
            {"kernel_size": 2, "dilation": 2, "ceil_mode": True, "padding_mode": "replicate"},
            {"kernel_size": 4, "stride": 3, "padding": (2, 1, 0, 2), "ceil_mode": True},
        ),
        work=median_work,
    )
)
