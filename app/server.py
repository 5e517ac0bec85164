"""The uvicorn configuration ``python -m app`` serves with, built from the settings, and
uvicorn's own dispatch to one server or to worker processes for a prepared Config."""

from __future__ import annotations

import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from app.core.config import Settings
from app.http_limits import HttpLimits, LimitsConfig

APP = "app.main:create_app"
"""An import string, not the app: each worker process builds its own."""


def http_limits(settings: Settings) -> HttpLimits:
    return HttpLimits(
        max_connections=settings.max_connections,
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        keepalive_timeout_s=settings.keepalive_timeout_s,
    )


def uvicorn_config(settings: Settings) -> LimitsConfig:
    return LimitsConfig(
        APP,
        limits=http_limits(settings),
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
    )


def run(config: uvicorn.Config) -> None:
    """What ``uvicorn.run`` does once it has built its Config (it takes no Config)."""
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
            return
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)
