"""The REST form of an inference request and response, with the binary tensor data extension.

A body is a JSON header, then (when ``Inference-Header-Content-Length`` says where the
header ends) each binary input's bytes in the order the header lists them, each as long as
its ``binary_data_size``. Every length is checked against the body and the limits before
anything is decoded; a binary input is then a view of the body, never a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode
from app.oip.catalogue import VERSION, OipModel
from app.oip.exchange import PlacedOutput, WireInput, WireOutput
from app.oip.tensors import binary_bytes, json_data
from models.pooling.errors import describe_validation_errors

HEADER_LENGTH = "inference-header-content-length"
BINARY_SIZE = "binary_data_size"
Scalar = str | int | float | bool


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[Any] = Field(description="dims; checked as non-negative integers")
    datatype: str
    parameters: dict[str, Scalar] = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: dict[str, Scalar] = Field(default_factory=dict)


class InferRequestBody(BaseModel):
    """The JSON of ``POST /v2/models/{model}/infer`` (the protocol's ``$inference_request``)."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    parameters: dict[str, Scalar] = Field(default_factory=dict)
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


@dataclass(frozen=True)
class RestRequest:
    id: str | None
    parameters: Mapping[str, Scalar]
    inputs: list[WireInput]
    outputs: list[WireOutput] | None

    @property
    def binary_default(self) -> bool:
        value = self.parameters.get("binary_data_output", False)
        if not isinstance(value, bool):
            raise ApiError(ErrorCode.VALIDATION_ERROR, "binary_data_output must be a boolean")
        return value


def header_length(value: str | None, body_length: int, settings: Settings) -> int:
    """Where the JSON header ends: the whole body without the header field."""
    if value is None:
        length = body_length
    elif not value.isdigit() or len(value) > 20 or int(value) > body_length:
        raise ApiError(
            ErrorCode.INVALID_INFERENCE_HEADER,
            f"Inference-Header-Content-Length must be an integer of at most the body's "
            f"{body_length} bytes",
        )
    else:
        length = int(value)
    if length == 0:
        raise ApiError(ErrorCode.INVALID_INFERENCE_HEADER, "the request needs a JSON header")
    if length > settings.max_json_body_bytes:
        raise ApiError(
            ErrorCode.BODY_TOO_LARGE,
            f"the JSON header is over max_json_body_bytes ({settings.max_json_body_bytes})",
        )
    return length


def parse_request(body: memoryview, length: int) -> RestRequest:
    """The request's header parsed and its binary inputs cut from the rest of the body."""
    parsed = _parse_header(body[:length])
    binary = body[length:]
    inputs, at = [], 0
    for item in parsed.inputs:
        size = item.parameters.get(BINARY_SIZE)
        raw = None
        if size is not None:
            raw, at = _binary_part(item, size, binary, at)
        params = {k: v for k, v in item.parameters.items() if k != BINARY_SIZE}
        inputs.append(WireInput(item.name, item.datatype, item.shape, params, item.data, raw))
    if at != len(binary):
        raise ApiError(
            ErrorCode.BINARY_SIZE_MISMATCH,
            f"the body holds {len(binary) - at} bytes after the inputs' binary_data_size",
        )
    outputs = None
    if parsed.outputs is not None:
        outputs = [WireOutput(o.name, o.parameters) for o in parsed.outputs]
    return RestRequest(parsed.id, parsed.parameters, inputs, outputs)


def _parse_header(raw: memoryview) -> InferRequestBody:
    try:
        return InferRequestBody.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise ApiError(ErrorCode.INVALID_JSON, "the inference header is not valid JSON") from None
    except ValidationError as exc:
        problems = exc.errors(include_input=False, include_url=False)
        raise ApiError(
            ErrorCode.VALIDATION_ERROR, describe_validation_errors(problems, "request")
        ) from None


def _binary_part(
    item: RequestInput, size: object, binary: memoryview, at: int
) -> tuple[memoryview, int]:
    if type(size) is not int or size < 0:
        raise ApiError(ErrorCode.BINARY_SIZE_MISMATCH, "binary_data_size must be an integer >= 0")
    if item.data is not None:
        raise ApiError(
            ErrorCode.BINARY_SIZE_MISMATCH, f"input {item.name} has both data and binary data"
        )
    if size > len(binary) - at:
        raise ApiError(
            ErrorCode.BINARY_SIZE_MISMATCH,
            f"input {item.name} declares {size} binary bytes; the body holds "
            f"{len(binary) - at} more",
        )
    return binary[at : at + size], at + size


def response_parts(
    model: OipModel,
    request_id: str | None,
    parameters: Mapping[str, Any],
    placed: list[PlacedOutput],
) -> tuple[bytes, list[memoryview]]:
    """The response's JSON header and, in the header's order, its binary outputs."""
    outputs, parts = [], []
    for output in placed:
        entry = output.as_json()
        if output.data is not None and output.binary:
            data = binary_bytes(output.data)
            entry.setdefault("parameters", {})[BINARY_SIZE] = len(data)
            parts.append(data)
        elif output.data is not None:
            entry["data"] = json_data(output.data)
        outputs.append(entry)
    header: dict[str, Any] = {"model_name": model.name, "model_version": VERSION}
    if request_id is not None:
        header["id"] = request_id
    if parameters:
        header["parameters"] = dict(parameters)
    header["outputs"] = outputs
    return orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY), parts
