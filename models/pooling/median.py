"""Sliding-window median pooling (a median filter when ``stride=1``).

Semantics:

- An even-sized window gives the *lower* median, ``sorted(window)[(n - 1) // 2]``, as
  ``torch.median`` does; a NaN anywhere in a window makes that output NaN, also as there.
- ``padding_mode`` says what the declared padding holds, and padded values take part in the
  median: ``"reflect"`` (the default, as in timm's and kornia's MedianPool2d), ``"replicate"``
  or ``"zeros"``. Reflect padding must be smaller than the input on each side.
- ``stride`` defaults to ``kernel_size``, as for every window op in this library; a denoising
  median filter wants ``stride=1`` and ``padding=kernel_size // 2``.
- A ``ceil_mode`` window that hangs past the padded input takes the median of the positions it
  does cover, just as max pooling ignores the overhang.

Windows become columns with ``F.unfold`` and are sorted: ``aten.median`` has no ONNX lowering,
while unfold + sort exports with both torch exporters. The column helpers live in
``models.pooling.columns``, shared with ``stochastic`` and ``softpool``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.columns import ceil_overhang, window_columns
from models.pooling.params import WindowParams
from models.pooling.schemas.median import MedianParams as MedianParams


def _pad(x: Tensor, p: MedianParams) -> Tensor:
    if p.padding == (0, 0, 0, 0):
        return x
    if p.padding_mode == "zeros":
        return F.pad(x, p.padding)
    return F.pad(x, p.padding, mode=p.padding_mode)


def _covered_counts(x: Tensor, p: WindowParams, overhang: tuple[int, int]) -> Tensor:
    """How many window positions fall inside the padded input, per window: (oh * ow,)."""
    left, right, top, bottom = p.padding
    h, w = x.shape[-2] + top + bottom, x.shape[-1] + left + right
    ones = torch.ones(1, 1, h, w, device=x.device)  # float32 counts stay exact
    return window_columns(ones, p, overhang, 0.0).sum(dim=2).reshape(-1).long()


def median_pool(x: Tensor, p: MedianParams) -> Tensor:
    """Lower median of every window, padded per ``p.padding_mode``."""
    check_float(x, "median")
    n, c, oh, ow = p.output_shape(tuple(x.shape))
    h, w = x.shape[-2], x.shape[-1]
    overhang = ceil_overhang(h, w, p)
    # +inf sorts after every real value, so the overhang never shifts a lower rank.
    cols = window_columns(_pad(x, p), p, overhang, float("inf"))
    ranked = cols.sort(dim=2).values
    if overhang == (0, 0):
        med = ranked[:, :, (ranked.shape[2] - 1) // 2]
    else:
        rank = (_covered_counts(x, p, overhang) - 1) // 2
        med = ranked.gather(2, rank.expand(n, c, 1, -1)).squeeze(2)
    med = med.masked_fill(cols.isnan().any(dim=2), float("nan"))
    return med.reshape(n, c, oh, ow)


class MedianPool(nn.Module):
    def __init__(self, params: MedianParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return median_pool(x, self.params)
