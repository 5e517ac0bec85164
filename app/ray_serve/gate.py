"""An ASGI wrapper around one replica's app: names the replica on every response, and
holds a replica whose model repository differs from the driver's out of service.

A mismatched replica answers every request but the liveness probes with 503
``not_ready`` and the reason, so its ``/health/ready`` says why it never becomes ready.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import ErrorCode, envelope

REPLICA_HEADER = "x-poolserve-replica"
LIVENESS = ("/health/live", "/v2/health/live")


class ReplicaGate:
    def __init__(self, app: ASGIApp, replica: str, problem: str | None) -> None:
        self.app = app
        self.replica = replica.encode()
        self.problem = problem

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REPLICA_HEADER.encode(), self.replica)]
            await send(message)

        if self.problem is not None and _route(scope) not in LIVENESS:
            code = ErrorCode.NOT_READY
            await envelope(code.status, code, self.problem)(scope, receive, named)
            return
        await self.app(scope, receive, named)


def _route(scope: Scope) -> str:
    """The path below the application's route prefix (Ray passes it as root_path)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
