"""The Open Inference Protocol's REST routes (KServe v2, as Triton serves them): health,
server and model metadata, readiness, inference with binary tensors, and the system
shared-memory extension. Errors keep the one envelope, whose ``error`` is the protocol's."""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from app.api.aligned_body import read_aligned
from app.api.deps import Services, ServicesDep, SettingsDep, get_services
from app.api.disconnect import stopped_when_gone
from app.api.negotiation import JSON
from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode, responses
from app.core.offload import OFF_LOOP_BYTES, off_loop_if
from app.oip.catalogue import SERVER_NAME, SERVER_VERSION, VERSION, OipModel
from app.oip.datatypes import BYTES
from app.oip.exchange import Exchange
from app.oip.rest import (
    HEADER_LENGTH,
    InferRequestBody,
    RestRequest,
    header_length,
    parse_request,
    response_parts,
)
from app.oip.service import InferCall, InferOutcome
from models.pooling.errors import describe_validation_errors

router = APIRouter(prefix="/v2", tags=["oip"])
MAX_REGISTER_BYTES = 4096


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    key: str
    offset: int = 0
    byte_size: int


@router.get("", summary="Server metadata")
async def server_metadata(settings: SettingsDep) -> dict[str, Any]:
    extensions = ["binary_tensor_data"]
    if settings.shared_memory:
        extensions.append("system_shared_memory")
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": extensions}


@router.get("/health/live", summary="The process serves")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Every model is loaded", responses=responses(503))
async def ready(request: Request) -> dict[str, bool]:
    get_services(request)  # 503 until the models are loaded
    return {"ready": True}


@router.post("/repository/index", summary="Every model and its state", responses=responses(503))
async def repository_index(services: ServicesDep) -> list[dict[str, str]]:
    return [{"name": name, "version": VERSION, "state": "READY"} for name in services.oip.catalogue]


@router.get("/models/{model}", summary="Model metadata", responses=responses(404, 503))
@router.get("/models/{model}/versions/{version}", include_in_schema=False)
async def model_metadata(
    model: str, services: ServicesDep, version: str | None = None
) -> dict[str, object]:
    return services.oip.model(model, version).metadata()


@router.get("/models/{model}/ready", summary="Model readiness", responses=responses(404, 503))
@router.get("/models/{model}/versions/{version}/ready", include_in_schema=False)
async def model_ready(
    model: str, services: ServicesDep, version: str | None = None
) -> dict[str, object]:
    services.oip.model(model, version)
    return {"name": model, "ready": True}


BINARY_BODY = {
    "type": "string",
    "format": "binary",
    "description": "the JSON header (Inference-Header-Content-Length bytes), then the "
    "binary inputs",
}
INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferRequestBody"}},
            "application/octet-stream": {"schema": BINARY_BODY},
        },
    }
}


def openapi_components() -> dict[str, Any]:
    """The inference request's schemas (the body is read by hand, so FastAPI lacks them)."""
    schema = InferRequestBody.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"InferRequestBody": schema, **defs}


@router.post(
    "/models/{model}/infer",
    summary="Inference (JSON, or JSON plus binary tensors)",
    responses=responses(400, 403, 404, 409, 413, 415, 422, 503, 504),
    openapi_extra=INFER_BODY,
)
@router.post("/models/{model}/versions/{version}/infer", include_in_schema=False)
async def infer(
    model: str,
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    version: str | None = None,
) -> Response:
    target = services.oip.model(model, version)
    _refuse_encoding(request)
    declared = request.headers.get(HEADER_LENGTH)
    body = await read_aligned(request, _binary_start(declared))
    length = header_length(declared, len(body), settings)
    parsed = await off_loop_if(length > OFF_LOOP_BYTES, parse_request, body, length)
    exchange = Exchange(settings, services.shm, _is_local(request))
    exchange.check_regions(parsed.outputs)
    binary_default = parsed.binary_default
    # binary numeric inputs become views at once; JSON data and BYTES elements take work
    costly = length > OFF_LOOP_BYTES or _bytes_elements_size(parsed) > OFF_LOOP_BYTES
    inputs = await off_loop_if(costly, exchange.inputs, target, parsed.inputs)
    json_reply = exchange.json_reply(parsed.outputs, binary_default)
    async with stopped_when_gone(request) as control:
        call = InferCall(target, inputs, parsed.parameters, json_reply, control)
        outcome = await services.oip.infer(call)
    large = sum(v.nbytes for v in outcome.outputs.values()) > OFF_LOOP_BYTES
    return await off_loop_if(large, _reply, exchange, target, parsed, outcome)


def _bytes_elements_size(parsed: RestRequest) -> int:
    return sum(len(w.raw) for w in parsed.inputs if w.raw is not None and w.datatype == BYTES)


def _reply(
    exchange: Exchange, model: OipModel, parsed: RestRequest, outcome: InferOutcome
) -> Response:
    """Outputs placed as asked (shared memory written here), then the response."""
    placed = exchange.place(outcome.outputs, parsed.outputs, parsed.binary_default)
    header, parts = response_parts(model, parsed.id, outcome.parameters, placed)
    if not parts:
        return Response(header, media_type=JSON)
    content = b"".join((header, *parts))
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return Response(content, media_type="application/octet-stream", headers=headers)


def _binary_start(declared: str | None) -> int:
    """Where the binary tensors will start, if the header length is a plain number."""
    return int(declared) if declared and declared.isdigit() and len(declared) < 19 else 0


def _refuse_encoding(request: Request) -> None:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE, "compressed requests are not accepted; send identity"
        )


def _is_local(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# system shared memory ---------------------------------------------------------------------

SHM_ERRORS = responses(400, 403, 404, 409, 413, 422, 503)


@router.get(
    "/systemsharedmemory/status", summary="Registered shared-memory regions", responses=SHM_ERRORS
)
@router.get("/systemsharedmemory/region/{region}/status", include_in_schema=False)
async def shm_status(
    request: Request, services: ServicesDep, settings: SettingsDep, region: str = ""
) -> list[dict[str, object]]:
    registry = _exchange(request, services, settings).registry()
    return [vars(status) for status in registry.status(region)]


@router.post(
    "/systemsharedmemory/region/{region}/register",
    summary="Register a region",
    responses=SHM_ERRORS,
)
async def shm_register(
    region: str, request: Request, services: ServicesDep, settings: SettingsDep
) -> dict[str, object]:
    """The body is ``{"key", "offset", "byte_size"}`` as JSON, whatever its Content-Type
    (Triton's client sends none)."""
    registry = _exchange(request, services, settings).registry()
    body = await _register_body(request)
    await off_loop_if(True, registry.register, region, body.key, body.offset, body.byte_size)
    return {}


@router.post(
    "/systemsharedmemory/unregister", summary="Unregister every region", responses=SHM_ERRORS
)
@router.post("/systemsharedmemory/region/{region}/unregister", include_in_schema=False)
async def shm_unregister(
    request: Request, services: ServicesDep, settings: SettingsDep, region: str = ""
) -> dict[str, object]:
    _exchange(request, services, settings).registry().unregister(region)
    return {}


async def _register_body(request: Request) -> RegisterBody:
    raw = await request.body()
    if len(raw) > MAX_REGISTER_BYTES:
        raise ApiError(ErrorCode.BODY_TOO_LARGE, "a registration body is a small JSON object")
    try:
        return RegisterBody.model_validate_json(raw)
    except ValidationError as exc:
        problems = exc.errors(include_input=False, include_url=False)
        raise ApiError(
            ErrorCode.VALIDATION_ERROR, describe_validation_errors(problems, "body")
        ) from None


def _exchange(request: Request, services: Services, settings: Settings) -> Exchange:
    return Exchange(settings, services.shm, _is_local(request))
