"""Who is being served right now: the request id, the model or op it named, the model an
engine resolved for it and the error code it got, in a context variable that log lines read
(``logs.RequestIdFilter``), the access line reports (``RequestContextMiddleware``) and the
per-model metrics count (``MetricsMiddleware``).

The context holds one mutable object per request, so a value noted deep in a route (an error
code from the envelope) is seen by the middleware that opened it, and worker threads started
with ``anyio.to_thread`` (which copy the context) log the same id.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar, Token
from dataclasses import dataclass

REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""Client ids are kept only when they cannot break a log line or a header."""


@dataclass
class RequestContext:
    request_id: str
    model: str | None = None
    op: str | None = None
    error_code: str | None = None
    resolved: str | None = None
    """The model (or ``pool:<op>``) an engine resolved: the only name metrics label with,
    so that names a client makes up never become label values."""


_current: ContextVar[RequestContext | None] = ContextVar("poolserve_request", default=None)


def current() -> RequestContext | None:
    return _current.get()


def current_request_id() -> str | None:
    context = _current.get()
    return None if context is None else context.request_id


def is_sane(value: str) -> bool:
    """Short, and only characters that are safe in a header, a log line and a file name."""
    return _SANE_ID.fullmatch(value) is not None


def request_id_from(header: bytes | None) -> str:
    """The client's X-Request-ID when it is sane, else a fresh uuid4 (never a refusal)."""
    if header is not None:
        value = header.decode("latin-1")
        if is_sane(value):
            return value
    return uuid.uuid4().hex


def begin(context: RequestContext) -> Token[RequestContext | None]:
    return _current.set(context)


def end(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


def note_error(code: str) -> None:
    """The envelope's code of the reply being sent (logged on the access line)."""
    context = _current.get()
    if context is not None:
        context.error_code = code


def note_model(name: str) -> None:
    """The model (or ``pool:<op>``) an engine resolved for the current request; a no-op
    outside an HTTP request (gRPC, an engine's own tests)."""
    context = _current.get()
    if context is not None:
        context.resolved = name


def note_target(*, model: str | None = None, op: str | None = None) -> None:
    """The model or op a request named, for the access line; ignored unless sane, so that
    no client bytes of any length reach a log line."""
    context = _current.get()
    if context is None:
        return
    if model is not None and is_sane(model):
        context.model = model
    if op is not None and is_sane(op):
        context.op = op
