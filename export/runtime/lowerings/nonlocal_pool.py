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

from collections.abc import Mapping, Sequence
from typing import Any

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import const_i64, scalar_like
from export.runtime.lowerings._cost import Shape
from models.pooling.schemas.nonlocal_pool import NonLocalParams

_EPS = 1e-5  # the reference's LayerNorm and BatchNorm eps (torch defaults)
Weights = Mapping[str, ir.Value]


def _linear(emit: Ops, t: ir.Value, w: Weights, name: str) -> ir.Value:
    """``F.linear`` over the last axis: t @ weight.T + bias."""
    weight_t = emit.Transpose(w[f"{name}.weight"], perm=[1, 0])
    return emit.Add(emit.MatMul(t, weight_t), w[f"{name}.bias"])


def _layer_norm(emit: Ops, t: ir.Value, w: Weights, name: str) -> ir.Value:
    return emit.LayerNormalization(t, w[f"{name}.weight"], w[f"{name}.bias"], axis=-1, epsilon=_EPS)


def _global_branch(emit: Ops, p: NonLocalParams, x: ir.Value, w: Weights) -> ir.Value:
    patch = [p.patch_size, p.patch_size]
    tokens = emit.Conv(
        x, w["embedding.weight"], w["embedding.bias"], kernel_shape=patch, strides=patch
    )
    t = emit.Reshape(tokens, const_i64(emit, [0, 0, -1]))  # (N, token_dim, tokens)
    t = emit.Tanh(_linear(emit, _layer_norm(emit, t, w, "token_mix.1"), w, "token_mix.2"))
    t = _linear(emit, t, w, "token_mix.4")
    c = emit.Transpose(t, perm=[0, 2, 1])  # (N, tokens, token_dim)
    c = _linear(emit, _layer_norm(emit, c, w, "channel_mix.1"), w, "channel_mix.2")
    grid = emit.Reshape(emit.Transpose(c, perm=[0, 2, 1]), const_i64(emit, [0, p.mix_out, *p.grid]))
    return emit.DepthToSpace(grid, blocksize=2, mode="CRD") if p.squeeze else grid


def nonlocal_decomposed(emit: Ops, p: NonLocalParams, x: ir.Value, *, weights: Weights) -> Outputs:
    local = emit.Conv(x, weights["point_wise.weight"], weights["point_wise.bias"])
    local = emit.MaxPool(local, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    alpha = weights["alpha"]
    one_minus = emit.Sub(scalar_like(emit, 1.0, x), alpha)
    mixed = emit.Add(
        emit.Mul(alpha, _global_branch(emit, p, x, weights)), emit.Mul(one_minus, local)
    )
    norm = [weights[f"norm.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    return emit.BatchNormalization(mixed, *norm, epsilon=_EPS)


def _weight_shapes(p: Any) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = p.weight_shapes()
    return shapes


def _nonlocal_nodes(p: NonLocalParams, x: Shape) -> int:
    """Local branch 2 (Conv, MaxPool), 1 - alpha 3 (Constant, CastLike, Sub), global branch
    19 (Conv, Reshape + shape Constant, two LayerNorms, Tanh, three linears of Transpose,
    MatMul, Add, two Transposes, final Reshape + shape Constant), the mix and BatchNorm 4;
    DepthToSpace with squeeze. x's shape is fixed by the params, so it changes nothing."""
    return 28 + (1 if p.squeeze else 0)


def _nonlocal_peak(p: NonLocalParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """The pooled local branch (the output's size) lives through the whole global branch.
    Each linear's Transpose of its weight is a node output, not an initializer, so the
    (tokens, tokens) token-mixing weights and the (mix_out, token_dim) channel-mixing one
    count once, whatever the batch. The phases: the 1x1 conv before its max pool, token
    mixing (two (token_dim, tokens) activations and a weight), channel mixing (the tokens,
    its result and its weight), and the mix (pooled, global and their product)."""
    n = shapes[0][0]
    h, w = p.in_size
    gh, gw = p.grid
    tokens, t = gh * gw, p.token_dim
    local, pooled, embedded = p.out * h * w, p.out * (h // 2) * (w // 2), t * tokens
    largest = max(
        n * (local + pooled),
        n * (pooled + 2 * embedded) + tokens * tokens,
        n * (2 * pooled + embedded) + p.mix_out * t,
        3 * n * pooled,
    )
    return largest * itemsize


register_lowering(
    Lowering(
        "nonlocal",
        "decomposition",
        nonlocal_decomposed,
        dtypes=frozenset({"float32"}),
        weight_shapes=_weight_shapes,
        unused_weights=frozenset({"norm.num_batches_tracked"}),
        nodes=_nonlocal_nodes,
        peak_bytes=_nonlocal_peak,
        note="Conv, LayerNormalization, MatMul, Tanh, DepthToSpace, MaxPool, "
        "BatchNormalization (eval); weights as initializers",
    )
)
