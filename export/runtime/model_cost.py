"""What an image model costs per input pixel, read from its ONNX graph (nothing is run).

The graph's input is given a concrete (1, C, H, W), ONNX shape inference (with data
propagation, so shapes computed by Shape/Reshape chains resolve) types every tensor, and:

- FLOPs count 2 per multiply-add of every Conv, MatMul and Gemm (what dominates a CNN);
- peak bytes are the largest total of tensors alive at once in node order (a tensor lives
  from the node that makes it to the last node that reads it), weights not counted.

Both grow with the pixel count for fully convolutional models, so the service admits a
request from ``pixels x per-pixel cost`` before it decodes an image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
from onnx import shape_inference

Dims = list[int | None]


@dataclass(frozen=True)
class ModelCost:
    flops_per_pixel: float
    peak_bytes_per_pixel: float


def model_cost(model: onnx.ModelProto, hw: tuple[int, int]) -> ModelCost:
    """The per-pixel cost of ``model`` measured at one (H, W) input, batch 1."""
    sized = onnx.ModelProto.FromString(model.SerializeToString())
    dims = sized.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, (1, None, *hw), strict=True):
        if size is not None:
            dim.Clear()
            dim.dim_value = size
    inferred = shape_inference.infer_shapes(sized, data_prop=True)
    typed = _typed(inferred)
    weights = {init.name: list(init.dims) for init in inferred.graph.initializer}
    pixels = hw[0] * hw[1]
    return ModelCost(
        _flops(inferred.graph, typed, weights) / pixels,
        _peak_bytes(inferred.graph, typed, set(weights)) / pixels,
    )


def _typed(model: onnx.ModelProto) -> dict[str, tuple[Dims, int]]:
    """Every value with a known shape: its dims and its element size in bytes."""
    values = [*model.graph.value_info, *model.graph.output, *model.graph.input]
    found = {}
    for value in values:
        tensor = value.type.tensor_type
        dims: Dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
        found[value.name] = (dims, itemsize)
    return found


def _flops(
    graph: onnx.GraphProto, typed: dict[str, tuple[Dims, int]], weights: dict[str, list[int]]
) -> int:
    total = 0
    for node in graph.node:
        out = _known(typed.get(node.output[0], ([None], 0))[0])
        if out is None:
            continue  # shape unknown: a small op next to the convolutions (NetVLAD's bmm)
        if node.op_type == "Conv" and node.input[1] in weights:
            _, c_per_group, *kernel = weights[node.input[1]]
            total += 2 * math.prod(out) * c_per_group * math.prod(kernel)
        elif node.op_type in ("MatMul", "Gemm"):
            left = typed.get(node.input[0], (list(weights.get(node.input[0], [None])), 0))[0]
            if left and left[-1] is not None:
                total += 2 * math.prod(out) * left[-1]
    return total


def _known(dims: Dims) -> list[int] | None:
    """The dims when every one is known."""
    return [d for d in dims if d is not None] if None not in dims else None


def _peak_bytes(
    graph: onnx.GraphProto, typed: dict[str, tuple[Dims, int]], weights: set[str]
) -> int:
    def size(name: str) -> int:
        dims, itemsize = typed.get(name, ([None], 0))
        known = _known(dims)
        return 0 if known is None else math.prod(known) * itemsize

    nodes = list(graph.node)
    last_use = {o.name: len(nodes) for o in graph.output}
    for i, node in enumerate(nodes):
        for name in node.input:
            if name and name not in weights:
                last_use[name] = max(last_use.get(name, i), i)
    live: dict[str, int] = {}
    peak = 0
    for i, node in enumerate(nodes):
        live.update({name: size(name) for name in node.output if name})
        peak = max(peak, sum(live.values()))
        live = {n: b for n, b in live.items() if last_use.get(n, i) > i}
    return peak
