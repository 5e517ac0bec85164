"""Request and response formats shared by the routes: media types, ``Accept`` with its
q-values, npy and JSON replies (large JSON encoded off the event loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response

from app.codecs.tensor import encode_npy
from app.core.errors import ApiError, ErrorCode
from app.core.offload import OFF_LOOP_ELEMENTS, off_loop_if

NPY = "application/x-npy"
JSON = "application/json"
REPLY_TYPES = (JSON, NPY)
"""What a route can answer, JSON first: it is the reply when the client does not say."""


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _ranges(accept: str) -> list[tuple[str, float]]:
    """``Accept``'s media ranges and their q-values (a malformed q counts as 0)."""
    ranges = []
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if media:
            ranges.append((media.lower(), q))
    return ranges


def _quality(offer: str, ranges: Sequence[tuple[str, float]]) -> float:
    """The q of the most specific range that matches ``offer`` (RFC 9110 12.5.1)."""
    kind = offer.split("/")[0]
    for pattern in (offer, f"{kind}/*", "*/*"):
        matches = [q for media, q in ranges if media == pattern]
        if matches:
            return max(matches)
    return 0.0


def reply_type(request: Request, offers: Sequence[str] = REPLY_TYPES) -> str:
    """The offer the client prefers; 406 when it accepts none of them."""
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return offers[0]
    ranges = _ranges(accept)
    best = max(offers, key=lambda offer: _quality(offer, ranges))  # ties: the first offer
    if _quality(best, ranges) <= 0:
        raise ApiError(
            ErrorCode.NOT_ACCEPTABLE, f"this route answers {', '.join(offers)}; Accept allows none"
        )
    return best


def wants_npy(request: Request) -> bool:
    return reply_type(request) == NPY


async def npy_response(arr: np.ndarray, headers: dict[str, str]) -> Response:
    content = await off_loop_if(arr.size > OFF_LOOP_ELEMENTS, encode_npy, arr)
    return Response(content, media_type=NPY, headers=headers)


async def json_response(body: dict[str, Any], headers: dict[str, str], elements: int) -> Response:
    """``body`` as JSON (numpy arrays written directly); a large one is encoded on a worker
    thread, so the event loop keeps answering everyone else."""
    content = await off_loop_if(elements > OFF_LOOP_ELEMENTS, _dumps, body)
    return Response(content, media_type=JSON, headers=headers)


def _dumps(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def json_tensor(arr: np.ndarray) -> dict[str, Any]:
    """``{"shape", "dtype", "data"}`` with ``data`` the array itself, flat in C order: orjson
    writes it without a Python list in between. Check finiteness first: strict JSON has no
    NaN or Infinity."""
    data = np.ascontiguousarray(arr).ravel()
    return {"shape": list(arr.shape), "dtype": arr.dtype.name, "data": data}
