"""Sliding-window max, average and min pooling.

These follow ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` exactly and add
what torch lacks:

- asymmetric padding ``(left, right, top, bottom)``, e.g. YOLOv3-tiny's stride-1 2x2
  max pool that pads one pixel on the right and bottom only;
- dilation for average pooling.

Symmetric padding without avg dilation goes straight to torch. The general path pads
explicitly (``-inf`` for max, zero for avg) and reproduces torch's divisor rules with
a count map, so both paths agree wherever both apply.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.params import WindowParams
from models.pooling.schemas.window import AvgParams as AvgParams
from models.pooling.schemas.window import MaxParams as MaxParams


def _trailing_pad(x: Tensor, p: WindowParams) -> tuple[int, int, int, int]:
    """Explicit (left, right, top, bottom) padding that lets a padding-free floor-mode pool
    produce the op's output size, including the overhang that ceil_mode adds at the end."""
    left, right, top, bottom = p.padding
    oh, ow = p.output_hw(x.shape[-2], x.shape[-1])
    (kh, kw), (sh, sw), (dh, dw) = p.kernel_size, p.strides, p.dilation
    need_h = (oh - 1) * sh + dh * (kh - 1) + 1
    need_w = (ow - 1) * sw + dw * (kw - 1) + 1
    extra_h = max(0, need_h - (x.shape[-2] + top + bottom))
    extra_w = max(0, need_w - (x.shape[-1] + left + right))
    return left, right + extra_w, top, bottom + extra_h


def _unpad_indices(idx: Tensor, pads: tuple[int, int, int, int], w: int, wp: int) -> Tensor:
    """Map flat indices into the padded plane back to flat indices into the input plane."""
    left, _, top, _ = pads
    row, col = idx // wp, idx % wp
    return (row - top) * w + (col - left)


def max_pool(x: Tensor, p: MaxParams) -> Tensor | tuple[Tensor, Tensor]:
    """Max pooling; with ``return_indices`` also the flat per-plane argmax, as torch returns."""
    p.output_shape(tuple(x.shape))
    if p.symmetric:
        left, _, top, _ = p.padding
        args = (p.kernel_size, p.strides, (top, left), p.dilation, p.ceil_mode)
        if p.return_indices:
            return F.max_pool2d(x, *args, return_indices=True)
        return F.max_pool2d(x, *args)
    oh, ow = p.output_hw(x.shape[-2], x.shape[-1])
    pads = _trailing_pad(x, p)
    xp = F.pad(x, pads, value=float("-inf"))
    out, idx = F.max_pool2d(xp, p.kernel_size, p.strides, 0, p.dilation, False, True)
    out, idx = out[..., :oh, :ow], idx[..., :oh, :ow]
    if not p.return_indices:
        return out
    return out, _unpad_indices(idx, pads, x.shape[-1], xp.shape[-1])


def min_pool(x: Tensor, p: MaxParams) -> Tensor | tuple[Tensor, Tensor]:
    """Min pooling, defined as ``-max_pool(-x)`` (d2l's exercise)."""
    result = max_pool(-x, p)
    if isinstance(result, tuple):
        return -result[0], result[1]
    return -result


def _window_sum(x: Tensor, p: WindowParams) -> Tensor:
    """Sum over each (dilated) window of an already padded input, as a depthwise convolution."""
    n, c, h, w = x.shape
    ones = x.new_ones(1, 1, *p.kernel_size)
    out = F.conv2d(x.reshape(n * c, 1, h, w), ones, stride=p.strides, dilation=p.dilation)
    return out.reshape(n, c, *out.shape[-2:])


def avg_pool(x: Tensor, p: AvgParams) -> Tensor:
    """Average pooling with torch's count_include_pad, ceil_mode and divisor_override rules."""
    check_float(x, "avg")
    p.output_shape(tuple(x.shape))
    if p.symmetric and p.dilation == (1, 1):
        left, _, top, _ = p.padding
        return F.avg_pool2d(
            x,
            p.kernel_size,
            p.strides,
            (top, left),
            p.ceil_mode,
            p.count_include_pad,
            p.divisor_override,
        )
    oh, ow = p.output_hw(x.shape[-2], x.shape[-1])
    pads = _trailing_pad(x, p)
    sums = _window_sum(F.pad(x, pads), p)[..., :oh, :ow]
    if p.divisor_override is not None:
        return sums / p.divisor_override
    return sums / _window_count(x, p, pads)[..., :oh, :ow]


def _window_count(x: Tensor, p: AvgParams, pads: tuple[int, int, int, int]) -> Tensor:
    """How many positions each window divides by: the real input, plus the declared padding
    when count_include_pad (never the ceil_mode overhang, as in torch)."""
    h, w = x.shape[-2:]
    mask = x.new_ones(1, 1, h, w)
    if p.count_include_pad:
        mask = F.pad(mask, p.padding, value=1.0)
        declared = p.padding
        pads = (0, pads[1] - declared[1], 0, pads[3] - declared[3])
    return _window_sum(F.pad(mask, pads), p)


class MaxPool(nn.Module):
    def __init__(self, params: MaxParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return max_pool(x, self.params)


class MinPool(MaxPool):
    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return min_pool(x, self.params)


class AvgPool(nn.Module):
    def __init__(self, params: AvgParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool(x, self.params)
