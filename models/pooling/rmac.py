"""Regional maximum activation of convolutions, R-MAC (Tolias, Sicre and Jégou, ICLR 2016).

This is cirtorch's ``LF.rmac``: square regions on ``levels`` scales; at level ``l`` their
side is ``floor(2 * min(H, W) / (l + 1))`` and they sit on a uniform grid with ``l``
regions along the short side and ``l + extra`` along the long one, where ``extra`` is the
count (1..6) whose neighbouring regions overlap closest to 40 %. The descriptor is the
L2-normalised global MAC plus every L2-normalised region MAC, **without** a final
normalisation, exactly as cirtorch returns it (its network normalises afterwards).

The grid is computed in plain Python from (H, W), never from tensor values, so the op
traces to a size-specific graph without ``.item()``. cirtorch does the grid arithmetic
on float32 tensors, and rounding decides some region starts (at 2x32 the last 1-pixel
region starts at column 30 where exact arithmetic gives 31); ``_f32`` replays those
float32 steps so the regions are cirtorch's, not an idealised grid.
"""

from __future__ import annotations

import math
import struct

import torch
from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.schemas.rmac import RMACParams as RMACParams

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


def _l2n(v: Tensor, eps: float) -> Tensor:
    """cirtorch's L2N: divide by the channel L2 norm plus eps."""
    norm: Tensor = torch.linalg.vector_norm(v, dim=1, keepdim=True)
    return v / (norm + eps)


def rmac_pool(x: Tensor, params: RMACParams) -> Tensor:
    """R-MAC: normalised global MAC plus the sum of normalised region MACs (not renormalised).

    Args:
        x: activations, (N, C, H, W).
        params: the op's parameters.

    Returns:
        The descriptor, (N, C, 1, 1).
    """
    check_float(x, "rmac")
    params.output_shape(tuple(x.shape))
    h, w = int(x.shape[-2]), int(x.shape[-1])
    total = _l2n(x.amax(dim=(2, 3)), params.eps)
    for top, left, side in rmac_regions(h, w, params.levels):
        region = x[:, :, top : top + side, left : left + side]
        total = total + _l2n(region.amax(dim=(2, 3)), params.eps)
    return total[:, :, None, None]


class RMAC(nn.Module):
    """R-MAC pooling; no parameters."""

    def __init__(self, params: RMACParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return rmac_pool(x, self.params)
