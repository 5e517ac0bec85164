"""netvlad (``models.pooling.netvlad``): soft-assignment VLAD with its weights as initializers.

The same vectorised form as the library: optional per-location L2 over channels, a 1x1
Conv for the assignment logits, Softmax over the K clusters, one MatMul for every
cluster's weighted sum of descriptors, minus the assignment mass times the centroids,
intra-normalisation over D, flatten K-major, final L2. ``F.normalize`` is
``v / max(|v|, 1e-12)``. The weights come under the module's ``state_dict()`` keys:
``conv.weight`` (K, D, 1, 1), ``conv.bias`` (K,) with vladv2, ``centroids`` (K, D).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import const_i64, scalar_like
from models.pooling.schemas.netvlad import NetVLADParams

_NORMALIZE_EPS = 1e-12  # F.normalize's default


def l2_normalize(op: Ops, v: ir.Value, axis: int) -> ir.Value:
    """``F.normalize(v, dim=axis)``: divide by the L2 norm, floored at 1e-12."""
    norm = op.ReduceL2(v, const_i64(op, [axis]), keepdims=1)
    return op.Div(v, op.Max(norm, scalar_like(op, _NORMALIZE_EPS, v)))


def netvlad_weight_shapes(p: NetVLADParams) -> dict[str, tuple[int, ...]]:
    k, d = p.num_clusters, p.dim
    shapes: dict[str, tuple[int, ...]] = {"conv.weight": (k, d, 1, 1)}
    if p.vladv2:
        shapes["conv.bias"] = (k,)
    shapes["centroids"] = (k, d)
    return shapes


def netvlad_decomposed(
    op: Ops, p: NetVLADParams, x: ir.Value, *, weights: Mapping[str, ir.Value]
) -> Outputs:
    if p.normalize_input:
        x = l2_normalize(op, x, 1)
    conv = [weights["conv.weight"]] + ([weights["conv.bias"]] if p.vladv2 else [])
    logits = op.Reshape(op.Conv(x, *conv), const_i64(op, [0, 0, -1]))  # (N, K, HW)
    assign = op.Softmax(logits, axis=1)
    descriptors = op.Transpose(op.Reshape(x, const_i64(op, [0, 0, -1])), perm=[0, 2, 1])
    weighted = op.MatMul(assign, descriptors)  # (N, K, D)
    mass = op.ReduceSum(assign, const_i64(op, [2]), keepdims=1)  # (N, K, 1)
    vlad = op.Sub(weighted, op.Mul(mass, weights["centroids"]))
    vlad = op.Reshape(l2_normalize(op, vlad, 2), const_i64(op, [0, -1]))
    return l2_normalize(op, vlad, 1)


def _channels(p: Any) -> dict[str, int]:
    return {"C": p.dim}


register_lowering(
    Lowering(
        "netvlad",
        "decomposition",
        netvlad_decomposed,
        dtypes=frozenset({"float32"}),
        weight_shapes=netvlad_weight_shapes,
        fixed_dims=_channels,
        note="Conv 1x1, Softmax, MatMul, Sub, ReduceL2 normalisations; weights as initializers",
    )
)
