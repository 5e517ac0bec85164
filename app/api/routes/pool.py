"""POST /pool: pool a tensor with any registered op, in one of three body forms."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.datastructures import FormData, UploadFile

from app.api.aligned_body import read_aligned
from app.api.deps import ServicesDep, SettingsDep
from app.api.disconnect import stopped_when_gone
from app.api.negotiation import (
    NPY,
    json_response,
    json_tensor,
    media_type,
    npy_response,
    wants_npy,
)
from app.codecs.tensor import (
    WIRE_DTYPES,
    TensorLimits,
    check_output,
    decode_json_tensor,
    parse_npy,
)
from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode, responses
from app.core.offload import OFF_LOOP_BYTES, off_loop_if
from app.inference.pool import PoolRequest, PoolResult
from models.pooling.errors import describe_validation_errors
from models.pooling.registry import extra_input_names, extra_input_spec

router = APIRouter(tags=["pool"])
EXTRA_INPUTS = extra_input_names()
"""Every op input other than x, from the registry (max_unpool's indices, bilinear2's y...)."""
RESERVED_QUERY = frozenset({"op", "model"})


class JsonTensor(BaseModel):
    """A tensor as JSON: ``data`` flat (C order) or nested as ``shape``."""

    model_config = ConfigDict(extra="forbid")
    shape: list[Any] = Field(description="dims, e.g. [1, 3, 8, 8]")
    dtype: str = Field("float32", description="float32, float16 or int64 (indices)")
    data: list[Any] = Field(description="the values, flat or nested")


class PoolJsonFields(BaseModel):
    """The JSON body form of /pool, without the extra inputs (``PoolJsonBody`` adds them)."""

    model_config = ConfigDict(extra="forbid")
    op: str = Field(description="a registered op name (GET /models lists them)")
    params: dict[str, Any] = Field(default_factory=dict, description="the op's parameters")
    model: str | None = Field(None, description="learnable ops: the repository entry to run")
    tensor: JsonTensor


PoolJsonBody: type[PoolJsonFields] = create_model(
    "PoolJsonBody",
    __base__=PoolJsonFields,
    __doc__="The JSON body form of /pool.",
    **{  # type: ignore[call-overload]
        name: (JsonTensor | None, Field(None, description=extra_input_spec(name).doc))
        for name in EXTRA_INPUTS
    },
)


class PoolResponse(BaseModel):
    op: str
    params: dict[str, Any] = Field(description="the resolved params, defaults included")
    tensor: JsonTensor
    indices: JsonTensor | None = None


def _npy_schema(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


OPENAPI_EXTRA: dict[str, Any] = {
    "parameters": [
        {"name": "op", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "npy form: the op (the JSON and multipart forms carry it in the body)"},
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "npy form, learnable ops: the repository entry holding the weights"},
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PoolJsonBody"}},
            NPY: {"schema": _npy_schema(
                "one .npy tensor; op, model and the op's params in the query string, e.g. "
                "/pool?op=max&kernel_size=2&stride=2 (values are JSON: padding=[0,1,0,1])")},
            "multipart/form-data": {"schema": {
                "type": "object",
                "required": ["op", "tensor"],
                "properties": {
                    "op": {"type": "string"},
                    "params": {"type": "string", "description": "the op's params as a JSON object"},
                    "model": {"type": "string"},
                    "tensor": _npy_schema("the input, .npy"),
                    **{name: _npy_schema(f"{extra_input_spec(name).doc}, .npy")
                       for name in EXTRA_INPUTS},
                },
            }},
        },
    },
}  # fmt: skip


OK_RESPONSE: dict[str, Any] = {
    "content": {NPY: {"schema": _npy_schema("the result, with Accept: application/x-npy")}},
    "headers": {
        "X-Poolserve-Provider": {
            "schema": {"type": "string"},
            "description": "the execution provider that ran it",
        }
    },
}


def openapi_components() -> dict[str, Any]:
    """Schemas the request body refers to (FastAPI only collects those of declared bodies)."""
    schema = PoolJsonBody.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"PoolJsonBody": schema, **defs}


def _limits(settings: Settings, json_form: bool) -> TensorLimits:
    count = settings.max_json_tensor_elements if json_form else settings.max_tensor_elements
    return TensorLimits(count, settings.max_tensor_rank)


def _loads(raw: bytes | str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # includes UnicodeDecodeError and huge ints
        raise ApiError(ErrorCode.INVALID_JSON, f"{what} is not valid JSON") from None


def _from_json(raw: bytes, settings: Settings) -> PoolRequest:
    try:
        body = PoolJsonBody.model_validate(_loads(raw, "the body"))
    except ValidationError as exc:
        problems = exc.errors(include_input=False, include_url=False)
        raise ApiError(
            ErrorCode.VALIDATION_ERROR, describe_validation_errors(problems, "body")
        ) from None
    limits = _limits(settings, json_form=True)
    tensors = {}
    for name, value in (("x", body.tensor), *((n, getattr(body, n)) for n in EXTRA_INPUTS)):
        if value is not None:
            tensors[name] = decode_json_tensor(
                value.shape, value.dtype, value.data, limits, WIRE_DTYPES
            )
    return PoolRequest(body.op, body.params, tensors, body.model)


def _query_value(values: list[str]) -> Any:
    """A query value as JSON when it parses (2, true, [0,1]), else the string itself."""
    parsed = []
    for value in values:
        try:
            parsed.append(json.loads(value))
        except (ValueError, RecursionError):
            parsed.append(value)
    return parsed[0] if len(parsed) == 1 else parsed


def _from_npy(request: Request, raw: memoryview, settings: Settings) -> PoolRequest:
    query = request.query_params
    if any(len(query.getlist(key)) > 1 for key in RESERVED_QUERY):
        raise ApiError(ErrorCode.INVALID_QUERY, "give op and model at most once each")
    op = query.get("op")
    if not op:
        raise ApiError(ErrorCode.MISSING_OP, "the npy form names the op in the query: ?op=max")
    params = {k: _query_value(query.getlist(k)) for k in query if k not in RESERVED_QUERY}
    x = parse_npy(raw, _limits(settings, json_form=False), WIRE_DTYPES)
    return PoolRequest(op, params, {"x": x}, query.get("model"))


async def _from_multipart(request: Request, settings: Settings) -> PoolRequest:
    form = await request.form(max_files=1 + len(EXTRA_INPUTS), max_fields=3)
    try:
        _refuse_duplicates(form)
        op = form.get("op")
        if not isinstance(op, str) or not op:
            raise ApiError(ErrorCode.MISSING_OP, "the multipart form needs an op field")
        raw_params = form.get("params")
        params = _loads(raw_params, "the params part") if isinstance(raw_params, str) else {}
        if not isinstance(params, dict):
            raise ApiError(ErrorCode.INVALID_PARAMS, "the params part must be a JSON object")
        model = form.get("model")
        limits = _limits(settings, json_form=False)
        tensors = {}
        for field_name, name in (("tensor", "x"), *((n, n) for n in EXTRA_INPUTS)):
            part = form.get(field_name)
            if isinstance(part, UploadFile):
                tensors[name] = parse_npy(await part.read(), limits, WIRE_DTYPES)
            elif part is not None:
                raise ApiError(
                    ErrorCode.MISSING_TENSOR, f"the {field_name} part must be a .npy file"
                )
        return PoolRequest(op, params, tensors, model if isinstance(model, str) else None)
    finally:
        await form.close()


def _refuse_duplicates(form: FormData) -> None:
    """A part sent twice would make one of them win silently: refuse it instead."""
    counts = Counter(key for key, _ in form.multi_items())
    if any(n > 1 for n in counts.values()):
        raise ApiError(ErrorCode.DUPLICATE_PART, "every multipart field may appear once")


def _headers(result: PoolResult) -> dict[str, str]:
    headers = {"X-Poolserve-Provider": result.provider, "X-Poolserve-Lowering": result.lowering}
    for name, how in result.drawn.items():  # X-Poolserve-Samples: client, or how it was drawn
        headers[f"X-Poolserve-{name.capitalize()}"] = how
    return headers


async def _respond(result: PoolResult, npy: bool) -> Response:
    for name, value in result.outputs.items():
        check_output(value, f"pool:{result.op} {name}")
    headers = _headers(result)
    if npy:
        if "indices" in result.outputs:
            raise ApiError(
                ErrorCode.NOT_ACCEPTABLE,
                "this op returns values and indices; ask for JSON to get both",
            )
        return await npy_response(result.outputs["y"], headers)
    y = result.outputs["y"]
    body: dict[str, Any] = {"op": result.op, "params": result.params, "tensor": json_tensor(y)}
    if "indices" in result.outputs:
        body["indices"] = json_tensor(result.outputs["indices"])
    return await json_response(body, headers, sum(v.size for v in result.outputs.values()))


async def _read(request: Request, settings: Settings) -> PoolRequest:
    kind = media_type(request)
    if kind == "multipart/form-data":
        return await _from_multipart(request, settings)
    if kind == "application/json":
        # parsing a large JSON tensor takes a while: off the event loop too
        return await anyio.to_thread.run_sync(_from_json, await request.body(), settings)
    if kind in (NPY, "application/octet-stream"):
        raw = await read_aligned(request, 0)  # numpy pads its header to 64 bytes
        return await off_loop_if(len(raw) > OFF_LOOP_BYTES, _from_npy, request, raw, settings)
    raise ApiError(
        ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"send application/json, {NPY} or multipart/form-data"
    )


@router.post(
    "/pool",
    summary="Pool a tensor with any registered op",
    response_model=PoolResponse,
    responses={200: OK_RESPONSE, **responses(400, 406, 413, 415, 422, 500, 503, 504)},
    openapi_extra=OPENAPI_EXTRA,
)  # fmt: skip
async def pool(request: Request, services: ServicesDep, settings: SettingsDep) -> Response:
    """Pool one tensor (JSON, npy or multipart body); JSON or npy response."""
    npy = wants_npy(request)  # an unacceptable Accept is refused before any work
    call = await _read(request, settings)
    async with stopped_when_gone(request) as control:
        result = await services.pools.run(replace(call, json_reply=not npy, control=control))
    return await _respond(result, npy)
