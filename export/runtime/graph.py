"""Build the ONNX graph for one pooling op and its parameters, without torch.

The service calls ``build_pool_graph(op, params)`` for a /pool request and runs the result
with ``export.runtime.sessions``; ``export.torch_export`` calls ``build_pool_function`` to
replace the op inside a torch-exported model. Both trace the same lowering function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnxscript import GraphBuilder, build_function

import export.runtime.lowerings  # noqa: F401  (registers every lowering)
from export.runtime.errors import LoweringError
from export.runtime.lowering import (
    FLOAT_DTYPES,
    Lowering,
    LoweringKind,
    Outputs,
    Prefer,
    select_lowering,
)
from export.runtime.versions import CUSTOM_DOMAIN, CUSTOM_OPSET, IR_VERSION, OPSET
from models.pooling import get_pool_spec
from models.pooling.registry import TensorSpec

DTYPES = {name: ir.DataType.from_numpy(np.dtype(name)) for name in FLOAT_DTYPES}
"""The float dtypes graphs are built in, as ONNX element types."""
NCHW = ("N", "C", "H", "W")
"""Symbolic output dims when a custom node gives none."""


def build_pool_graph(
    op: str,
    params: Any,
    dtype: str = "float32",
    prefer: Prefer = "standard",
    kind: LoweringKind | None = None,
    *,
    static_hw: tuple[int, int] | None = None,
    weights: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """A standalone model computing ``op`` with ``params`` on NCHW inputs of any size.

    Args:
        op: pooling registry name.
        params: the op's validated parameter object (its pydantic schema).
        dtype: ``float32`` or ``float16``.
        prefer: ``standard`` (runs anywhere) or ``custom`` (contrib kernels first).
        kind: force a lowering kind instead of choosing one.
        static_hw: build for this input (H, W) only: the inputs' H and W dims become fixed.
            Required by lowerings with ``needs_static_hw`` (rmac); allowed for any op.
        weights: the learned weights of a lowering with ``weight_shapes`` (netvlad,
            nonlocal), keyed like the torch module's ``state_dict()``, as NumPy arrays;
            they become initializers of the graph's dtype.

    Returns:
        The model: inputs named after the op's tensors (``x``), outputs ``y`` (and
        ``indices`` when the op returns them), opset and IR version pinned. Its metadata
        records the op and the lowering kind.

    Raises:
        LoweringError: unknown op, no lowering accepts these parameters, a missing or
            invalid ``static_hw``, or missing, unknown or wrongly shaped weights.
    """
    if dtype not in DTYPES:
        raise LoweringError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    lowering = select_lowering(op, params, dtype, prefer, kind)
    return build_lowered_graph(lowering, params, dtype, static_hw=static_hw, weights=weights)


def build_lowered_graph(
    lowering: Lowering,
    params: Any,
    dtype: str = "float32",
    *,
    static_hw: tuple[int, int] | None = None,
    weights: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """``build_pool_graph`` with the lowering already chosen (see there)."""
    if dtype not in DTYPES:
        raise LoweringError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    spec = get_pool_spec(lowering.op)
    fixed = _fixed_dims(lowering, params, static_hw)
    inputs = [_input(spec.input_spec(name), dtype, fixed) for name in lowering.inputs]
    name = f"{lowering.op}_{lowering.kind}"
    graph = ir.Graph(inputs, [], nodes=[], opset_imports={"": OPSET}, name=name)
    extra = {}
    if lowering.weight_shapes is not None:
        extra["weights"] = _initializers(graph, lowering, params, weights, dtype)
    elif weights is not None:
        raise LoweringError(f"op {lowering.op!r} has no learned weights; do not pass weights")
    outputs = _as_tuple(lowering.build(GraphBuilder(graph).op, params, *inputs, **extra))
    _add_outputs(graph, outputs, lowering.inputs, dtype)
    _import_custom_domain(graph)
    model = ir.Model(graph, ir_version=IR_VERSION, producer_name="poolserve")
    model.metadata_props.update({"poolserve.op": lowering.op, "poolserve.lowering": lowering.kind})
    return ir.serde.serialize_model(model)


def _add_outputs(
    graph: ir.Graph, outputs: tuple[ir.Value, ...], taken: tuple[str, ...], dtype: str
) -> None:
    """Name the lowering's outputs and make them the graph's, typed where a custom node
    left them untyped."""
    for value, name in zip(outputs, _output_names(len(outputs), taken), strict=True):
        value.name = name
        if value.type is None:  # custom ops carry no type inference
            value.type = ir.TensorType(DTYPES[dtype] if value is outputs[0] else ir.DataType.INT64)
        if value.shape is None:
            value.shape = ir.Shape([None] * len(NCHW))
        graph.outputs.append(value)


def build_pool_function(lowering: Lowering, params: Any, x: ir.Value, name: str) -> ir.Function:
    """The lowering as a model-local ONNX function of one input typed like ``x``.

    Raises:
        LoweringError: the lowering needs more than ``x`` (a second input such as
            fractional_max's samples, or learned weights), which a model has no way to give.
    """
    if lowering.inputs != ("x",) or lowering.needs_weights:
        raise LoweringError(
            f"the {lowering.kind} lowering of {lowering.op!r} needs "
            f"{'learned weights' if lowering.needs_weights else 'inputs ' + str(lowering.inputs)}"
            ", so it cannot replace the layer inside an exported model"
        )
    formal = ir.Value(name="x", type=x.type, shape=x.shape)
    return build_function(
        lambda emit, value: lowering.build(emit, params, value),
        [formal],
        domain="poolserve.lowered",
        name=name,
        opset_imports={"": OPSET, CUSTOM_DOMAIN: CUSTOM_OPSET},
    )


def _fixed_dims(
    lowering: Lowering, params: Any, static_hw: tuple[int, int] | None
) -> dict[str, int]:
    """Input dims (by symbol) that are numbers in this graph: static H, W, and the params'."""
    fixed: dict[str, int] = {}
    if static_hw is not None:
        if len(static_hw) != 2 or not all(isinstance(d, int) and d > 0 for d in static_hw):
            raise LoweringError(f"static_hw must be two positive ints (H, W), got {static_hw!r}")
        fixed.update(H=static_hw[0], W=static_hw[1])
    elif lowering.needs_static_hw:
        raise LoweringError(
            f"op {lowering.op!r} is built for one input size (its structure depends on H and "
            "W); pass static_hw=(H, W) to build_pool_graph"
        )
    spec = get_pool_spec(lowering.op)
    for symbol, size in (spec.fixed_dims(params) if spec.fixed_dims else {}).items():
        if fixed.get(symbol, size) != size:
            raise LoweringError(
                f"op {lowering.op!r} with these params needs {symbol} = {size}, but static_hw "
                f"gives {fixed[symbol]}"
            )
        fixed[symbol] = size
    return fixed


def _input(tensor: TensorSpec, dtype: str, fixed: Mapping[str, int]) -> ir.Value:
    """A graph input as the registry describes it; dims the params fix become numbers."""
    elem = ir.DataType.INT64 if tensor.dtype == "int64" else DTYPES[dtype]
    shape = ir.Shape([fixed.get(d, d) if isinstance(d, str) else d for d in tensor.dims])
    return ir.Value(name=tensor.name, type=ir.TensorType(elem), shape=shape)


def _initializers(
    graph: ir.Graph,
    lowering: Lowering,
    params: Any,
    weights: Mapping[str, np.ndarray] | None,
    dtype: str,
) -> dict[str, ir.Value]:
    """The weights as graph initializers of the graph's dtype, after checking every one."""
    expected = lowering.expected_weights(params)
    if weights is None:
        raise LoweringError(
            f"op {lowering.op!r} has learned weights: pass weights= with {sorted(expected)}"
        )
    problems = _weight_problems(expected, weights, lowering.unused_weights)
    if problems:
        raise LoweringError(f"bad weights for {lowering.op!r}: {'; '.join(problems)}")
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(DTYPES[dtype])
    values = {}
    for key in expected:
        array = np.ascontiguousarray(weights[key], dtype=np_dtype)
        value = ir.Value(
            name=key,
            type=ir.TensorType(DTYPES[dtype]),
            shape=ir.Shape(array.shape),
            const_value=ir.tensor(array, name=key),
        )
        graph.register_initializer(value)
        values[key] = value
    return values


def _weight_problems(
    expected: Mapping[str, tuple[int, ...]],
    weights: Mapping[str, np.ndarray],
    unused: frozenset[str],
) -> list[str]:
    """Every missing, unknown, non-real or wrongly shaped weight, one line each."""
    problems = [f"missing {k!r} {expected[k]}" for k in expected if k not in weights]
    problems += [f"unknown {k!r}" for k in weights if k not in expected and k not in unused]
    for key in (k for k in expected if k in weights):
        array = np.asarray(weights[key])
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            problems.append(f"{key!r} must be a real numeric array, got {array.dtype}")
        elif array.shape != expected[key]:
            problems.append(f"{key!r} must be {expected[key]}, got {array.shape}")
    return problems


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
