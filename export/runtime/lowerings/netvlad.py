"""netvlad (``models.pooling.netvlad``): soft-assignment VLAD with its weights as initializers.

The same vectorised form as the library: optional per-location L2 over channels, a 1x1
Conv for the assignment logits, Softmax over the K clusters, one MatMul for every
cluster's weighted sum of descriptors, minus the assignment mass times the centroids,
intra-normalisation over D, flatten K-major, final L2. ``F.normalize`` is
``v / max(|v|, 1e-12)``. The weights come under the module's ``state_dict()`` keys:
``conv.weight`` (K, D, 1, 1), ``conv.bias`` (K,) with vladv2, ``centroids`` (K, D).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, register_lowering
from export.runtime.lowerings._common import const_i64, scalar_like
from export.runtime.lowerings._cost import Shape
from models.pooling.schemas.netvlad import NetVLADParams

_NORMALIZE_EPS = 1e-12  # F.normalize's default


def l2_normalize(emit: Ops, v: ir.Value, axis: int) -> ir.Value:
    """``F.normalize(v, dim=axis)``: divide by the L2 norm, floored at 1e-12."""
    norm = emit.ReduceL2(v, const_i64(emit, [axis]), keepdims=1)
    return emit.Div(v, emit.Max(norm, scalar_like(emit, _NORMALIZE_EPS, v)))


def netvlad_weight_shapes(p: NetVLADParams) -> dict[str, tuple[int, ...]]:
    k, d = p.num_clusters, p.dim
    shapes: dict[str, tuple[int, ...]] = {"conv.weight": (k, d, 1, 1)}
    if p.vladv2:
        shapes["conv.bias"] = (k,)
    shapes["centroids"] = (k, d)
    return shapes


def netvlad_decomposed(
    emit: Ops, p: NetVLADParams, x: ir.Value, *, weights: Mapping[str, ir.Value]
) -> Outputs:
    if p.normalize_input:
        x = l2_normalize(emit, x, 1)
    conv = [weights["conv.weight"]] + ([weights["conv.bias"]] if p.vladv2 else [])
    logits = emit.Reshape(emit.Conv(x, *conv), const_i64(emit, [0, 0, -1]))  # (N, K, HW)
    assign = emit.Softmax(logits, axis=1)
    descriptors = emit.Transpose(emit.Reshape(x, const_i64(emit, [0, 0, -1])), perm=[0, 2, 1])
    weighted = emit.MatMul(assign, descriptors)  # (N, K, D)
    mass = emit.ReduceSum(assign, const_i64(emit, [2]), keepdims=1)  # (N, K, 1)
    vlad = emit.Sub(weighted, emit.Mul(mass, weights["centroids"]))
    vlad = emit.Reshape(l2_normalize(emit, vlad, 2), const_i64(emit, [0, -1]))
    return l2_normalize(emit, vlad, 1)


_L2_NODES = 6  # l2_normalize: axes Constant, ReduceL2, eps Constant + CastLike, Max, Div


def _netvlad_nodes(p: NetVLADParams, x: Shape) -> int:
    """14 for assignment and aggregation (Conv, Softmax, Transpose, MatMul, ReduceSum, Mul,
    Sub, three Reshapes with their shape Constants, the ReduceSum axes), plus the intra and
    final normalisations and, with normalize_input, the per-location one."""
    return 14 + _L2_NODES * (3 if p.normalize_input else 2)


def _netvlad_peak(p: NetVLADParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """Per location: the assignment logits are copied by Reshape and Softmax (2K, with the
    normalised x's D still alive), then x is copied by Reshape and Transpose (2D) while the
    assignment (K) waits for the MatMul. The (N, K, D) aggregate is three tensors at most
    (weighted sum, mass * centroids, their difference): it only wins on tiny maps."""
    n, d, h, w = shapes[0]
    k = p.num_clusters
    assignment = (d if p.normalize_input else 0) + 2 * k
    per_location = max(assignment, k + 2 * d)
    return n * max(h * w * per_location, 3 * k * d) * itemsize


register_lowering(
    Lowering(
        "netvlad",
        "decomposition",
        netvlad_decomposed,
        dtypes=frozenset({"float32"}),
        weight_shapes=netvlad_weight_shapes,
        nodes=_netvlad_nodes,
        peak_bytes=_netvlad_peak,
        note="Conv 1x1, Softmax, MatMul, Sub, ReduceL2 normalisations; weights as initializers",
    )
)
