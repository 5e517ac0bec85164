"""Pure ASGI middleware: the request-body limit, HEAD on GET routes, the request metrics.

The body limit counts bytes as they arrive, so a missing, small or lying Content-Length
does not matter; an honest Content-Length over the limit is refused before reading. A JSON
body has its own, smaller limit: it is parsed whole, so it must be refused on the stream.
"""

from __future__ import annotations

import time

import orjson
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import ApiError, ErrorCode, envelope
from app.core.metrics import Metrics
from app.core.request_context import current, note_error


def _too_large(limit: int) -> ApiError:
    return ApiError(ErrorCode.BODY_TOO_LARGE, f"the request body is larger than {limit} bytes")


async def _send_error(send: Send, error: ApiError) -> None:
    note_error(error.code)  # for the request's access line
    body = orjson.dumps({"error": error.message, "code": error.code})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """413 ``body_too_large`` once more than ``limit`` body bytes arrive (``json_limit``
    for a JSON body)."""

    def __init__(self, app: ASGIApp, limit: int, json_limit: int | None = None) -> None:
        self.app = app
        self.limit = limit
        self.json_limit = json_limit or limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        is_json = headers.get(b"content-type", b"").split(b";")[0].strip() == b"application/json"
        limit = self.json_limit if is_json else self.limit
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_error(send, _too_large(limit))
            return
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except ApiError as exc:  # raised where no route handler could catch it
            if started or exc.code != ErrorCode.BODY_TOO_LARGE:
                raise
            await _send_error(send, exc)


class HeadAsGetMiddleware:
    """HEAD on any route answers as GET would, without the body (RFC 9110 9.3.2)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class MetricsMiddleware:
    """Request count and latency per endpoint (route template), method and status; and,
    for a request an engine tied to a model (``note_model``), its outcome per model with
    the error envelope's code."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                endpoint, scope.get("method", ""), status, time.perf_counter() - start
            )
            self._observe_outcome(status)

    def _observe_outcome(self, status: int) -> None:
        """The outcome per model, for a request an engine resolved a model for."""
        context = current()
        if context is None or context.resolved is None:
            return
        code = (context.error_code or "unknown") if status >= 400 else ""
        self.metrics.observe_outcome(context.resolved, status, code)


CORS_EXPOSED_HEADERS = (
    "X-Request-ID",
    "Retry-After",
    "X-Poolserve-Provider",
    "X-Poolserve-Lowering",
)
"""Reply headers a browser script may read."""


class EnvelopeCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered 400 ``cors_refused`` in the envelope
    (Starlette answers it in plain text)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != ErrorCode.CORS_REFUSED.status:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        headers = {
            k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
        }
        message = f"CORS preflight refused: this {refused} is not allowed"
        return envelope(ErrorCode.CORS_REFUSED.status, ErrorCode.CORS_REFUSED, message, headers)
