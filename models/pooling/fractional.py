"""Fractional max pooling (Graham, "Fractional Max-Pooling", 2014), as torch runs it.

The output size may be any size up to ``input - kernel + 1``, so the reduction factor can
be fractional. Window starts along an axis follow Graham's pseudo-random sequence with
torch's arithmetic: for one sample ``u`` in [0, 1) per plane and axis,
``alpha = (in - k) / (out - 1)`` and ``start_i = int((i + u) * alpha) - int(u * alpha)``
for ``i < out - 1``; the last window always ends at the input's edge
(``start = in - k``, which is also the only start when ``out == 1``). Each output is the
maximum over its ``k`` x ``k`` window.

The samples are an (N, C, 2) tensor like torch's ``_random_samples``: entry 0 drives the
width, entry 1 the height. Give them explicitly (the functional ``samples`` argument),
or give a ``seed`` (drawn from a fresh ``torch.Generator``, so every call pools the same
way), or neither (drawn from torch's global RNG, a new pooling each call).

This is our own gather-and-max implementation, so unlike ``F.fractional_max_pool2d`` it
exports to ONNX.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.pooling.checks import check_float, is_tracing
from models.pooling.errors import PoolInputError
from models.pooling.schemas.fractional import FractionalMaxParams as FractionalMaxParams


def _samples(x: Tensor, params: FractionalMaxParams, samples: Tensor | None) -> Tensor:
    """The (N, C, 2) samples in [0, 1): given, seeded, or from the global RNG."""
    n, c = x.shape[0], x.shape[1]
    if samples is None:
        if params.seed is None:
            return torch.rand(n, c, 2, dtype=x.dtype, device=x.device)
        generator = torch.Generator().manual_seed(params.seed)
        return torch.rand(n, c, 2, generator=generator, dtype=x.dtype).to(x.device)
    if tuple(samples.shape) != (n, c, 2) or not samples.is_floating_point():
        raise PoolInputError(
            f"fractional_max: samples must be a floating tensor of shape ({n}, {c}, 2), "
            f"got {samples.dtype} {tuple(samples.shape)}"
        )
    # The negation also catches NaN.
    if not is_tracing() and bool((~((samples >= 0) & (samples < 1))).any()):
        raise PoolInputError("fractional_max: samples must lie in [0, 1)")
    return samples.to(x.device)


def _interval_starts(u: Tensor, size: int, count: int, kernel: int) -> Tensor:
    """Window starts (N, C, count) along one axis of length ``size``, per plane sample u.

    The clamp changes nothing for u in [0, 1); it keeps a traced graph in bounds.
    """
    last = torch.full((*u.shape, 1), size - kernel, dtype=torch.int64, device=u.device)
    if count == 1:
        return last
    alpha = torch.tensor(size - kernel, dtype=u.dtype, device=u.device) / (count - 1)
    steps = torch.arange(count - 1, dtype=u.dtype, device=u.device)
    u = u[..., None]
    starts = ((steps + u) * alpha).trunc().long() - (u * alpha).trunc().long()
    return torch.cat([starts, last], dim=-1).clamp(0, size - kernel)


def _window_index(rows: Tensor, cols: Tensor, kernel: tuple[int, int], width: int) -> Tensor:
    """Flat per-plane index of every window element, (N, C, oh, ow, kh * kw), row-major."""
    kh, kw = kernel
    r = rows[..., None] + torch.arange(kh, device=rows.device)  # (N, C, oh, kh)
    c = cols[..., None] + torch.arange(kw, device=cols.device)  # (N, C, ow, kw)
    index = r[:, :, :, None, :, None] * width + c[:, :, None, :, None, :]
    return index.flatten(-2)


def _window_argmax(values: Tensor) -> Tensor:
    """Position of each window's maximum by torch's rule: the first of equal maxima wins,
    and NaN beats every number, the last NaN winning (torch's loop keeps overwriting)."""
    first_max = values.argmax(dim=-1)
    nan = values.isnan()
    last_nan = (values.shape[-1] - 1) - nan.flip(-1).to(torch.int32).argmax(dim=-1)
    return torch.where(nan.any(dim=-1), last_nan, first_max)


def fractional_max_pool(
    x: Tensor, params: FractionalMaxParams, samples: Tensor | None = None
) -> Tensor | tuple[Tensor, Tensor]:
    """Fractional max pooling; with ``return_indices`` also the flat per-plane argmax.

    Args:
        x: input, (N, C, H, W).
        params: the op's parameters.
        samples: (N, C, 2) pseudo-random samples in [0, 1), torch's ``_random_samples``
            (entry 0 for the width, 1 for the height); overrides ``params.seed``.

    Returns:
        The pooled map (N, C, oh, ow), and with ``return_indices`` the int64 indices.
    """
    check_float(x, "fractional_max")
    _, _, oh, ow = params.output_shape(tuple(x.shape))
    h, w = x.shape[-2], x.shape[-1]
    # Interval arithmetic in the input's precision, at least float32 (torch's CUDA rule).
    u = _samples(x, params, samples).to(torch.promote_types(x.dtype, torch.float32))
    rows = _interval_starts(u[..., 1], h, oh, params.kernel_size[0])
    cols = _interval_starts(u[..., 0], w, ow, params.kernel_size[1])
    index = _window_index(rows, cols, params.kernel_size, w)
    values = x.flatten(2).gather(2, index.flatten(2)).reshape(index.shape)
    best = _window_argmax(values)[..., None]
    out = values.gather(-1, best).squeeze(-1)
    if not params.return_indices:
        return out
    return out, index.gather(-1, best).squeeze(-1)


class FractionalMaxPool(nn.Module):
    """Fractional max pooling; no parameters. Samples come from ``params.seed`` or the RNG."""

    def __init__(self, params: FractionalMaxParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return fractional_max_pool(x, self.params)
