"""Regional maximum activation of convolutions, R-MAC (Tolias, Sicre and Jégou, ICLR 2016).

This is cirtorch's ``LF.rmac``: square regions on ``levels`` scales; at level ``l`` their
side is ``floor(2 * min(H, W) / (l + 1))`` and they sit on a uniform grid with ``l``
regions along the short side and ``l + extra`` along the long one, where ``extra`` is the
count (1..6) whose neighbouring regions overlap closest to 40 %. The descriptor is the
L2-normalised global MAC plus every L2-normalised region MAC, **without** a final
normalisation, exactly as cirtorch returns it (its network normalises afterwards).

The grid is computed in plain Python from (H, W), never from tensor values, so the op
traces to a size-specific graph without ``.item()``. It lives in the torch-free schema
module (``models.pooling.schemas.rmac``), where it replays cirtorch's float32 rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.schemas.rmac import RMACParams as RMACParams
from models.pooling.schemas.rmac import rmac_regions as rmac_regions


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
