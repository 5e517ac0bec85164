"""Request and response formats shared by the routes: media types, npy replies."""

from __future__ import annotations

import numpy as np
from fastapi import Request, Response

from app.codecs.tensor import check_finite, encode_npy
from app.core.errors import ApiError, ErrorCode, log

NPY = "application/x-npy"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def wants_npy(request: Request) -> bool:
    return NPY in request.headers.get("accept", "").lower()


def npy_response(arr: np.ndarray, headers: dict[str, str]) -> Response:
    return Response(encode_npy(arr), media_type=NPY, headers=headers)


def check_output(arr: np.ndarray, what: str) -> None:
    """Our own output must be finite: JSON has no NaN, and NaN here is a fault."""
    try:
        check_finite(arr)
    except ValueError:
        log.error("%s produced non-finite values from finite input", what)
        raise ApiError(ErrorCode.INTERNAL, "internal server error") from None
