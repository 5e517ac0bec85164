"""API keys on the OIP gRPC service: the ``authorization`` metadata (``Bearer <key>``, as
REST's header) checked by a server interceptor before any call is handled, with the same keys
and the same constant-time comparison (``app.core.auth.ApiKeys``). A refused call ends
UNAUTHENTICATED, with ``poolserve-code: unauthorized`` in its trailing metadata. With
``open_probes``, the health RPCs (ServerLive, ServerReady, ModelReady) need no key, as REST's
/v2/health routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from app.core.auth import ApiKeys
from app.core.errors import ErrorCode
from app.oip.grpc_service import CODE_KEY

PROBE_METHODS = frozenset({"ServerLive", "ServerReady", "ModelReady"})
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


async def _unauthenticated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "a valid API key is required: metadata authorization: Bearer <key>",
        ((CODE_KEY, ErrorCode.UNAUTHORIZED.value),),
    )


_REFUSE = grpc.unary_unary_rpc_method_handler(_unauthenticated)
"""Every RPC of the service is unary: one handler refuses them all (the request stays
undecoded)."""


def _authorization(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | bytes | None:
    for key, value in metadata or ():
        if key == "authorization":  # gRPC metadata keys arrive lower-case
            return value
    return None


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, keys: ApiKeys, open_probes: bool) -> None:
        self._keys = keys
        self._open_probes = open_probes

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method = details.method.rpartition("/")[2]
        if self._open_probes and method in PROBE_METHODS:
            return await continuation(details)
        if self._keys.accepts_authorization(_authorization(details.invocation_metadata)):
            return await continuation(details)
        return _REFUSE
