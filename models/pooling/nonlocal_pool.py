"""Non-local MLP pooling, as in PyPI ``nonlocalpooling==2.0.1`` (``NonLocalPool2d``).

Two branches halve the resolution and are blended by a learnable scalar alpha:

- global: a patch embedding (conv, kernel = stride = patch), MLP-Mixer token mixing
  (LayerNorm, Linear, Tanh, Linear over the token axis), then channel mixing
  (LayerNorm, Linear over channels); with ``squeeze`` the patches are twice as large and
  a PixelShuffle(2) restores the grid;
- local: a 1x1 conv followed by a 3x3 stride-2 max pool (padding 1).

``y = BatchNorm(alpha * global + (1 - alpha) * local)``. The token-mixing layers have
one weight per token, so the input size is fixed when the layer is built.

Our module keeps the reference's state_dict keys, so its weights load directly, but
needs no einops: the computation lives in the functional form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.pooling.checks import check_float
from models.pooling.errors import PoolInputError
from models.pooling.schemas.nonlocal_pool import NonLocalParams as NonLocalParams

# The reference's fixed hyper-parameters (torch defaults for its norms).
_LN_EPS = 1e-5
_BN_EPS = 1e-5
_BN_MOMENTUM = 0.1
_ALPHA_INIT = 0.1


def _check_weights(x: Tensor, weights: Mapping[str, Tensor], p: NonLocalParams) -> None:
    """Every weight present with its shape, and the input on the weights' dtype and device."""
    for key, shape in p.weight_shapes().items():
        if key not in weights:
            raise PoolInputError(f"nonlocal: weight {key!r} is missing")
        if tuple(weights[key].shape) != shape:
            raise PoolInputError(
                f"nonlocal: weight {key!r} must be {shape}, got {tuple(weights[key].shape)}"
            )
    ref = weights["embedding.weight"]
    if (x.dtype, x.device) != (ref.dtype, ref.device):
        raise PoolInputError(
            f"nonlocal: the input is {x.dtype} on {x.device} but the weights are "
            f"{ref.dtype} on {ref.device}; move or cast one to match"
        )


def _global_branch(x: Tensor, w: Mapping[str, Tensor], p: NonLocalParams) -> Tensor:
    """Patch embedding, token mixing, channel mixing; (N, out, H/2, W/2)."""
    tokens = F.conv2d(x, w["embedding.weight"], w["embedding.bias"], stride=p.patch_size)
    n_tok = p.grid[0] * p.grid[1]
    t = tokens.flatten(2)  # (N, token_dim, tokens): mix along the token axis
    t = F.layer_norm(t, (n_tok,), w["token_mix.1.weight"], w["token_mix.1.bias"], _LN_EPS)
    t = torch.tanh(F.linear(t, w["token_mix.2.weight"], w["token_mix.2.bias"]))
    t = F.linear(t, w["token_mix.4.weight"], w["token_mix.4.bias"])
    c = t.transpose(1, 2)  # (N, tokens, token_dim): mix along the channel axis
    c = F.layer_norm(c, (p.token_dim,), w["channel_mix.1.weight"], w["channel_mix.1.bias"], _LN_EPS)
    c = F.linear(c, w["channel_mix.2.weight"], w["channel_mix.2.bias"])
    grid = c.transpose(1, 2).reshape(-1, p.mix_out, *p.grid)
    return F.pixel_shuffle(grid, 2) if p.squeeze else grid


def nonlocal_pool(
    x: Tensor, weights: Mapping[str, Tensor], params: NonLocalParams, training: bool = False
) -> Tensor:
    """Non-local pooling of an NCHW map of the layer's fixed size.

    Args:
        x: input, shape (N, in_channels, H, W) with (H, W) = ``params.in_size``.
        weights: the weights under the reference's state_dict keys (``params.weight_shapes()``).
        params: the layer's parameters.
        training: batch statistics for the BatchNorm (updating ``norm.running_*`` in place,
            as torch does) instead of the running ones.

    Returns:
        Shape (N, out_channels, H / 2, W / 2).
    """
    check_float(x, "nonlocal")
    n, _, oh, ow = params.output_shape(tuple(x.shape))
    _check_weights(x, weights, params)
    if training and n * oh * ow == 1:
        raise PoolInputError(
            "nonlocal: training-mode BatchNorm needs more than one value per channel; use a "
            "batch of 2 or more, or eval mode"
        )
    local = F.conv2d(x, weights["point_wise.weight"], weights["point_wise.bias"])
    local = F.max_pool2d(local, kernel_size=3, stride=2, padding=1)
    alpha = weights["alpha"]
    mixed = alpha * _global_branch(x, weights, params) + (1 - alpha) * local
    return F.batch_norm(
        mixed,
        weights["norm.running_mean"],
        weights["norm.running_var"],
        weights["norm.weight"],
        weights["norm.bias"],
        training,
        _BN_MOMENTUM,
        _BN_EPS,
    )


def _keyed_sequential(length: int, layers: dict[int, nn.Module]) -> nn.Sequential:
    """A Sequential with ``layers`` at the given indices and Identity elsewhere.

    The reference's parameter-free steps (einops rearranges, Tanh) sit at the other
    indices; keeping the same indices keeps the state_dict keys identical.
    """
    return nn.Sequential(*(layers.get(i, nn.Identity()) for i in range(length)))


class NonLocalPool(nn.Module):
    """Non-local pooling holding its weights under ``NonLocalPool2d``'s keys.

    The submodules only hold the weights; :func:`nonlocal_pool` computes. Fresh weights
    follow torch's default init (as the reference gets) drawn from a generator seeded with
    ``params.seed``; alpha starts at 0.1.
    """

    def __init__(self, params: NonLocalParams) -> None:
        super().__init__()
        self.params = params
        c, o, t, p = params.in_channels, params.out, params.token_dim, params.patch_size
        n_tok = params.grid[0] * params.grid[1]
        # Built on the meta device so construction draws nothing from the global RNG.
        with torch.device("meta"):
            self.alpha = nn.Parameter(torch.empty(1))
            self.embedding = nn.Conv2d(c, t, p, stride=p)
            self.token_mix = _keyed_sequential(
                6, {1: nn.LayerNorm(n_tok), 2: nn.Linear(n_tok, n_tok), 4: nn.Linear(n_tok, n_tok)}
            )
            self.point_wise = nn.Conv2d(c, o, 1)
            self.norm = nn.BatchNorm2d(o)
            self.channel_mix = _keyed_sequential(
                4, {1: nn.LayerNorm(t), 2: nn.Linear(t, params.mix_out)}
            )
        self.to_empty(device="cpu")
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Seeded fresh weights: convs and linears U(+-1/sqrt(fan_in)), norms at identity."""
        gen = torch.Generator().manual_seed(self.params.seed)
        for layer in self.modules():  # registration order, so the draws are reproducible
            if isinstance(layer, nn.Conv2d | nn.Linear):
                bound = 1.0 / math.sqrt(layer.weight[0].numel())  # 1 / sqrt(fan_in)
                layer.weight.uniform_(-bound, bound, generator=gen)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=gen)
            elif isinstance(layer, nn.LayerNorm | nn.BatchNorm2d):
                layer.reset_parameters()  # ones, zeros and fresh running stats: no randomness
        self.alpha.fill_(_ALPHA_INIT)

    def forward(self, x: Tensor) -> Tensor:
        weights = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        out = nonlocal_pool(x, weights, self.params, training=self.training)
        if self.training and self.norm.num_batches_tracked is not None:
            self.norm.num_batches_tracked.add_(1)  # as BatchNorm2d does in training
        return out
