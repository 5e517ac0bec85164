"""Power-average (Lp) pooling, exactly ``torch.nn.LPPool2d`` / ``F.lp_pool2d``.

Each output is ``(sum over the window of x ** p) ** (1 / p)``: ``p = 1`` is sum pooling,
``p = 2`` the L2 norm of the window, and ``p = inf`` the max of ``|x|`` (torch's rule).
torch's quirks are kept, so an exported graph and the eager op agree:

- no padding and no dilation (torch's op has neither);
- a ``ceil_mode`` window that hangs past the input is scaled up as if full: torch averages
  ``x ** p`` over the covered positions and multiplies by the full window area;
- a negative input under a non-integer ``p`` gives NaN, as ``pow`` does.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.schemas.lp import LpParams as LpParams


def lp_pool(x: Tensor, p: LpParams) -> Tensor:
    """Power-average pooling with torch's semantics (see the module docstring)."""
    check_float(x, "lp")
    p.output_shape(tuple(x.shape))
    return F.lp_pool2d(x, p.norm_type, p.kernel_size, p.strides, p.ceil_mode)


class LpPool(nn.Module):
    def __init__(self, params: LpParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return lp_pool(x, self.params)
