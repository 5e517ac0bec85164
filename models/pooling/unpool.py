"""Max unpooling: the partial inverse of max pooling (torch ``MaxUnpool2d``).

Every value of x is written to the position its index names in a zero-filled output
plane; everything else stays 0. Indices are flat per plane (``row * out_w + col``), as
``max_pool(..., return_indices=True)`` returns them, and the parameters are those of the
pool being inverted. Padding takes the library's (left, right, top, bottom) form, so the
inverse of an asymmetric pool (YOLOv3-tiny's) gets its size back too.

torch only notices a bad index inside its kernel (a RuntimeError on CPU, a device-side
assert on CUDA); here, in eager mode, any index outside the output plane is a
``PoolInputError`` raised before anything is written. That check needs the index values, so
it is skipped while tracing for export (the exported Scatter checks bounds itself). Two
entries naming one position (overlapping pool windows) carry the same value when the
indices come from a max pool; otherwise which one lands is unspecified, as in torch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.pooling.checks import check_float, is_tracing
from models.pooling.errors import PoolInputError
from models.pooling.schemas.unpool import MaxUnpoolParams as MaxUnpoolParams


def _check_index_range(flat: Tensor, plane: int, hw: tuple[int, ...]) -> None:
    if flat.numel() and bool(((flat < 0) | (flat >= plane)).any()):
        raise PoolInputError(
            f"max_unpool: indices must lie in [0, {plane}) for a {hw[0]}x{hw[1]} output, got "
            f"values from {int(flat.min())} to {int(flat.max())}; pass the indices of a max "
            "pool with the same kernel, stride and padding (and its input size as output_size)"
        )


def max_unpool(x: Tensor, indices: Tensor, params: MaxUnpoolParams) -> Tensor:
    """Scatter x's values to the flat per-plane positions in ``indices``; zeros elsewhere.

    Args:
        x: pooled values, (N, C, H, W).
        indices: int64 flat per-plane positions, the shape of x.
        params: the op's parameters.

    Returns:
        (N, C, out_h, out_w).
    """
    check_float(x, "max_unpool")
    if indices.dtype != torch.int64 or indices.device != x.device:
        raise PoolInputError(
            f"max_unpool: indices must be int64 on x's device ({x.device}), got "
            f"{indices.dtype} on {indices.device}"
        )
    n, c, oh, ow = params.output_shape(tuple(x.shape), tuple(indices.shape))
    flat = indices.flatten(2)
    if not is_tracing():
        _check_index_range(flat, oh * ow, (oh, ow))
    out = x.new_zeros(n, c, oh * ow).scatter(2, flat, x.flatten(2))
    return out.reshape(n, c, oh, ow)


class MaxUnpool(nn.Module):
    """Max unpooling; takes (x, indices); no parameters."""

    def __init__(self, params: MaxUnpoolParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor, indices: Tensor) -> Tensor:
        return max_unpool(x, indices, self.params)
