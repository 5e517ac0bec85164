"""Optional API keys: bearer tokens from ``api_keys`` and ``api_key_file``, read once at
start-up, checked on every HTTP request (``BearerAuthMiddleware``) and gRPC call
(``app.oip.grpc_auth``).

A presented token is compared with every key, in constant time and without stopping at a
match, so neither the time taken nor anything else tells which key matched or how much of
one did. Keys are kept as SHA-256 digests, so every comparison is of 32 bytes whatever the
lengths. CORS preflights never need a key (browsers send them without credentials), and with
``open_probes`` neither do the health probes and /metrics.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.config import Settings
from app.core.errors import ErrorCode, envelope
from app.inference.sessions import StartupError

PROBE_PATHS = ("/health/", "/v2/health/")
"""Prefixes of the probes ``open_probes`` leaves open, besides /metrics."""
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="poolserve"'}


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class ApiKeys:
    """The accepted bearer tokens; empty means no authentication."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(k.encode()) for k in keys)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, token: bytes | None) -> bool:
        """Whether the token is one of the keys; every key is compared, whatever matches."""
        presented = _digest(token or b"")
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(presented, digest)
        return matched and token is not None

    def accepts_authorization(self, header: bytes | str | None) -> bool:
        return self.accepts(bearer_token(header))


def bearer_token(header: bytes | str | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` value (scheme in any case)."""
    if header is None:
        return None
    raw = header.encode("latin-1") if isinstance(header, str) else header
    scheme, _, token = raw.strip().partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


def read_key_file(path: Path) -> list[str]:
    """One key per line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise StartupError(f"api_key_file {str(path)!r} cannot be read: {reason}") from exc
    keys = [line.strip() for line in text.splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:  # a file meant to protect the service must not silently leave it open
        raise StartupError(f"api_key_file {str(path)!r} holds no key")
    return keys


def load_api_keys(settings: Settings) -> ApiKeys:
    """The keys of both settings; raises StartupError when the key file is unusable."""
    keys = [k.strip() for k in settings.api_keys if k.strip()]
    if settings.api_key_file is not None:
        keys += read_key_file(settings.api_key_file)
    return ApiKeys(keys)


def is_probe(path: str) -> bool:
    return path == "/metrics" or path.startswith(PROBE_PATHS)


def is_preflight(scope: Scope) -> bool:
    """A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method."""
    if scope["method"] != "OPTIONS":
        return False
    names = {name for name, _ in scope.get("headers", [])}
    return b"origin" in names and b"access-control-request-method" in names


class BearerAuthMiddleware:
    """401 ``unauthorized`` (with ``WWW-Authenticate: Bearer``) for a request without one of
    the keys, before any of its body is read."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, open_probes: bool) -> None:
        self.app = app
        self.keys = keys
        self.open_probes = open_probes

    def _exempt(self, scope: Scope) -> bool:
        return is_preflight(scope) or (self.open_probes and is_probe(scope["path"]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", [])).get(b"authorization")
        if self.keys.accepts_authorization(header):
            await self.app(scope, receive, send)
            return
        message = "a valid API key is required: Authorization: Bearer <key>"
        if header is not None:
            message = "the API key is missing from the Authorization header or is not valid"
        reply = envelope(ErrorCode.UNAUTHORIZED.status, ErrorCode.UNAUTHORIZED, message, CHALLENGE)
        await reply(scope, receive, send)
