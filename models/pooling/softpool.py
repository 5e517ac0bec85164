"""SoftPool (Stergiou, Poppe, Kalliatakis, "Refining activation downsampling with SoftPool",
ICCV 2021).

Each window's output is its softmax-weighted sum, ``sum_i softmax(a)_i * a_i``: the largest
values dominate, but every value contributes. Decisions:

- Numerically stable: the softmax is taken per window (``torch.softmax`` shifts by the window
  max), so inputs of magnitude 1000 give exact, finite results. The paper's form
  ``avg(x * exp(x)) / avg(exp(x))`` overflows float32 once x passes about 88.
- Padding (declared, or the ceil_mode overhang) takes no part: its weight is 0, as ``-inf``
  padding has no effect on max pooling.
- No dilation: a dilated window can miss the input entirely, leaving nothing to weight.
  Without it every window covers at least one input value.
- Non-finite input: a ``-inf`` value gets weight 0; ``+inf`` or NaN in a window gives NaN.

The windows are unfolded into columns, so memory grows with the window area.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.columns import ceil_overhang, window_columns
from models.pooling.schemas.softpool import SoftParams as SoftParams


def soft_pool(x: Tensor, p: SoftParams) -> Tensor:
    """Softmax-weighted sum of every window, stable for any finite input."""
    check_float(x, "softpool")
    n, c, oh, ow = p.output_shape(tuple(x.shape))
    overhang = ceil_overhang(x.shape[-2], x.shape[-1], p)
    # -inf padding has softmax weight 0.
    xp = F.pad(x, p.padding, value=float("-inf"))
    cols = window_columns(xp, p, overhang, float("-inf"))
    weights = torch.softmax(cols, dim=2)
    # Weight 0 times -inf would be NaN; those terms are 0.
    values = cols.masked_fill(cols.isneginf(), 0.0)
    return (weights * values).sum(dim=2).reshape(n, c, oh, ow)


class SoftPool(nn.Module):
    def __init__(self, params: SoftParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return soft_pool(x, self.params)
