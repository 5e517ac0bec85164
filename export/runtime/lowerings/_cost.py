"""Small helpers for the lowerings' cost formulas (``Lowering.nodes`` / ``peak_bytes``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Shape = tuple[int, ...]
INT64 = 8


def out_elements(p: Any, shapes: Sequence[Shape]) -> int:
    """Elements of the op's (first) output for these input shapes."""
    return math.prod(p.output_shape(*shapes))


def in_elements(shapes: Sequence[Shape]) -> int:
    """Elements of x."""
    return math.prod(shapes[0])


def window_area(p: Any) -> int:
    kh, kw = p.kernel_size
    return int(kh * kw)
