"""The HTTP floor for /pool: a bare ASGI app under the same uvicorn that reads the whole
body and answers a quarter of its length in bytes (what max 2x2 returns), doing no other
work. Its round trip is what HTTP on this host costs before poolserve does anything.

``stages`` splits that floor for ``bench.pool_breakdown``: ``/receive`` reads the body
with the service's own ``read_aligned`` and answers nothing, noting the size of every chunk
uvicorn delivered (``/chunks`` answers the last request's as JSON); ``/reply?bytes=N``
answers N prepared bytes; any other path reads the body and answers nothing."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from app.api.aligned_body import read_aligned


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    reply = bytes(len(b"".join(chunks)) // 4)
    headers = [(b"content-length", b"%d" % len(reply))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": reply})


_last_chunks: list[int] = []
_replies: dict[int, bytes] = {}
"""Reply bodies by size, made once: the reply's own allocation is the encode stage's."""


async def stages(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/receive":
        await _receive_aligned(scope, receive)
        await _answer(send, b"")
    elif path == "/chunks":
        await _answer(send, json.dumps(_last_chunks).encode())
    elif path == "/reply":
        size = int(parse_qs(scope["query_string"].decode()).get("bytes", ["0"])[0])
        await _drain(receive)
        await _answer(send, _replies.setdefault(size, bytes(size)))
    else:
        await _drain(receive)
        await _answer(send, b"")


async def _receive_aligned(scope: Scope, receive: Receive) -> None:
    sizes: list[int] = []

    async def noted() -> Message:  # one wrapper, as the service's body limit adds one
        message = await receive()
        sizes.append(len(message.get("body", b"")))
        return message

    await read_aligned(Request(scope, noted), 0)
    _last_chunks[:] = sizes


async def _drain(receive: Receive) -> None:
    while (await receive()).get("more_body"):
        pass


async def _answer(send: Send, body: bytes) -> None:
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
