"""The uvicorn configuration ``python -m app`` serves with, built from the settings, and
uvicorn's own dispatch to one server or to worker processes for a prepared Config."""

from __future__ import annotations

import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from app.core.config import Settings
from app.core.logs import settings_logging_config
from app.http_limits import HttpLimits, LimitsConfig
from app.shutdown import graceful_timeout_s
from app.worker_metrics import MetricsMultiprocess, private_metrics_dir

APP = "app.shutdown:served_app"
"""An import string, not the app: each worker process builds its own (with the exit
watchdog that bounds its shutdown, app/shutdown.py)."""


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
        log_config=settings_logging_config(settings),  # applied again in every worker
        access_log=False,  # ours (app/core/access.py) carries the request id and the route
        timeout_graceful_shutdown=graceful_timeout_s(settings.drain_timeout_s),
    )


def run(config: uvicorn.Config) -> None:
    """What ``uvicorn.run`` does once it has built its Config (it takes no Config)."""
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:  # metrics: prometheus_client's multiprocess mode
            with private_metrics_dir():
                MetricsMultiprocess(config, sockets=[config.bind_socket()]).run()
            return
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)
