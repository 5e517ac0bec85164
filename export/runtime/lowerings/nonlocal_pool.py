"""nonlocal (``models.pooling.nonlocal_pool``): non-local MLP pooling in eval mode.

The graph follows the library's functional form, weights as initializers under the
reference's ``state_dict()`` keys:

- global: patch-embedding Conv (kernel = stride = patch), token mixing over the token axis
  (LayerNormalization, MatMul + bias, Tanh, MatMul + bias), channel mixing (LayerNorm,
  MatMul + bias), back to the token grid; with ``squeeze`` DepthToSpace in CRD mode, which
  is torch's PixelShuffle;
- local: 1x1 Conv, MaxPool 3x3 stride 2 padding 1;
- ``BatchNormalization(alpha * global + (1 - alpha) * local)`` with the running statistics
  (inference mode; training-mode batch statistics are not exported).

The token-mixing weights are per token, so the input's C, H and W are fixed by the params.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import const_i64, scalar_like
from models.pooling.schemas.nonlocal_pool import NonLocalParams

_EPS = 1e-5  # the reference's LayerNorm and BatchNorm eps (torch defaults)
Weights = Mapping[str, ir.Value]


def _linear(op: Ops, t: ir.Value, w: Weights, name: str) -> ir.Value:
    """``F.linear`` over the last axis: t @ weight.T + bias."""
    weight_t = op.Transpose(w[f"{name}.weight"], perm=[1, 0])
    return op.Add(op.MatMul(t, weight_t), w[f"{name}.bias"])


def _layer_norm(op: Ops, t: ir.Value, w: Weights, name: str) -> ir.Value:
    return op.LayerNormalization(t, w[f"{name}.weight"], w[f"{name}.bias"], axis=-1, epsilon=_EPS)


def _global_branch(op: Ops, p: NonLocalParams, x: ir.Value, w: Weights) -> ir.Value:
    patch = [p.patch_size, p.patch_size]
    tokens = op.Conv(
        x, w["embedding.weight"], w["embedding.bias"], kernel_shape=patch, strides=patch
    )
    t = op.Reshape(tokens, const_i64(op, [0, 0, -1]))  # (N, token_dim, tokens)
    t = op.Tanh(_linear(op, _layer_norm(op, t, w, "token_mix.1"), w, "token_mix.2"))
    t = _linear(op, t, w, "token_mix.4")
    c = op.Transpose(t, perm=[0, 2, 1])  # (N, tokens, token_dim)
    c = _linear(op, _layer_norm(op, c, w, "channel_mix.1"), w, "channel_mix.2")
    grid = op.Reshape(op.Transpose(c, perm=[0, 2, 1]), const_i64(op, [0, p.mix_out, *p.grid]))
    return op.DepthToSpace(grid, blocksize=2, mode="CRD") if p.squeeze else grid


def nonlocal_decomposed(op: Ops, p: NonLocalParams, x: ir.Value, *, weights: Weights) -> Outputs:
    local = op.Conv(x, weights["point_wise.weight"], weights["point_wise.bias"])
    local = op.MaxPool(local, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    alpha = weights["alpha"]
    one_minus = op.Sub(scalar_like(op, 1.0, x), alpha)
    mixed = op.Add(op.Mul(alpha, _global_branch(op, p, x, weights)), op.Mul(one_minus, local))
    norm = [weights[f"norm.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    return op.BatchNormalization(mixed, *norm, epsilon=_EPS)


def _weight_shapes(p: Any) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = p.weight_shapes()
    return shapes


def _input_size(p: Any) -> dict[str, int]:
    return {"C": p.in_channels, "H": p.in_size[0], "W": p.in_size[1]}


register_lowering(
    Lowering(
        "nonlocal",
        "decomposition",
        nonlocal_decomposed,
        dtypes=frozenset({"float32"}),
        weight_shapes=_weight_shapes,
        unused_weights=frozenset({"norm.num_batches_tracked"}),
        fixed_dims=_input_size,
        note="Conv, LayerNormalization, MatMul, Tanh, DepthToSpace, MaxPool, "
        "BatchNormalization (eval); weights as initializers",
    )
)
