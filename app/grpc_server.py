"""The OIP gRPC service's server: a ``grpc.aio`` server on ``host:grpc_port``, on the app's own
event loop (the engines are shared with REST), started by the lifespan once the services are
loaded and stopped before they close.

grpcio and tritonclient (the protocol's stubs) are imported only when ``grpc_port`` is set,
so an install without the ``grpc`` extra serves REST as before.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from app.core.auth import ApiKeys, load_api_keys
from app.core.config import MiB, Settings
from app.inference.sessions import StartupError

if TYPE_CHECKING:
    import grpc

    from app.oip.grpc_service import ServicesSource

log = logging.getLogger("poolserve")

GRACE_S = 5.0
"""How long in-flight calls may finish at shutdown before they are cancelled."""
REPLY_HEADROOM = 16 * MiB
"""Room beyond max_result_bytes for a reply's metadata and for descriptor outputs (which
max_result_bytes does not cap)."""
MAX_MESSAGE = 2**31 - 1
"""grpc's message size limits are C ints."""
_GRPC_MODULES = ("grpc", "tritonclient", "google")


async def start_grpc(
    services: ServicesSource, settings: Settings, keys: ApiKeys | None = None
) -> grpc.aio.Server | None:
    """The started ``grpc.aio.Server``, or None when ``grpc_port`` is unset. Calls need one of
    ``keys`` (by default the settings' API keys) when there are any."""
    if settings.grpc_port is None:
        return None
    grpc_module, grpc_service = _imports()
    keys = load_api_keys(settings) if keys is None else keys
    options = [
        ("grpc.max_receive_message_length", min(settings.max_body_bytes, MAX_MESSAGE)),
        (
            "grpc.max_send_message_length",
            min(settings.max_result_bytes + REPLY_HEADROOM, MAX_MESSAGE),
        ),
    ]
    server = grpc_module.aio.server(options=options, interceptors=_interceptors(keys, settings))
    servicer = grpc_service.InferenceServicer(services, settings)
    handlers = grpc_service.method_handlers(servicer)
    server.add_generic_rpc_handlers(
        (grpc_module.method_handlers_generic_handler(grpc_service.SERVICE, handlers),)
    )
    address = _address(settings.host, settings.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise StartupError(f"the gRPC service cannot bind {address}: {exc}") from exc
    await server.start()
    log.info("gRPC (OIP) on %s", _address(settings.host, port))
    return server


async def stop_grpc(server: grpc.aio.Server | None) -> None:
    """Stop accepting calls and give those in flight GRACE_S to finish."""
    if server is not None:
        await server.stop(GRACE_S)


def _interceptors(keys: ApiKeys, settings: Settings) -> list[Any]:
    if not keys:
        return []
    from app.oip.grpc_auth import BearerAuthInterceptor  # imports grpc: only with grpc_port

    return [BearerAuthInterceptor(keys, settings.open_probes)]


def _imports() -> tuple[Any, Any]:
    try:
        import grpc as grpc_module

        from app.oip import grpc_service
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _GRPC_MODULES:
            raise
        raise StartupError(
            f"grpc_port is set but {exc.name} is not installed: install the grpc extra "
            "(pip install 'poolserve[grpc]') or unset POOLSERVE_GRPC_PORT"
        ) from exc
    return grpc_module, grpc_service


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
