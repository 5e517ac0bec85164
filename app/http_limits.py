"""HTTP/1.1 connection limits for uvicorn's httptools protocol: a header size cap (431), header
and body timeouts (408), an idle timeout from the first accept, and a connection cap (503).

httptools has no header limit (it joins a header split over reads with ``bytes +=``, so a huge
one costs quadratic time on the event loop), and uvicorn has no header or body timeout; its
``limit_concurrency`` only refuses a request once its headers are in, so idle and slowloris
sockets are never bounded. Everything here runs on the event loop: one ``call_later`` handle
per connection at a time, no work per body chunk.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.core.errors import ErrorCode

LINGER_S = 2.0
"""After an error answer the write side is shut and unread input drained this long at most:
closing on unread bytes would send a reset, which can destroy the answer before it is read."""


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    keepalive_timeout_s: float


class LimitsConfig(uvicorn.Config):
    """A uvicorn Config carrying the limits to ``LimitedHttpToolsProtocol``. It pickles, so
    ``--workers`` hands the same limits to every worker process."""

    def __init__(self, app: str, *, limits: HttpLimits, **kwargs: Any) -> None:
        # No WebSocket routes here, and the protocol does not follow a connection past an upgrade.
        super().__init__(app, http=LimitedHttpToolsProtocol, ws="none", **kwargs)
        self.limits = limits
        # uvicorn types this as int, but only hands it to call_later.
        self.timeout_keep_alive = limits.keepalive_timeout_s  # type: ignore[assignment]


class _Phase(enum.Enum):
    WAITING = "no request being received"  # idle (uvicorn's keep-alive timer), or app running
    HEADERS = "request line and headers"
    BODY = "request body"
    DRAINING = "nothing: refused"  # answered and write side shut; input dropped until close


def error_response(
    code: ErrorCode, message: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """The service's error envelope as raw HTTP/1.1 bytes, closing the connection."""
    body = orjson.dumps({"error": message, "code": code.value})
    lines = [STATUS_LINE[code.status]]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
    lines.append(b"connection: close\r\n\r\n")
    return b"".join(lines) + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of its ``LimitsConfig``. A connection is
    idle (uvicorn's keep-alive timer, also armed on accept), then receives headers (header
    timer from the first byte), then a body (body timer from the end of the headers), then
    waits for its answer with no timer. Callbacks move the phase; ``data_received`` starts the
    phase's timer once the read is parsed, so a request that arrives in one read arms none."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not isinstance(config, LimitsConfig):
            raise TypeError("LimitedHttpToolsProtocol needs a LimitsConfig")
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits
        self._phase = _Phase.WAITING
        self._timed = _Phase.WAITING  # the phase self._timer runs for
        self._timer: asyncio.TimerHandle | None = None
        self._header_room = self.limits.max_header_bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(ErrorCode.UNAVAILABLE, "too many connections; retry later")
            return
        # A new connection is idle like one between requests: the same keep-alive timer.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._unset_keepalive_if_required()  # uvicorn leaves it armed on a reset
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase is _Phase.BODY:
            super().data_received(data)  # the fast path: the parser's own work, nothing counted
        elif self._phase is not _Phase.DRAINING:
            self._receive_headers(data)
        if self._phase is not self._timed and not self.transport.is_closing():
            self._start_timer()

    def _receive_headers(self, data: bytes) -> None:
        """Count header bytes as they arrive, and never feed the parser past the cap.
        Pipelined bytes after a complete request in the same read go uncounted (one read)."""
        if self._phase is _Phase.WAITING:
            self._phase = _Phase.HEADERS
        while self._in_headers() and len(data) > self._header_room:
            room, self._header_room = self._header_room, 0
            super().data_received(data[:room])
            data = data[room:]
            if self.transport.is_closing():
                return
            if self._in_headers() and self._header_room == 0:
                size = self.limits.max_header_bytes
                self._refuse(ErrorCode.HEADERS_TOO_LARGE, f"request headers over {size} bytes")
                return
        if self._in_headers():
            self._header_room -= len(data)
        super().data_received(data)

    def _in_headers(self) -> bool:
        """Whether the next bytes belong to a request line or headers (a callback may change it)."""
        return self._phase is _Phase.WAITING or self._phase is _Phase.HEADERS

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _Phase.HEADERS

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase = _Phase.BODY

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = self._timed = _Phase.WAITING
        self._stop_timer()
        self._header_room = self.limits.max_header_bytes

    def _start_timer(self) -> None:
        """The deadline of the phase just entered, started once per phase (not per read)."""
        self._stop_timer()
        self._timed = self._phase
        if self._phase is _Phase.HEADERS or self._phase is _Phase.BODY:
            self._timer = self.loop.call_later(self._timeout_s(), self._timed_out)

    def _timeout_s(self) -> float:
        if self._phase is _Phase.HEADERS:
            return self.limits.header_timeout_s
        return self.limits.body_timeout_s

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        limit = self._timeout_s()
        message = f"{self._phase.value} not received within {limit:g} s"
        self._refuse(ErrorCode.REQUEST_TIMEOUT, message)

    def _may_answer(self) -> bool:
        """Whether an answer now cannot land inside, or before, another response."""
        if self.pipeline:
            return False
        if self._phase is _Phase.BODY:
            return not self.cycle.response_started
        return self.cycle is None or self.cycle.response_complete

    def _refuse(self, code: ErrorCode, message: str) -> None:
        """Answer ``code`` when nothing else is being answered, then close the connection."""
        self.logger.warning("%s: %s", code.value, message)
        if self._may_answer():
            self.transport.write(error_response(code, message, self.server_state.default_headers))
        self._phase = self._timed = _Phase.DRAINING
        self._stop_timer()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() returns http.disconnect now
            self.cycle.message_event.set()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)
