"""Receiving a body into one buffer, with a chosen offset on a 64-byte boundary.

``request.body()`` joins the received chunks into a new ``bytes``: one more copy of the whole
body. With a declared ``Content-Length`` the chunks can go straight into a buffer of that
size instead, placed so that the binary tensors after a JSON header of known length start
aligned: NumPy and onnxruntime then read them in place, where a misaligned view would be
copied or read slowly. The body limit middleware has already refused a declared length
over the limit, and the server never delivers more bytes than declared.
"""

from __future__ import annotations

import numpy as np
from fastapi import Request

from app.core.errors import ApiError, ErrorCode

ALIGN = 64


async def read_aligned(request: Request, aligned_at: int) -> memoryview:
    """The whole body, with byte ``aligned_at`` of it on a 64-byte boundary when the client
    declared its length (else as ``request.body()`` gives it)."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or aligned_at > int(declared):
        return memoryview(await request.body())
    size = int(declared)
    store = np.empty(size + ALIGN, np.uint8)
    start = -(store.ctypes.data + aligned_at) % ALIGN
    body = store.data[start : start + size]
    received = 0
    async for chunk in request.stream():
        if received + len(chunk) > size:
            raise ApiError(ErrorCode.BAD_REQUEST, "the body is longer than its Content-Length")
        body[received : received + len(chunk)] = chunk
        received += len(chunk)
    if received != size:
        raise ApiError(ErrorCode.BAD_REQUEST, "the body is shorter than its Content-Length")
    return body
