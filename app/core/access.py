"""The outermost middleware: each request's id (the client's ``X-Request-ID`` when sane, else
a new one), echoed on every reply, and one access line per request when it ends.

The access line names the route template (``/v2/models/{model}/infer``), never the raw
path, and counts body bytes without keeping any: no client data reaches a log line beyond
the method, a sane model or op name and the request id.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import ErrorCode, envelope
from app.core.request_context import (
    REQUEST_ID_HEADER,
    RequestContext,
    begin,
    end,
    note_target,
    request_id_from,
)

log = logging.getLogger("poolserve.access")
faults = logging.getLogger("poolserve")
POOL_PREFIX = "pool:"
"""How the engines label /pool requests: ``pool:<op>``."""


class RequestContextMiddleware:
    """Sets the request context, adds ``X-Request-ID`` to the reply, logs the access line;
    an unexpected fault is answered 500 here, so that its reply carries the id too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        context = RequestContext(request_id_from(headers.get(REQUEST_ID_HEADER.encode())))
        token = begin(context)
        tally = _Tally()

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                tally.bytes_in += len(message.get("body", b""))
            return message

        async def stamped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                tally.status = int(message["status"])
                message = _with_request_id(message, context.request_id)
            elif message["type"] == "http.response.body":
                tally.bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counted_receive, stamped_send)
        except Exception:
            if tally.status is not None:
                raise  # the reply has begun: nothing else can be said on it
            faults.exception("unhandled error on %s %s", scope["method"], _route(scope) or "-")
            reply = envelope(500, ErrorCode.INTERNAL, "internal server error", _CLOSE)
            await reply(scope, counted_receive, stamped_send)
        finally:
            _log_access(scope, context, tally)
            end(token)


_CLOSE = {"Connection": "close"}  # the connection's state is unknown after a fault


class _Tally:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.status: int | None = None
        self.bytes_in = 0
        self.bytes_out = 0


def _with_request_id(message: Message, request_id: str) -> Message:
    name = REQUEST_ID_HEADER.encode()
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != name]
    headers.append((name, request_id.encode()))
    return {**message, "headers": headers}


def _route(scope: Scope) -> str | None:
    """The matched route's template (set on the scope by the router); None when no route
    matched, or the request was answered before routing (401, 413 on its Content-Length)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


def _note_engine_target(context: RequestContext) -> None:
    """The model (or ``pool:<op>``) an engine resolved for the request, if any."""
    label = context.resolved
    if label is not None and label.startswith(POOL_PREFIX):
        note_target(op=label.removeprefix(POOL_PREFIX))
    elif label is not None:
        note_target(model=label)


def _note_named_target(scope: Scope, context: RequestContext) -> None:
    """The model or op a request names in its path or query, unless a route noted one."""
    model = scope.get("path_params", {}).get("model")
    if context.model is None and isinstance(model, str):
        note_target(model=model)
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query):
        if key == "model" and context.model is None:
            note_target(model=value)
        elif key == "op" and context.op is None:
            note_target(op=value)


def _log_access(scope: Scope, context: RequestContext, tally: _Tally) -> None:
    _note_engine_target(context)
    _note_named_target(scope, context)
    status = tally.status  # None: no reply was sent (the client left first)
    fields: dict[str, Any] = {
        "method": scope["method"],
        "route": _route(scope),
        "status": status,
        "latency_ms": round((time.perf_counter() - tally.started) * 1000, 2),
        "bytes_in": tally.bytes_in,
        "bytes_out": tally.bytes_out,
    }
    named = {"model": context.model, "op": context.op, "code": context.error_code}
    fields.update({key: value for key, value in named.items() if value is not None})
    extras = "".join(f" {k}={v}" for k, v in named.items() if v is not None)
    level = logging.WARNING if (status or 0) >= 500 else logging.INFO
    log.log(
        level,
        "%s %s %s %.1f ms in=%d out=%d%s",
        fields["method"],
        fields["route"] or "-",
        "-" if status is None else status,
        fields["latency_ms"],
        tally.bytes_in,
        tally.bytes_out,
        extras,
        extra={"access": fields},
    )
