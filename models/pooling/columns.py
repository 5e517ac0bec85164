"""Every window of a sliding-window op as a column, for ops that need all of a window's values.

Shared by ``median``, ``stochastic`` and ``softpool``: ``F.unfold`` exports with both torch
exporters, where per-window reductions such as ``aten.median`` have no ONNX lowering.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from models.pooling.params import WindowParams


def ceil_overhang(h: int, w: int, p: WindowParams) -> tuple[int, int]:
    """Rows and columns that ceil_mode windows reach past the padded input (0 in floor mode)."""
    left, right, top, bottom = p.padding
    oh, ow = p.output_hw(h, w)
    (kh, kw), (sh, sw), (dh, dw) = p.kernel_size, p.strides, p.dilation
    need_h = (oh - 1) * sh + dh * (kh - 1) + 1
    need_w = (ow - 1) * sw + dw * (kw - 1) + 1
    return max(0, need_h - (h + top + bottom)), max(0, need_w - (w + left + right))


def window_columns(xp: Tensor, p: WindowParams, overhang: tuple[int, int], fill: float) -> Tensor:
    """Every window of an already padded input as a column.

    Args:
        xp: the input with ``p.padding`` already applied, (N, C, H', W').
        p: the window; its padding is ignored here.
        overhang: extra (rows, cols) appended at the bottom and right, from ``ceil_overhang``.
        fill: the value of the overhang.

    Returns:
        (N, C, kh * kw, oh * ow): window positions along dim 2, windows in row-major order.
    """
    n, c = xp.shape[:2]
    xp = F.pad(xp, (0, overhang[1], 0, overhang[0]), value=fill)
    planes = xp.reshape(n * c, 1, xp.shape[2], xp.shape[3])
    cols = F.unfold(planes, p.kernel_size, dilation=p.dilation, stride=p.strides)
    return cols.reshape(n, c, cols.shape[1], cols.shape[2])
