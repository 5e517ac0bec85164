"""The HTTP floor for /pool: a bare ASGI app under the same uvicorn that reads the whole
body and answers a quarter of its length in bytes (what max 2x2 returns), doing no other
work. Its round trip is what HTTP on this host costs before poolserve does anything."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send


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
