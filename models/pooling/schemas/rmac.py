"""Parameter schema, region grid and registry entry of ``models.pooling.rmac``, without torch.

The grid lives here, not with the torch op, because it is plain Python on (H, W): the ONNX
lowering (``export.runtime.lowerings.rmac``) builds its fixed-size graph from the same regions.
cirtorch does the grid arithmetic on float32 tensors, and rounding decides some region
starts (at 2x32 the last 1-pixel region starts at column 30 where exact arithmetic gives
31); ``_f32`` replays those float32 steps so the regions are cirtorch's, not an idealised
grid.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from pydantic import model_validator

from models.pooling.params import PoolParams, check_nchw, require
from models.pooling.registry import PoolSpec, register_pool

_OVERLAP = 0.4  # the target overlap of neighbouring regions on the long side
_STEP_CHOICES = range(2, 8)  # candidate region counts along the long side at level 1

Region = tuple[int, int, int]
"""A square region as (top, left, side)."""


def _f32(value: float) -> float:
    """Round to the nearest float32, to replay one step of cirtorch's float32 arithmetic."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def _extra_regions(h: int, w: int) -> int:
    """How many more regions the long side gets than the short one (cirtorch's Wd / Hd)."""
    short, excess = min(h, w), max(h, w) - min(h, w)
    if excess == 0:
        return 0
    area = _f32(short * short)
    errors = []
    for steps in _STEP_CHOICES:
        # torch evaluates `int / tensor` as `reciprocal(tensor) * int`.
        shift = _f32(_f32(1 / (steps - 1)) * excess)
        overlap = _f32(_f32(area - _f32(short * shift)) / area)
        errors.append(abs(_f32(overlap - _f32(_OVERLAP))))
    return errors.index(min(errors)) + 1  # the first best, as torch.min returns


def _starts(length: int, side: int, count: int, offset: int) -> list[int]:
    """``count`` region starts spread evenly over ``length``; cirtorch's centre grid."""
    step = 0.0 if count == 1 else _f32((length - side) / (count - 1))
    return [math.floor(_f32(offset + _f32(i * step))) - offset for i in range(count)]


def rmac_regions(h: int, w: int, levels: int = 3) -> list[Region]:
    """The R-MAC regions of an H x W map, level by level, row-major within a level.

    Args:
        h: map height.
        w: map width.
        levels: number of scales.

    Returns:
        (top, left, side) squares, all inside the map. Levels whose side would be 0
        are skipped, as cirtorch skips them.
    """
    short = min(h, w)
    extra = _extra_regions(h, w)
    extra_h, extra_w = (extra, 0) if h > w else (0, extra)
    regions: list[Region] = []
    for level in range(1, levels + 1):
        side = (2 * short) // (level + 1)
        if side == 0:
            break  # sides only shrink with the level
        offset = math.floor(side / 2 - 1)
        for top in _starts(h, side, level + extra_h, offset):
            regions.extend((top, left, side) for left in _starts(w, side, level + extra_w, offset))
    return regions


MAX_LEVELS = 10
"""Upper bound on ``levels``: region count grows as levels**3 (715 regions at 10)."""


class RMACParams(PoolParams):
    """R-MAC parameters.

    Attributes:
        levels: number of region scales (cirtorch's ``L``).
        eps: added to every L2 norm (not clamped), as cirtorch's ``L2N``.
    """

    levels: int = 3
    eps: float = 1e-6

    @model_validator(mode="after")
    def _check(self) -> RMACParams:
        require(
            1 <= self.levels <= MAX_LEVELS,
            f"levels must be between 1 and {MAX_LEVELS}, got {self.levels}",
        )
        require(
            math.isfinite(self.eps) and self.eps > 0,
            f"eps must be a finite number > 0, got {self.eps}",
        )
        return self

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, _, _ = check_nchw(shapes[0], "rmac")
        return (n, c, 1, 1)


def rmac_work(params: RMACParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """The global max plus every region's max: the region areas, per plane."""
    n, c, h, w = shapes[0]
    areas = sum(side * side for _, _, side in rmac_regions(h, w, params.levels))
    return n * c * (h * w + areas)


register_pool(
    PoolSpec(
        "rmac",
        RMACParams,
        "models.pooling.rmac:RMAC",
        "Regional MAC (cirtorch LF.rmac): sum of L2-normalised region maxima and global MAC.",
        examples=({}, {"levels": 1}, {"levels": 4, "eps": 1e-3}),
        work=rmac_work,
    )
)
