"""Adaptive, global and avg+max pooling.

Adaptive pooling asks for an output size instead of a window. Output cell ``i`` of an
axis of length ``size`` pooled to ``out`` cells covers the input range
``[floor(i * size / out), ceil((i + 1) * size / out))``, torch's bins. Neighbouring bins
overlap when ``out`` does not divide ``size``, and when ``out > size`` every bin is one or
two input cells wide.

The bins are computed here in plain Python ints and applied with one gather
(``index_select``), never through ``F.adaptive_*_pool2d``: standard ONNX export fails on
non-divisible adaptive max pooling and silently breaks adaptive average pooling under
dynamic H/W, and the same ``adaptive_bins`` arithmetic can be lowered to ONNX slices.

Global pooling (SPoC = mean, MAC = max) reduces over (H, W) with ``mean``/``amax``, which
export with dynamic shapes; it never builds a kernel from ``x.size()``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.schemas.adaptive import AdaptiveMaxParams as AdaptiveMaxParams
from models.pooling.schemas.adaptive import AdaptiveParams as AdaptiveParams
from models.pooling.schemas.adaptive import AvgMaxCatParams as AvgMaxCatParams
from models.pooling.schemas.adaptive import AvgMaxParams as AvgMaxParams
from models.pooling.schemas.adaptive import GlobalParams as GlobalParams


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive bins along one axis: ``[(start, end), ...]``, end exclusive.

    Args:
        size: input length (> 0).
        out: number of output cells (> 0); may exceed ``size``.

    Returns:
        ``out`` half-open ranges ``[floor(i*size/out), ceil((i+1)*size/out))``.
    """
    return [((i * size) // out, -(-(i + 1) * size // out)) for i in range(out)]


def _axis_windows(size: int, out: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-bin input positions padded to the widest bin: (out, L) indices and a validity mask.

    Short bins repeat their last position, so a max or argmax over the padded row gives the
    same answer as over the bin; the mask removes the repeats from sums and counts.
    """
    bins = adaptive_bins(size, out)
    width = max(end - start for start, end in bins)
    starts = torch.tensor([s for s, _ in bins], device=device)[:, None]
    ends = torch.tensor([e for _, e in bins], device=device)[:, None]
    pos = starts + torch.arange(width, device=device)
    return torch.minimum(pos, ends - 1), pos < ends


def _windows(x: Tensor, oh: int, ow: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every output cell's window, gathered in row-major order.

    Returns:
        values (N, C, oh, ow, K), flat per-plane input indices (oh, ow, K) and their mask.
    """
    n, c, h, w = x.shape
    rows, row_ok = _axis_windows(h, oh, x.device)
    cols, col_ok = _axis_windows(w, ow, x.device)
    flat = rows[:, None, :, None] * w + cols[None, :, None, :]  # (oh, ow, Lh, Lw)
    valid = row_ok[:, None, :, None] & col_ok[None, :, None, :]
    flat, valid = flat.reshape(oh, ow, -1), valid.reshape(oh, ow, -1)
    values = x.reshape(n, c, h * w).index_select(2, flat.reshape(-1))
    return values.reshape(n, c, oh, ow, -1), flat, valid


def adaptive_pool(x: Tensor, size: tuple[int, int], mode: Literal["avg", "max"]) -> Tensor:
    """Adaptive mean or max of an already validated NCHW input to an (oh, ow) grid.

    The building block that ``avgmax_*`` and ``spp`` share; a 1 x 1 grid is a plain
    reduction over (H, W).
    """
    if size == (1, 1):
        return x.mean((2, 3), keepdim=True) if mode == "avg" else x.amax((2, 3), keepdim=True)
    values, _, valid = _windows(x, *size)
    if mode == "max":
        return values.amax(-1)
    total = values.masked_fill(~valid, 0).sum(-1)
    return total / valid.sum(-1).to(x.dtype)


def _argmax_like_torch(values: Tensor) -> Tensor:
    """Position of the max along the last dim with torch's adaptive-max rule: the first max,
    except that a NaN wins and the last NaN is kept (its kernel tests ``val > max || isnan``)."""
    first_max = values.argmax(-1)
    is_nan = values.isnan()
    last_nan = values.shape[-1] - 1 - is_nan.flip(-1).to(torch.uint8).argmax(-1)
    return torch.where(is_nan.any(-1), last_nan, first_max)


def _adaptive_max_with_indices(x: Tensor, oh: int, ow: int) -> tuple[Tensor, Tensor]:
    values, flat, _ = _windows(x, oh, ow)
    pos = _argmax_like_torch(values)
    table = flat.expand(*values.shape)
    return values.gather(-1, pos[..., None])[..., 0], table.gather(-1, pos[..., None])[..., 0]


def adaptive_avg_pool(x: Tensor, p: AdaptiveParams) -> Tensor:
    """Adaptive average pooling with torch's bins (``F.adaptive_avg_pool2d``)."""
    check_float(x, "adaptive_avg")
    _, _, oh, ow = p.output_shape(tuple(x.shape))
    return adaptive_pool(x, (oh, ow), "avg")


def adaptive_max_pool(x: Tensor, p: AdaptiveMaxParams) -> Tensor | tuple[Tensor, Tensor]:
    """Adaptive max pooling with torch's bins; with ``return_indices`` also the flat
    per-plane argmax (``row * W + col``), as ``F.adaptive_max_pool2d`` returns."""
    check_float(x, "adaptive_max")
    _, _, oh, ow = p.output_shape(tuple(x.shape))
    if p.return_indices:
        return _adaptive_max_with_indices(x, oh, ow)
    return adaptive_pool(x, (oh, ow), "max")


def global_avg_pool(x: Tensor, p: GlobalParams) -> Tensor:
    """Global average pooling (SPoC): the mean over (H, W), shaped (N, C, 1, 1)."""
    check_float(x, "global_avg")
    p.output_shape(tuple(x.shape))
    return x.mean((2, 3), keepdim=True)


def global_max_pool(x: Tensor, p: GlobalParams) -> Tensor:
    """Global max pooling (MAC): the max over (H, W), shaped (N, C, 1, 1)."""
    check_float(x, "global_max")
    p.output_shape(tuple(x.shape))
    return x.amax((2, 3), keepdim=True)


def avgmax_add_pool(x: Tensor, p: AvgMaxParams) -> Tensor:
    """``0.5 * (adaptive_avg + adaptive_max)`` (timm's ``adaptive_avgmax_pool2d``)."""
    check_float(x, "avgmax_add")
    _, _, oh, ow = p.output_shape(tuple(x.shape))
    return 0.5 * (adaptive_pool(x, (oh, ow), "avg") + adaptive_pool(x, (oh, ow), "max"))


def avgmax_cat_pool(x: Tensor, p: AvgMaxCatParams) -> Tensor:
    """Channel concatenation ``[adaptive_avg, adaptive_max]``: avg channels first, then max
    (timm's ``adaptive_catavgmax_pool2d``); the output has 2C channels."""
    check_float(x, "avgmax_cat")
    _, _, oh, ow = p.output_shape(tuple(x.shape))
    return torch.cat([adaptive_pool(x, (oh, ow), "avg"), adaptive_pool(x, (oh, ow), "max")], 1)


class AdaptiveAvgPool(nn.Module):
    def __init__(self, params: AdaptiveParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return adaptive_avg_pool(x, self.params)


class AdaptiveMaxPool(nn.Module):
    def __init__(self, params: AdaptiveMaxParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return adaptive_max_pool(x, self.params)


class GlobalAvgPool(nn.Module):
    def __init__(self, params: GlobalParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return global_avg_pool(x, self.params)


class GlobalMaxPool(GlobalAvgPool):
    def forward(self, x: Tensor) -> Tensor:
        return global_max_pool(x, self.params)


class AvgMaxAddPool(nn.Module):
    def __init__(self, params: AvgMaxParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return avgmax_add_pool(x, self.params)


class AvgMaxCatPool(nn.Module):
    def __init__(self, params: AvgMaxCatParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return avgmax_cat_pool(x, self.params)
