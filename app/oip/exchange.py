"""From a request's tensors as they arrived to decoded inputs, and from results to outputs as
the client asked for them: inline JSON, binary, or written into a shared-memory region.

REST and gRPC both describe their tensors as ``WireInput``/``WireOutput``; everything from
there on (which source holds the data, the limits, the datatypes, where each output goes)
is decided here, once for both transports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.codecs.tensor import TensorLimits
from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode
from app.oip.catalogue import OipModel, TensorMeta
from app.oip.datatypes import BYTES, protocol_datatype
from app.oip.shm import SharedMemoryRegistry
from app.oip.tensors import InputTensor, binary_bytes, from_binary, from_json

SHM_REGION = "shared_memory_region"
SHM_OFFSET = "shared_memory_offset"
SHM_SIZE = "shared_memory_byte_size"


@dataclass(frozen=True)
class WireInput:
    name: str
    datatype: object
    shape: object
    parameters: Mapping[str, Any] = field(default_factory=dict)
    json_data: object = None
    raw: memoryview | None = None
    """Binary data: a body part (REST), raw contents (gRPC)."""


@dataclass(frozen=True)
class WireOutput:
    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlacedOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | None
    """None when the output went to shared memory."""
    binary: bool
    parameters: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The output's entry in a JSON response (without its data)."""
        entry: dict[str, Any] = {"name": self.name, "datatype": self.datatype}
        entry["shape"] = list(self.shape)
        if self.parameters:
            entry["parameters"] = self.parameters
        return entry


@dataclass(frozen=True)
class Exchange:
    """What a transport needs to decode inputs and place outputs."""

    settings: Settings
    shm: SharedMemoryRegistry | None
    local_client: bool
    """The client is on loopback: only then may it name shared-memory regions."""

    def inputs(self, model: OipModel, wires: Sequence[WireInput]) -> dict[str, InputTensor]:
        """Every input decoded from its source, by name; unknown or repeated names refused."""
        decoded: dict[str, InputTensor] = {}
        for wire in wires:
            meta = model.input(wire.name)
            if meta is None or wire.name in decoded:
                raise ApiError(
                    ErrorCode.WRONG_TENSORS,
                    f"{model.name} takes the inputs {[t.name for t in model.inputs]}, each once",
                )
            decoded[wire.name] = self._decode(meta, wire)
        return decoded

    def _decode(self, meta: TensorMeta, wire: WireInput) -> InputTensor:
        params = wire.parameters
        binary = self._limits(meta, json_form=False)
        if SHM_REGION in params:
            raw = self._region_view(params)
            return from_binary(wire.name, wire.datatype, wire.shape, raw, binary, meta.accepts)
        if wire.raw is not None:
            return from_binary(wire.name, wire.datatype, wire.shape, wire.raw, binary, meta.accepts)
        if wire.json_data is None:
            raise ApiError(ErrorCode.MISSING_TENSOR, f"input {wire.name} carries no data")
        limits = self._limits(meta, json_form=True)
        b64 = params.get("content_type") == "base64"
        return from_json(
            wire.name, wire.datatype, wire.shape, wire.json_data, limits, meta.accepts, b64
        )

    def _limits(self, meta: TensorMeta, json_form: bool) -> TensorLimits:
        s = self.settings
        if meta.datatype == BYTES:  # encoded images: one per element
            return TensorLimits(s.max_images, 2)
        count = s.max_json_tensor_elements if json_form else s.max_tensor_elements
        return TensorLimits(count, s.max_tensor_rank)

    def registry(self) -> SharedMemoryRegistry:
        """The shared-memory registry, when this server has it on and the client may use it."""
        if self.shm is None or not self.local_client:
            raise ApiError(
                ErrorCode.SHARED_MEMORY_OFF,
                "system shared memory is off here (setting shared_memory), or the client is "
                "not on the loopback interface",
            )
        return self.shm

    def _region_view(self, params: Mapping[str, Any]) -> memoryview:
        region, offset, size = _region_params(params)
        return self.registry().read(region, offset, size)

    def check_regions(self, outputs: Sequence[WireOutput] | None) -> None:
        """Refuse before the run an output region that is unknown or out of bounds."""
        for wanted in outputs or ():
            if SHM_REGION in wanted.parameters:
                self._region_view(wanted.parameters).release()

    def json_reply(self, outputs: Sequence[WireOutput] | None, binary_default: bool) -> bool:
        """Whether some output will go back as JSON (which has its own element cap)."""
        if outputs is None:
            return not binary_default
        return any(
            SHM_REGION not in o.parameters and not _binary(o, binary_default) for o in outputs
        )

    def place(
        self,
        results: Mapping[str, np.ndarray],
        outputs: Sequence[WireOutput] | None,
        binary_default: bool,
    ) -> list[PlacedOutput]:
        """The results the client asked for (all when it named none), each placed as asked."""
        if outputs is None:
            outputs = [WireOutput(name) for name in results]
        placed = []
        for wanted in outputs:
            if wanted.name not in results:
                raise ApiError(
                    ErrorCode.UNKNOWN_OUTPUT,
                    f"this request gives the outputs {list(results)}; ask for those",
                )
            placed.append(self._place(wanted, results[wanted.name], binary_default))
        return placed

    def _place(self, wanted: WireOutput, array: np.ndarray, binary_default: bool) -> PlacedOutput:
        datatype = protocol_datatype(array.dtype.name)
        shape = tuple(int(d) for d in array.shape)
        if SHM_REGION not in wanted.parameters:
            binary = _binary(wanted, binary_default)
            return PlacedOutput(wanted.name, datatype, shape, array, binary, {})
        region, offset, size = _region_params(wanted.parameters)
        data = binary_bytes(array)
        if len(data) > size:
            raise ApiError(
                ErrorCode.REGION_BOUNDS,
                f"output {wanted.name} needs {len(data)} bytes; the request gives it {size}",
            )
        self.registry().write(region, offset, data)
        params = {SHM_REGION: region, SHM_SIZE: len(data)}
        if offset:
            params[SHM_OFFSET] = offset
        return PlacedOutput(wanted.name, datatype, shape, None, True, params)


def _binary(output: WireOutput, default: bool) -> bool:
    value = output.parameters.get("binary_data", default)
    if not isinstance(value, bool):
        raise ApiError(ErrorCode.VALIDATION_ERROR, "binary_data must be true or false")
    return value


def _region_params(params: Mapping[str, Any]) -> tuple[str, int, int]:
    """(region, offset, byte size) of a tensor that lives in shared memory."""
    region = params.get(SHM_REGION)
    offset = params.get(SHM_OFFSET, 0)
    size = params.get(SHM_SIZE)
    if not isinstance(region, str) or not isinstance(offset, int) or not isinstance(size, int):
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            f"a shared-memory tensor needs {SHM_REGION} (a string) and {SHM_SIZE} (an "
            f"integer), and optionally {SHM_OFFSET} (an integer)",
        )
    if isinstance(offset, bool) or isinstance(size, bool):  # bool is an int subclass
        raise ApiError(ErrorCode.VALIDATION_ERROR, "shared-memory sizes must be integers")
    return region, offset, size
