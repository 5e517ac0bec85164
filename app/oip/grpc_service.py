"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``, as Triton serves
it). This module only translates: protocol messages to ``WireInput``/``WireOutput``/
``InferCall`` and ``PlacedOutput`` back to messages, and ``ApiError`` to a gRPC status.
Decoding, limits, shared memory and inference belong to ``Exchange`` and ``OipService``,
exactly as for REST, so every budget applies to both transports.

Input data comes from ``raw_input_contents`` (consumed in order by the inputs that are neither
in shared memory nor given as typed ``contents``, as Triton does), from typed ``contents``
(turned into little-endian bytes and decoded as binary, so the same size checks apply), or
from a shared-memory region. Every output gets one ``raw_output_contents`` entry, empty for
an output written to shared memory: clients find an output's bytes by its position.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from app.api.deps import Services
from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode
from app.core.offload import OFF_LOOP_BYTES, off_loop_if
from app.inference.deadline import RunControl
from app.oip.catalogue import SERVER_NAME, SERVER_VERSION, VERSION, OipModel, TensorMeta
from app.oip.datatypes import BYTES
from app.oip.exchange import SHM_REGION, Exchange, PlacedOutput, WireInput, WireOutput
from app.oip.service import InferCall, InferOutcome, OipService
from app.oip.tensors import InputTensor, binary_bytes

log = logging.getLogger("poolserve")

SERVICE = "inference.GRPCInferenceService"
CODE_KEY = "poolserve-code"
"""Trailing metadata key of a failed call's poolserve error code (REST's envelope ``code``)."""
ServicesSource = Callable[[], Services | None]
Rpc = Callable[[Any, Any], Coroutine[Any, Any, Any]]

_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_CONTENTS: dict[str, tuple[str, np.dtype[Any]]] = {
    "FP32": ("fp32_contents", np.dtype("<f4")),
    "FP64": ("fp64_contents", np.dtype("<f8")),
    "INT32": ("int_contents", np.dtype("<i4")),
    "INT64": ("int64_contents", np.dtype("<i8")),
}
"""Datatype -> the typed ``contents`` field that carries it, and its binary form."""
_LENGTH = struct.Struct("<I")


def grpc_status(error: ApiError) -> Any:
    """The gRPC status code of an ApiError, from its HTTP status."""
    if error.code is ErrorCode.CANCELLED:
        return grpc.StatusCode.CANCELLED
    default = grpc.StatusCode.INVALID_ARGUMENT if error.status < 500 else grpc.StatusCode.INTERNAL
    return _BY_STATUS.get(error.status, default)


def peer_is_local(peer: str) -> bool:
    """Whether a gRPC peer (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``, ``unix:...``) is on
    this host's loopback, as REST judges its clients; unix sockets are local."""
    kind, _, address = unquote(peer).partition(":")
    if kind in ("unix", "unix-abstract"):
        return True
    if kind not in ("ipv4", "ipv6"):
        return False
    host = address.rpartition(":")[0].removeprefix("[").removesuffix("]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# parameters ---------------------------------------------------------------------------------


def parameters(entries: Mapping[str, Any]) -> dict[str, Any]:
    """A protocol parameter map as plain values (the one field each InferParameter sets)."""
    values = {}
    for key, parameter in entries.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise ApiError(ErrorCode.VALIDATION_ERROR, f"parameter {key!r} carries no value")
        values[key] = getattr(parameter, choice)
    return values


def set_parameters(target: Any, values: Mapping[str, Any]) -> None:
    """Fill a protocol parameter map from plain values."""
    for key, value in values.items():
        parameter = target[key]
        if isinstance(value, bool):  # before int: bool is an int
            parameter.bool_param = value
        elif isinstance(value, int):
            parameter.int64_param = value
        elif isinstance(value, float):
            parameter.double_param = value
        else:
            parameter.string_param = str(value)


# inputs and outputs -------------------------------------------------------------------------


def wire_inputs(request: Any, settings: Settings) -> list[WireInput]:
    """Each input with its data source. Raw contents go, in order, to the inputs that are
    neither in shared memory nor typed (as Triton hands them out): one each, no more."""
    raw, tensors = request.raw_input_contents, request.inputs
    params = [parameters(t.parameters) for t in tensors]
    takers = [
        i
        for i, t in enumerate(tensors)
        if SHM_REGION not in params[i] and not t.HasField("contents")
    ]
    if raw and len(raw) != len(takers):
        raise ApiError(
            ErrorCode.BINARY_SIZE_MISMATCH,
            f"the request has {len(raw)} raw_input_contents for {len(takers)} inputs that take "
            "their data from there",
        )
    if raw and any(t.HasField("contents") for t in tensors):
        raise ApiError(
            ErrorCode.BINARY_SIZE_MISMATCH,
            "send input data as raw_input_contents or as typed contents, not both",
        )
    sources = dict(zip(takers, raw, strict=False))  # empty when there is no raw data
    wires = []
    for i, tensor in enumerate(tensors):
        data = None
        if i in sources:
            data = memoryview(sources[i])
        elif SHM_REGION not in params[i] and tensor.HasField("contents"):
            data = contents_bytes(tensor, settings)
        shape = list(tensor.shape)
        wires.append(WireInput(tensor.name, tensor.datatype, shape, params[i], None, data))
    return wires


def contents_bytes(tensor: Any, settings: Settings) -> memoryview:
    """Typed contents as the binary bytes of the datatype, to be checked as binary data is."""
    kind, contents = tensor.datatype, tensor.contents
    if kind == BYTES:
        elements = contents.bytes_contents
        _cap_contents(tensor.name, len(elements), settings)
        return memoryview(b"".join(_LENGTH.pack(len(e)) + e for e in elements))
    if kind not in _CONTENTS:
        raise ApiError(
            ErrorCode.UNSUPPORTED_DTYPE,
            f"input {tensor.name}: {kind!r} data cannot travel as typed contents; send it in "
            "raw_input_contents",
        )
    field, dtype = _CONTENTS[kind]
    values = getattr(contents, field)
    _cap_contents(tensor.name, len(values), settings)
    return np.fromiter(values, dtype, len(values)).data.cast("B")


def _cap_contents(name: str, count: int, settings: Settings) -> None:
    """Before the conversion, which allocates up to 8 bytes per element."""
    if count > settings.max_tensor_elements:
        raise ApiError(
            ErrorCode.TENSOR_TOO_LARGE,
            f"input {name} has over max_tensor_elements ({settings.max_tensor_elements})",
        )


def payload_bytes(request: Any) -> int:
    """About how many bytes the request's inputs carry (raw, or typed at <= 8 per element)."""
    size = sum(len(r) for r in request.raw_input_contents)
    for tensor in request.inputs:
        if tensor.HasField("contents"):
            contents = tensor.contents
            size += sum(len(b) for b in contents.bytes_contents)
            size += 8 * sum(len(getattr(contents, f)) for f, _ in _CONTENTS.values())
    return size


def decode_inputs(
    exchange: Exchange, model: OipModel, request: Any, settings: Settings
) -> dict[str, InputTensor]:
    return exchange.inputs(model, wire_inputs(request, settings))


def wire_outputs(request: Any) -> list[WireOutput] | None:
    """The outputs asked for, or None for every output."""
    return [WireOutput(o.name, parameters(o.parameters)) for o in request.outputs] or None


def infer_response(
    model: OipModel,
    request_id: str,
    reported: Mapping[str, Any],
    placed: Sequence[PlacedOutput],
) -> Any:
    response = pb.ModelInferResponse(model_name=model.name, model_version=VERSION, id=request_id)
    set_parameters(response.parameters, reported)
    for output in placed:
        tensor = response.outputs.add(name=output.name, datatype=output.datatype)
        tensor.shape.extend(output.shape)
        set_parameters(tensor.parameters, output.parameters)
        data = b"" if output.data is None else binary_bytes(output.data).tobytes()
        response.raw_output_contents.append(data)
    return response


def _tensor_metadata(tensors: Iterable[TensorMeta]) -> list[Any]:
    meta = pb.ModelMetadataResponse.TensorMetadata
    return [meta(name=t.name, datatype=t.datatype, shape=t.shape) for t in tensors]


# the service --------------------------------------------------------------------------------


class InferenceServicer:
    """The RPCs poolserve implements; any other method answers UNIMPLEMENTED."""

    def __init__(self, services: ServicesSource, settings: Settings) -> None:
        self._services = services
        self._settings = settings

    def _loaded(self) -> Services:
        services = self._services()
        if services is None:
            raise ApiError(
                ErrorCode.NOT_READY, "the models are still loading", {"Retry-After": "5"}
            )
        return services

    def rpcs(self) -> dict[str, Rpc]:
        """Method name -> handler, each answering an ApiError with its gRPC status."""
        methods = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "RepositoryIndex": self.repository_index,
            "ModelInfer": self.model_infer,
            "SystemSharedMemoryStatus": self.shm_status,
            "SystemSharedMemoryRegister": self.shm_register,
            "SystemSharedMemoryUnregister": self.shm_unregister,
        }
        return {name: guarded(method) for name, method in methods.items()}

    async def server_live(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._services() is not None)

    async def model_ready(self, request: Any, context: Any) -> Any:
        oip = self._loaded().oip
        try:
            oip.model(request.name, request.version)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return pb.ModelReadyResponse(ready=False)  # as Triton: unknown is not ready
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: Any, context: Any) -> Any:
        extensions = ["binary_tensor_data"]
        if self._settings.shared_memory:
            extensions.append("system_shared_memory")
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=extensions
        )

    async def model_metadata(self, request: Any, context: Any) -> Any:
        model = self._loaded().oip.model(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[VERSION],
            platform=model.platform,
            inputs=_tensor_metadata(model.inputs),
            outputs=_tensor_metadata(model.outputs),
        )

    async def repository_index(self, request: Any, context: Any) -> Any:
        entry = pb.RepositoryIndexResponse.ModelIndex
        names = self._loaded().oip.catalogue
        models = [entry(name=name, version=VERSION, state="READY") for name in names]
        return pb.RepositoryIndexResponse(models=models)

    async def model_infer(self, request: Any, context: Any) -> Any:
        services, settings = self._loaded(), self._settings
        target = services.oip.model(request.model_name, request.model_version)
        params = parameters(request.parameters)
        outputs = wire_outputs(request)
        exchange = Exchange(settings, services.shm, peer_is_local(context.peer()))
        exchange.check_regions(outputs)
        large = payload_bytes(request) > OFF_LOOP_BYTES
        inputs = await off_loop_if(large, decode_inputs, exchange, target, request, settings)
        # json_reply False: gRPC outputs always travel as binary
        call = InferCall(target, inputs, params, False, RunControl())
        outcome = await _infer(services.oip, call)
        large = sum(v.nbytes for v in outcome.outputs.values()) > OFF_LOOP_BYTES
        placed = await off_loop_if(large, exchange.place, outcome.outputs, outputs, True)
        return await off_loop_if(
            large, infer_response, target, request.id, outcome.parameters, placed
        )

    def _exchange(self, context: Any) -> Exchange:
        return Exchange(self._settings, self._loaded().shm, peer_is_local(context.peer()))

    async def shm_status(self, request: Any, context: Any) -> Any:
        registry = self._exchange(context).registry()
        status = pb.SystemSharedMemoryStatusResponse.RegionStatus
        regions = {
            s.name: status(name=s.name, key=s.key, offset=s.offset, byte_size=s.byte_size)
            for s in registry.status(request.name)
        }
        return pb.SystemSharedMemoryStatusResponse(regions=regions)

    async def shm_register(self, request: Any, context: Any) -> Any:
        registry = self._exchange(context).registry()
        args = (request.name, request.key, request.offset, request.byte_size)
        await off_loop_if(True, registry.register, *args)  # opens and maps a file
        return pb.SystemSharedMemoryRegisterResponse()

    async def shm_unregister(self, request: Any, context: Any) -> Any:
        self._exchange(context).registry().unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()


async def _infer(oip: OipService, call: InferCall) -> InferOutcome:
    """The call's outcome; its runs are stopped when the RPC is cancelled (the client went
    away or its deadline passed), so that no run keeps a slot for nobody."""
    try:
        return await oip.infer(call)
    except asyncio.CancelledError:
        if call.control is not None:
            call.control.stop(ErrorCode.CANCELLED)
        raise


def guarded(method: Rpc) -> Rpc:
    """The RPC with an ApiError answered as its gRPC status (poolserve's code in the trailing
    metadata) and any other exception logged and answered INTERNAL, without details."""

    async def rpc(request: Any, context: Any) -> Any:
        try:
            return await method(request, context)
        except ApiError as exc:
            error = exc
        except Exception:
            log.exception("unhandled error in gRPC %s", getattr(method, "__name__", "call"))
            error = ApiError(ErrorCode.INTERNAL, "internal server error")
        metadata = [(CODE_KEY, error.code.value)]
        if "Retry-After" in error.headers:
            metadata.append(("retry-after", error.headers["Retry-After"]))
        return await context.abort(grpc_status(error), error.message, tuple(metadata))  # raises

    return rpc


def method_handlers(servicer: InferenceServicer) -> dict[str, Any]:
    """grpc method handlers for the servicer's RPCs, with the protocol's message types."""
    methods = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name
    handlers = {}
    for name, rpc in servicer.rpcs().items():
        method = methods[name]
        request = getattr(pb, method.input_type.name)
        response = getattr(pb, method.output_type.name)
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            rpc,
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    return handlers
