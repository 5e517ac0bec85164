"""The one error envelope, ``{"error": "<message>", "code": "<code>"}``, for every status,
and the catalogue of every code it carries (``ErrorCode``).

``ApiError`` is what routes, engines and codecs raise; its status comes from its code. The
handlers here also wrap Starlette's own 404/405/413 and FastAPI's validation errors, and
never echo the client's input back. An unexpected exception is logged with its cause and
answered with a generic 500. The README's table of codes and the OpenAPI enum of
``ErrorBody.code`` are generated from ``ErrorCode`` (``scripts/error_table.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.core.json_response import OrjsonResponse
from app.core.request_context import note_error
from models.pooling.errors import describe_validation_errors

log = logging.getLogger("poolserve")


class ErrorCode(StrEnum):
    """Every machine code of the error envelope, with its HTTP status and what it means."""

    status: int
    meaning: str

    def __new__(cls, code: str, status: int, meaning: str) -> ErrorCode:
        member = str.__new__(cls, code)
        member._value_ = code
        member.status = status
        member.meaning = meaning
        return member

    BAD_REQUEST = "bad_request", 400, "malformed request (the framework's own 400)"
    INVALID_JSON = "invalid_json", 400, "a body or part that must be JSON is not"
    CORS_REFUSED = (
        "cors_refused",
        400,
        "a CORS preflight from an origin, or for a method or headers, that is not allowed",
    )
    UNAUTHORIZED = (
        "unauthorized",
        401,
        "API keys are set and the request carries none or a wrong one (Authorization: Bearer)",
    )
    NOT_FOUND = "not_found", 404, "no such route"
    UNKNOWN_MODEL = "unknown_model", 404, "no loaded model of that name (the message lists them)"
    UNKNOWN_VERSION = "unknown_version", 404, "a model version the model does not have (OIP)"
    UNKNOWN_REGION = "unknown_region", 404, "no registered shared-memory region of that name"
    SHARED_MEMORY_OFF = (
        "shared_memory_off",
        403,
        "system shared memory is off, or the client is not on the loopback interface",
    )
    REGION_EXISTS = "region_exists", 409, "a shared-memory region of that name is registered"
    INVALID_INFERENCE_HEADER = (
        "invalid_inference_header",
        400,
        "Inference-Header-Content-Length malformed, or beyond the body (OIP binary)",
    )
    BINARY_SIZE_MISMATCH = (
        "binary_size_mismatch",
        400,
        "binary_data_size disagrees with the shape and datatype, or with the body (OIP binary)",
    )
    METHOD_NOT_ALLOWED = "method_not_allowed", 405, "the route exists, not with this method"
    NOT_ACCEPTABLE = "not_acceptable", 406, "the result cannot be sent in the Accept format"
    BODY_TOO_LARGE = "body_too_large", 413, "body over max_body_bytes, counted on the stream"
    TENSOR_TOO_LARGE = "tensor_too_large", 413, "a tensor over max_tensor_elements"
    IMAGE_TOO_LARGE = (
        "image_too_large",
        413,
        "an image over max_image_pixels (from its header) or max_image_bytes",
    )
    TOO_MANY_IMAGES = "too_many_images", 413, "more than max_images in one request"
    TOO_MANY_REGIONS = (
        "too_many_regions",
        413,
        "shared-memory regions over max_shm_regions or max_shm_bytes",
    )
    OUTPUT_TOO_LARGE = (
        "output_too_large",
        413,
        "the result is over max_result_bytes, or JSON over max_json_result_elements",
    )
    TOO_EXPENSIVE = (
        "too_expensive",
        413,
        "estimated compute, memory or graph size over a budget (the message names the setting)",
    )
    HEADERS_TOO_LARGE = "headers_too_large", 431, "request line and headers over max_header_bytes"
    REQUEST_TIMEOUT = "request_timeout", 408, "headers or body not received within their timeout"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", 415, "a Content-Type the route does not take"
    UNSUPPORTED_MEDIA = "unsupported_media", 415, "an image format other than JPEG, PNG, WebP"
    BAD_IMAGE = "bad_image", 415, "a corrupt or truncated image"
    BAD_BASE64 = "bad_base64", 422, "a JSON image that is not standard base64 with padding"
    IMAGE_URL = "image_url", 422, "an image given as a URL: the service fetches nothing"
    VALIDATION_ERROR = "validation_error", 422, "the body or query does not match its schema"
    INVALID_REQUEST = "invalid_request", 422, "the framework's own 422"
    INVALID_QUERY = "invalid_query", 422, "a query parameter given twice"
    MISSING_OP = "missing_op", 422, "no op named in the request"
    UNKNOWN_OP = "unknown_op", 422, "no op of that name (the message lists them)"
    INVALID_PARAMS = "invalid_params", 422, "the op's params fail its schema"
    UNSUPPORTED_PARAMS = "unsupported_params", 422, "valid params that no ONNX lowering builds"
    UNEXPECTED_MODEL = "unexpected_model", 422, "a model named for an op without weights"
    MODEL_REQUIRED = "model_required", 422, "a learnable op needs the model holding its weights"
    PARAMS_MISMATCH = "params_mismatch", 422, "params other than those the model was exported with"
    MISSING_TENSOR = "missing_tensor", 422, "no input tensor, or a part that is not .npy"
    WRONG_TENSORS = "wrong_tensors", 422, "missing or unexpected extra inputs for the op"
    UNSUPPORTED_DTYPE = "unsupported_dtype", 422, "a dtype the op or codec does not take"
    INVALID_INPUT = "invalid_input", 422, "a tensor whose shape or values do not fit the op"
    BAD_NPY = "bad_npy", 422, "not a well-formed .npy file"
    PICKLE_REFUSED = "pickle_refused", 422, "an object (pickle) .npy, never loaded"
    BAD_SHAPE = "bad_shape", 422, "a shape that is not a list of non-negative integers"
    EMPTY_TENSOR = "empty_tensor", 422, "a tensor with a dimension of 0"
    SHAPE_MISMATCH = "shape_mismatch", 422, "data that does not fill the declared shape"
    BAD_VALUE = "bad_value", 422, "a value that is not a number of the dtype"
    NON_FINITE = "non_finite", 422, "NaN or infinite input values"
    NON_FINITE_RESULT = (
        "non_finite_result",
        422,
        "finite input whose result overflows (NaN or infinite)",
    )
    DUPLICATE_PART = "duplicate_part", 422, "a multipart field sent twice"
    MISSING_IMAGES = "missing_images", 422, "no images in the images field"
    IMAGE_TOO_SMALL = "image_too_small", 422, "an image smaller than the model's minimum"
    UNKNOWN_OUTPUT = "unknown_output", 422, "an output the model does not have (OIP)"
    BAD_BYTES = "bad_bytes", 422, "BYTES elements whose length prefixes do not fit their data"
    BAD_REGION = (
        "bad_region",
        422,
        "a region key outside /dev/shm, not a regular file, or smaller than declared",
    )
    REGION_BOUNDS = "region_bounds", 422, "a shared-memory offset or byte size beyond the region"
    INTERNAL = "internal", 500, "an unexpected fault (logged; no details returned)"
    NOT_READY = "not_ready", 503, "models still loading (Retry-After)"
    OVERLOADED = "overloaded", 503, "every slot and queue place taken (Retry-After)"
    UNAVAILABLE = "unavailable", 503, "the framework's own 503"
    CANCELLED = "cancelled", 503, "the run was stopped because its client went away"
    SHUTTING_DOWN = (
        "shutting_down",
        503,
        "the request outlived the drain at shutdown (drain_timeout_s)",
    )
    DEADLINE_EXCEEDED = (
        "deadline_exceeded",
        504,
        "the run passed inference_deadline_s and was stopped",
    )
    HTTP_ERROR = "http_error", 400, "any other framework error (its own status)"


HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    406: ErrorCode.NOT_ACCEPTABLE,
    413: ErrorCode.BODY_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.INVALID_REQUEST,
    503: ErrorCode.UNAVAILABLE,
}
"""The framework's own statuses, as codes."""


class ErrorBody(BaseModel):
    """The error envelope, for the OpenAPI document."""

    error: str
    code: ErrorCode


class ApiError(Exception):
    """A client-facing error: its code (which gives the status), a sentence, headers."""

    def __init__(
        self, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = code.status
        self.message = message
        self.headers = dict(headers or {})


def check_json_numbers(numbers: int, limit: int, what: str, instead: str) -> None:
    """413 ``output_too_large`` when a JSON reply would carry over ``limit`` numbers
    (``max_json_result_elements``); ``instead`` names the binary form to ask for."""
    if numbers > limit:
        raise ApiError(
            ErrorCode.OUTPUT_TOO_LARGE,
            f"{what} would be {numbers} numbers, over the {limit} a JSON reply carries "
            f"(max_json_result_elements); ask for {instead}",
        )


def envelope(
    status: int, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    note_error(code)  # for the request's access line
    body = {"error": message, "code": code}
    return OrjsonResponse(body, status_code=status, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for these error statuses, all with the envelope."""
    described = {
        400: "Malformed body (bad JSON or multipart).",
        403: "System shared memory is off, or the client is not on loopback.",
        404: "Unknown model, version or shared-memory region.",
        406: "The result cannot be given in the requested format.",
        409: "A shared-memory region of that name is registered already.",
        413: "Body, tensor or image over a limit.",
        415: "Unsupported or corrupt media.",
        422: "Invalid parameters, tensor or values (non_finite for NaN/Inf).",
        500: "Unexpected fault (logged; no details returned).",
        503: "Not ready, overloaded (with Retry-After), or cancelled.",
        504: "The run passed inference_deadline_s and was stopped.",
    }
    return {s: {"model": ErrorBody, "description": described[s]} for s in statuses}


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ApiError):
        raise exc
    return envelope(exc.status, exc.code, exc.message, exc.headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    code = HTTP_CODES.get(status, ErrorCode.HTTP_ERROR)
    return envelope(status, code, detail, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        raise exc
    message = describe_validation_errors(exc.errors(), "request")
    return envelope(422, ErrorCode.VALIDATION_ERROR, message)


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    """The client left before its body arrived: nobody reads the answer, nothing broke."""
    log.info("client gone during %s %s", request.method, request.url.path)
    return envelope(
        ErrorCode.CANCELLED.status,
        ErrorCode.CANCELLED,
        "the client went away",
        {"Connection": "close"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # the connection's state is unknown after a fault: end it cleanly, say so to the client
    headers = {"Connection": "close"}
    return envelope(500, ErrorCode.INTERNAL, "internal server error", headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
