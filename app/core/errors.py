"""The one error envelope, ``{"error": "<message>", "code": "<code>"}``, for every status.

``ApiError`` is what routes raise; codec errors carry their own status and code. The
handlers here also wrap Starlette's own 404/405/413 and FastAPI's validation errors, and
never echo the client's input back. An unexpected exception is logged with its cause and
answered with a generic 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.codecs.errors import CodecError

log = logging.getLogger("poolserve")

HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


class ErrorBody(BaseModel):
    """The error envelope, for the OpenAPI document."""

    error: str
    code: str


class ApiError(Exception):
    """A client-facing error: status, machine code, a sentence, optional headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def envelope(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for these error statuses, all with the envelope."""
    described = {
        400: "Malformed body (bad JSON or multipart).",
        404: "Unknown model.",
        406: "The result cannot be given in the requested format.",
        413: "Body, tensor or image over a limit.",
        415: "Unsupported or corrupt media.",
        422: "Invalid parameters, tensor or values (non_finite for NaN/Inf).",
        500: "Unexpected fault (logged; no details returned).",
        503: "Not ready, or overloaded (with Retry-After).",
    }
    return {s: {"model": ErrorBody, "description": described[s]} for s in statuses}


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is invalid"


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ApiError):
        raise exc
    return envelope(exc.status, exc.code, exc.message, exc.headers)


async def _codec_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, CodecError):
        raise exc
    return envelope(exc.status, exc.code, exc.message)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    code = HTTP_CODES.get(status, "http_error")
    return envelope(status, code, detail, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        raise exc
    return envelope(422, "validation_error", _describe_validation(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return envelope(500, "internal", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(CodecError, _codec_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
