"""Inference over the protocol: a decoded request to the engine that serves its model.

Image models run through ``DescriptorEngine.describe`` (as /descriptor), ``pool.<op>``
through ``PoolEngine.run`` (as /pool) and ``onnx.<model>`` through the engines' tensor
paths, so every budget, deadline and cancellation of the native routes applies unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.codecs.tensor import check_output
from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode, check_json_numbers
from app.inference.deadline import RunControl
from app.inference.descriptor import DescriptorEngine
from app.inference.pool import PoolEngine, PoolRequest
from app.inference.sessions import LoadedModel
from app.oip.catalogue import VERSION, OipModel, build_catalogue
from app.oip.tensors import InputTensor

PROTOCOL_PARAMETERS = frozenset(
    {"binary_data_output", "timeout", "priority", "headers", "sequence_id", "sequence_start",
     "sequence_end"}
)  # fmt: skip
"""Request parameters the protocol (or Triton's client) defines: never an op's param."""


@dataclass(frozen=True)
class InferCall:
    model: OipModel
    inputs: Mapping[str, InputTensor]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    json_reply: bool = False
    """Some output goes back as JSON, which has its own element cap."""
    control: RunControl | None = None


@dataclass(frozen=True)
class InferOutcome:
    outputs: dict[str, np.ndarray]
    parameters: dict[str, Any]
    """What the response's ``parameters`` report: the provider, and for ops the lowering."""


class OipService:
    def __init__(
        self,
        settings: Settings,
        models: Mapping[str, LoadedModel],
        pools: PoolEngine,
        descriptors: DescriptorEngine,
    ) -> None:
        self.settings = settings
        self.models = models
        self.pools = pools
        self.descriptors = descriptors
        self.catalogue = build_catalogue(models)

    def model(self, name: str, version: str | None = None) -> OipModel:
        """The named model; 404 for an unknown name or a version other than ``1``."""
        model = self.catalogue.get(name)
        if model is None:
            raise ApiError(
                ErrorCode.UNKNOWN_MODEL, "unknown model; POST /v2/repository/index lists the models"
            )
        if version not in (None, "", VERSION):
            raise ApiError(ErrorCode.UNKNOWN_VERSION, f"{model.name} has only version {VERSION}")
        return model

    async def infer(self, call: InferCall) -> InferOutcome:
        family = call.model.family
        if family == "image":
            outcome = await self._describe(call)
        elif family == "pool":
            outcome = await self._pool(call)
        else:
            outcome = await self._onnx(call)
        for name, value in outcome.outputs.items():
            check_output(value, f"{call.model.name} {name}")
        return outcome

    async def _describe(self, call: InferCall) -> InferOutcome:
        blobs = _tensor(call, "IMAGE").value
        assert isinstance(blobs, list)  # the catalogue's IMAGE is BYTES
        loaded = self.descriptors.image_model(call.model.target)
        if call.json_reply:
            check_json_numbers(
                len(blobs) * (loaded.dim or 1),
                self.settings.max_json_result_elements,
                "the result",
                "binary outputs",
            )
        described = await self.descriptors.describe(loaded.name, blobs, call.control)
        name = call.model.outputs[0].name
        return InferOutcome({name: described.descriptors}, {"provider": loaded.provider})

    async def _pool(self, call: InferCall) -> InferOutcome:
        tensors = {name: _array(t) for name, t in call.inputs.items()}
        params = op_params(call.parameters)
        model = params.pop("model", None)
        request = PoolRequest(
            call.model.target, params, tensors, model if isinstance(model, str) else None,
            call.json_reply, call.control,
        )  # fmt: skip
        result = await self.pools.run(request)
        reported = {"provider": result.provider, "lowering": result.lowering}
        reported |= {f"drawn_{name}": how for name, how in result.drawn.items()}
        return InferOutcome(result.outputs, reported)

    async def _onnx(self, call: InferCall) -> InferOutcome:
        loaded = self.models[call.model.target]
        input_name = loaded.entry.inputs[0].name
        x = _array(_tensor(call, input_name))
        if call.parameters.keys() - PROTOCOL_PARAMETERS:
            raise ApiError(ErrorCode.INVALID_PARAMS, f"{call.model.name} takes no parameters")
        if loaded.entry.kind == "pool_op" and loaded.entry.op is not None:
            request = PoolRequest(
                loaded.entry.op, {}, {"x": x}, loaded.name, call.json_reply, call.control
            )
            result = await self.pools.run(request)
            return InferOutcome(result.outputs, {"provider": result.provider})
        if call.json_reply:
            check_json_numbers(
                x.shape[0] * (loaded.dim or 1),
                self.settings.max_json_result_elements,
                "the result",
                "binary outputs",
            )
        y = await self.descriptors.run_tensor(loaded.name, x, call.control)
        output = loaded.entry.outputs[0].name
        return InferOutcome(
            {output: y.astype(np.float32, copy=False)}, {"provider": loaded.provider}
        )


def op_params(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """An op's params from the request's ``parameters``: the protocol's own keys left out,
    strings that hold JSON (``"[2, 2]"``, list-valued params) parsed, other strings kept."""
    return {
        key: _json_or_text(value) if isinstance(value, str) else value
        for key, value in parameters.items()
        if key not in PROTOCOL_PARAMETERS and not key.startswith("triton_")
    }


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return value


def _tensor(call: InferCall, name: str) -> InputTensor:
    tensor = call.inputs.get(name)
    if tensor is None or len(call.inputs) != 1:
        raise ApiError(ErrorCode.WRONG_TENSORS, f"{call.model.name} takes one input, {name}")
    return tensor


def _array(tensor: InputTensor) -> np.ndarray:
    assert isinstance(tensor.value, np.ndarray)  # only BYTES inputs hold elements
    return tensor.value
