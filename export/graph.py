"""Build the ONNX graph for one pooling op and its parameters, without torch.

The service calls ``build_pool_graph(op, params)`` for a /pool request and runs the result
with ``export.runtime``; ``export.torch_export`` calls ``build_pool_function`` to replace the
op inside a torch-exported model. Both trace the same lowering function.
"""

from __future__ import annotations

from typing import Any

import onnx
import onnx_ir as ir
from onnxscript import GraphBuilder, build_function

import export.lowerings  # noqa: F401  (registers every lowering)
from export.errors import LoweringError
from export.lowering import Kind, Lowering, Outputs, Prefer, select_lowering
from export.versions import CUSTOM_DOMAIN, CUSTOM_OPSET, IR_VERSION, OPSET

DTYPES = {
    "float32": ir.DataType.FLOAT,
    "float16": ir.DataType.FLOAT16,
}
NCHW = ("N", "C", "H", "W")
"""Symbolic input dims: batch, channels and spatial size are all free."""
SECOND_INPUTS = {
    "y": (None, ("N", "C2", "H", "W")),
    "indices": (ir.DataType.INT64, NCHW),
}
"""Inputs other than ``x``: (dtype, or None for the requested float dtype; symbolic dims).
A second stream ``y`` shares x's batch and grid but not its channels; max-pool ``indices``
are int64 with x's shape."""


def build_pool_graph(
    op: str,
    params: Any,
    dtype: str = "float32",
    prefer: Prefer = "standard",
    kind: Kind | None = None,
) -> onnx.ModelProto:
    """A standalone model computing ``op`` with ``params`` on NCHW inputs of any size.

    Args:
        op: pooling registry name.
        params: the op's validated parameter object (its pydantic schema).
        dtype: ``float32`` or ``float16``.
        prefer: ``standard`` (runs anywhere) or ``custom`` (contrib kernels first).
        kind: force a lowering kind instead of choosing one.

    Returns:
        The model: inputs named after the op's tensors (``x``), outputs ``y`` (and
        ``indices`` when the op returns them), opset and IR version pinned. Its metadata
        records the op and the lowering kind.

    Raises:
        LoweringError: unknown op, or no lowering accepts these parameters.
    """
    if dtype not in DTYPES:
        raise LoweringError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    lowering = select_lowering(op, params, dtype, prefer, kind)
    inputs = [_input(name, dtype) for name in lowering.inputs]
    graph = ir.Graph(inputs, [], nodes=[], opset_imports={"": OPSET}, name=f"{op}_{lowering.kind}")
    outputs = _as_tuple(lowering.build(GraphBuilder(graph).op, params, *inputs))
    names = _output_names(len(outputs), taken=lowering.inputs)
    for value, name in zip(outputs, names, strict=True):
        value.name = name
        if value.type is None:  # custom ops carry no type inference
            value.type = ir.TensorType(DTYPES[dtype] if value is outputs[0] else ir.DataType.INT64)
        if value.shape is None:
            value.shape = ir.Shape([None] * len(NCHW))
        graph.outputs.append(value)
    _import_custom_domain(graph)
    model = ir.Model(graph, ir_version=IR_VERSION, producer_name="poolserve")
    model.metadata_props.update({"poolserve.op": op, "poolserve.lowering": lowering.kind})
    return ir.serde.serialize_model(model)


def build_pool_function(lowering: Lowering, params: Any, x: ir.Value, name: str) -> ir.Function:
    """The lowering as a model-local ONNX function of one input typed like ``x``."""
    formal = ir.Value(name="x", type=x.type, shape=x.shape)
    return build_function(
        lambda op, value: lowering.build(op, params, value),
        [formal],
        domain="poolserve.lowered",
        name=name,
        opset_imports={"": OPSET, CUSTOM_DOMAIN: CUSTOM_OPSET},
    )


def _input(name: str, dtype: str) -> ir.Value:
    elem, dims = SECOND_INPUTS.get(name, (None, NCHW))
    return ir.Value(name=name, type=ir.TensorType(elem or DTYPES[dtype]), shape=ir.Shape(dims))


def _as_tuple(outputs: Outputs) -> tuple[ir.Value, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)


def _output_names(count: int, taken: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``y`` (+ ``indices``); a name an input already has gets ``_out`` (bilinear2's ``y``)."""
    names = ("y", "indices")[:count] if count <= 2 else tuple(f"y{i}" for i in range(count))
    return tuple(f"{name}_out" if name in taken else name for name in names)


def _import_custom_domain(graph: ir.Graph) -> None:
    """Declare ai.onnx.contrib only when a node uses it, so standard graphs stay standard."""
    if any(node.domain == CUSTOM_DOMAIN for node in graph):
        graph.opset_imports[CUSTOM_DOMAIN] = CUSTOM_OPSET
