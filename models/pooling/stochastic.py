"""Stochastic pooling (Zeiler & Fergus, "Stochastic Pooling for Regularization of Deep
Convolutional Neural Networks", ICLR 2013).

A window's activations ``a_i`` define probabilities ``p_i = a_i / sum_j a_j``. Two modes:

- ``"expectation"`` (the paper's test-time rule, the default): ``sum_i p_i a_i``, which is
  ``sum a_i**2 / sum a_i``.
- ``"sample"`` (the training-time rule): one activation per window, drawn with probability
  ``p_i`` from a ``torch.Generator`` seeded with ``seed`` on every call, so the same seed and
  input give the same output on the same device (CPU and CUDA draw different streams).

Decisions:

- The method assumes non-negative (post-ReLU) input, so negative values are clamped to 0 first:
  a negative activation has probability 0 and is never output.
- A window with no positive value (all zero, or all negative) outputs 0 in both modes.
- Padding (declared, or the ceil_mode overhang) is zeros: probability 0, so it never changes a
  result. Dilation is allowed.
- 16-bit inputs are computed in float32 (``a**2`` overflows float16 above 256) and cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.columns import ceil_overhang, window_columns
from models.pooling.params import WindowParams
from models.pooling.schemas.stochastic import StochasticParams as StochasticParams
from models.pooling.schemas.window import AvgParams
from models.pooling.window import avg_pool


def _working(x: Tensor) -> Tensor:
    """ReLU'd input, in float32 when ``x`` is a 16-bit float."""
    a = x.clamp_min(0)
    return a.float() if a.element_size() < 4 else a


def _expectation(a: Tensor, p: StochasticParams) -> Tensor:
    # Same window, same divisor: avg(a**2) / avg(a) == sum(a**2) / sum(a).
    window = AvgParams(**p.model_dump(include=set(WindowParams.model_fields)))
    num, den = avg_pool(a * a, window), avg_pool(a, window)
    return torch.where(den > 0, num / den, 0.0)


def _sample(a: Tensor, p: StochasticParams) -> Tensor:
    n, c, oh, ow = p.output_shape(tuple(a.shape))
    overhang = ceil_overhang(a.shape[-2], a.shape[-1], p)
    cols = window_columns(F.pad(a, p.padding), p, overhang, 0.0)
    gen = torch.Generator(device=a.device).manual_seed(p.seed)
    u = torch.rand(cols.shape, generator=gen, device=a.device, dtype=cols.dtype)
    # Gumbel-max: argmax(log a_i + Gumbel noise) is an exact draw with p_i = a_i / sum a.
    # log 0 = -inf, so zeros are never drawn (an all-zero window picks a zero).
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
    pick = (cols.log() + gumbel).argmax(dim=2, keepdim=True)
    return cols.gather(2, pick).reshape(n, c, oh, ow)


def stochastic_pool(x: Tensor, p: StochasticParams) -> Tensor:
    """Stochastic pooling of ``relu(x)``: the expectation, or one seeded draw per window."""
    check_float(x, "stochastic")
    p.output_shape(tuple(x.shape))
    a = _working(x)
    out = _expectation(a, p) if p.mode == "expectation" else _sample(a, p)
    return out.to(x.dtype)


class StochasticPool(nn.Module):
    def __init__(self, params: StochasticParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return stochastic_pool(x, self.params)
