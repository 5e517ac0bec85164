"""Export a torch model whose pooling layers are written by our lowerings.

Every registered pooling module in the model is swapped for a call to the torch custom op
``poolserve::pool(x, name, params_json)``. torch's dynamo exporter turns that op, through
``custom_translation_table``, into a placeholder node carrying the op name and parameters;
each placeholder is then replaced by the chosen lowering (the same function the serving
graph builder traces) as a model-local ONNX function, and the functions are inlined.

Dynamic dims are exported with ``torch.export.export`` first, which raises when a dim
would be specialised, instead of ``torch.onnx.export``'s silent fallback to static sizes.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import torch
from onnx.defs import OpSchema
from onnx_ir.passes.common import InlinePass
from onnxscript.values import Op, Opset
from torch import Tensor, nn

import export.runtime.lowerings  # noqa: F401  (registers the lowerings)
from export.runtime.errors import LoweringError
from export.runtime.graph import DTYPES, build_pool_function
from export.runtime.lowering import Prefer, select_lowering
from export.runtime.shape_rules import output_shape
from export.runtime.versions import CUSTOM_DOMAIN, IR_VERSION, OPSET
from models.pooling import get_pool_spec, list_pools, parse_params
from models.pooling.params import PoolParams

PLACEHOLDER_DOMAIN = "poolserve.placeholder"
LOWERED_DOMAIN = "poolserve.lowered"


@dataclass(frozen=True)
class LoweredNode:
    """One pooling layer of an exported model and the lowering that wrote it."""

    op: str
    kind: str
    params: str


@dataclass(frozen=True)
class ExportedModel:
    model: onnx.ModelProto
    lowered: tuple[LoweredNode, ...]


@functools.cache
def _module_for(name: str, params_json: str) -> nn.Module:
    return get_pool_spec(name).module(parse_params(name, **json.loads(params_json)))


@torch.library.custom_op("poolserve::pool", mutates_args=())
def pool_op(x: Tensor, name: str, params: str) -> Tensor:
    """Eager: run the library's module. Export: becomes a placeholder node."""
    out = _module_for(name, params)(x)
    return out.clone() if out is x else out


@pool_op.register_fake
def _pool_fake(x: Tensor, name: str, params: str) -> Tensor:
    params_obj = parse_params(name, **json.loads(params))
    shape = output_shape(name, params_obj, tuple(x.shape), torch.sym_min)
    return x.new_empty(shape)


class LoweredPool(nn.Module):
    """Stands in for a registered pooling module while the model is exported."""

    def __init__(self, name: str, params: PoolParams) -> None:
        super().__init__()
        self.name = name
        self.params_json = params.model_dump_json()

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.poolserve.pool(x, self.name, self.params_json)  # type: ignore[no-any-return]


def swap_pools(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every parameter-free registered pooling module replaced by
    ``LoweredPool``. Layers with weights (GeM's learned p, NetVLAD) keep torch's export:
    the lowering knows only the schema, not the trained values."""
    # The placeholder op takes one tensor, so two-input ops (bilinear2, max_unpool) stay torch's.
    names = {
        spec.module: name
        for name in list_pools()
        if (spec := get_pool_spec(name)).module_inputs == ("x",)
    }

    def swappable(module: nn.Module) -> bool:
        return type(module) in names and not any(True for _ in module.parameters())

    if swappable(model):
        return _lowered(names[type(model)], model)
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if swappable(child):
                setattr(parent, child_name, _lowered(names[type(child)], child))
    return model


def _lowered(name: str, module: nn.Module) -> LoweredPool:
    params = module.params
    if not isinstance(params, PoolParams):
        raise LoweringError(f"{name}: module {type(module).__name__} has no validated params")
    if getattr(params, "return_indices", False):
        raise LoweringError(f"{name}: return_indices inside an exported model is not supported")
    return LoweredPool(name, params)


def _placeholder_op() -> Op:
    string = OpSchema.AttrType.STRING
    schema = OpSchema(
        "Pool",
        PLACEHOLDER_DOMAIN,
        1,
        inputs=[OpSchema.FormalParameter("x", "T")],
        outputs=[OpSchema.FormalParameter("y", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(double)"], "")],
        attributes=[
            OpSchema.Attribute("name", string, ""),
            OpSchema.Attribute("params", string, ""),
        ],
    )
    return Op(Opset(PLACEHOLDER_DOMAIN, 1), "Pool", schema)


_PLACEHOLDER = _placeholder_op()


def _translate_pool(x: Any, name: str, params: str) -> Any:
    """custom_translation_table entry: keep the op and its parameters for ``lower_placeholders``."""
    return _PLACEHOLDER(x, name=name, params=params)


def export_module(
    model: nn.Module,
    example: Tensor,
    dynamic_axes: Mapping[int, str],
    prefer: Prefer = "standard",
    min_size: int = 8,
) -> ExportedModel:
    """Export ``model`` (one NCHW input, named ``x`` in the graph) to ONNX.

    Args:
        model: an ``nn.Module`` in eval mode; its registered pooling layers are lowered.
        example: the example input torch traces with.
        dynamic_axes: axis -> symbolic name for the dims that stay dynamic.
        prefer: ``standard`` or ``custom`` lowerings (see ``select_lowering``).
        min_size: the smallest H and W the exported model accepts. torch refuses a dynamic
            dim whose whole range does not fit the model (a 1x1 map cannot be pooled 3x3).

    Returns:
        The model (opset and IR version pinned) and the lowering used for each layer.
    """
    dims = {
        axis: torch.export.Dim(name, min=1 if axis < 2 else min_size)
        for axis, name in dynamic_axes.items()
    }
    with warnings.catch_warnings():
        # torch's own pytree deprecation, raised inside torch.export.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        program = torch.export.export(swap_pools(model), (example,), dynamic_shapes=(dims,))
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=["x"],
            opset_version=OPSET,
            custom_translation_table={torch.ops.poolserve.pool.default: _translate_pool},
            verbose=False,
        )
    if onnx_program is None:
        raise LoweringError("torch.onnx.export returned no program")
    lowered = lower_placeholders(onnx_program.model, prefer)
    rename_dims(onnx_program.model, dynamic_axes)
    onnx_program.model.ir_version = IR_VERSION
    return ExportedModel(ir.serde.serialize_model(onnx_program.model), lowered)


def lower_placeholders(model: ir.Model, prefer: Prefer) -> tuple[LoweredNode, ...]:
    """Replace each placeholder with its lowering (as a local function), then inline."""
    lowered = []
    for index, node in enumerate(n for n in model.graph if n.domain == PLACEHOLDER_DOMAIN):
        name, params_json = (node.attributes[a].as_string() for a in ("name", "params"))
        params = parse_params(name, **json.loads(params_json))
        x = node.inputs[0]
        if x is None or x.dtype is None:
            raise LoweringError(f"{name}: the exported input of the pooling layer has no dtype")
        lowering = select_lowering(name, params, _dtype_name(x.dtype), prefer)
        function = build_pool_function(lowering, params, x, f"{name}_{index}")
        model.functions[function.identifier()] = function
        node.domain, node.op_type, node.version = LOWERED_DOMAIN, function.name, None
        node.attributes.clear()
        lowered.append(LoweredNode(name, lowering.kind, params_json))
    model.opset_imports[LOWERED_DOMAIN] = 1
    InlinePass()(model)
    _tidy_opset_imports(model)
    return tuple(lowered)


def rename_dims(model: ir.Model, dynamic_axes: Mapping[int, str]) -> None:
    """Give the input's symbolic dims the requested names everywhere they appear.

    An ``ExportedProgram`` names them after torch's symbols (``s77``); shape expressions
    such as ``Min(-((-s53)//2), ...)`` in later values are renamed too.
    """
    dims = model.graph.inputs[0].shape
    if dims is None:
        return
    names = {str(dims[axis]): name for axis, name in dynamic_axes.items()}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    for value in _all_values(model.graph):
        if value.shape is None:
            continue
        value.shape = ir.Shape(
            [
                pattern.sub(lambda m: names[m.group(1)], d.value)
                if isinstance(d, ir.SymbolicDim) and d.value
                else d
                for d in value.shape
            ]
        )


def _all_values(graph: ir.Graph) -> list[ir.Value]:
    values = list(graph.inputs)
    for node in graph:
        values.extend(v for v in node.outputs)
    return values


def _dtype_name(dtype: ir.DataType) -> str:
    names = {value: key for key, value in DTYPES.items()}
    if dtype not in names:
        raise LoweringError(f"pooling layers export for {sorted(DTYPES)}, not {dtype}")
    return names[dtype]


def _tidy_opset_imports(model: ir.Model) -> None:
    used = {node.domain for node in model.graph}
    for domain in (PLACEHOLDER_DOMAIN, LOWERED_DOMAIN, CUSTOM_DOMAIN):
        if domain not in used:
            model.opset_imports.pop(domain, None)


def torch_reference(model: nn.Module) -> Any:
    """``model`` as a parity ``Reference``: NumPy in, list of NumPy outputs out."""

    def run(*arrays: np.ndarray) -> Sequence[np.ndarray]:
        with torch.inference_mode():
            out = model(*(torch.from_numpy(a) for a in arrays))
        outs = out if isinstance(out, tuple | list) else (out,)
        return [o.detach().numpy() for o in outs]

    return run
