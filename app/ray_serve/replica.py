"""One Ray Serve replica of poolserve: the unchanged FastAPI app, built on the replica.

Ray calls ``__serve_build_asgi_app__`` after the constructor and then runs the app's
lifespan, so the models load and warm up inside the replica. ``check_health`` is the
replica's readiness: Ray calls it once before the replica gets traffic and then every
``health_check_period_s``; raising keeps a new replica out of service, or replaces a
running one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from ray import serve
from ray.serve.exceptions import RayServeException
from starlette.types import ASGIApp

from app.core.config import Settings
from app.core.logs import configure_logging
from app.main import create_app
from app.ray_serve.digest import repository_digest
from app.ray_serve.gate import ReplicaGate
from app.ray_serve.metrics_bridge import MetricsBridge
from export.runtime.manifest import ManifestError

log = logging.getLogger("poolserve")


class PoolserveReplica:
    """Serves with the settings the driver passed (as ``POOLSERVE_*`` variables), once its
    repository has the digest the driver computed."""

    def __init__(
        self,
        environment: dict[str, str],
        unset: list[str],
        expected_digest: str,
        metrics_interval_s: float = 5.0,
    ) -> None:
        # Every resolved setting, as `python -m app` exports them for its workers; before
        # Settings(), so that every POOLSERVE_* reader in this process sees the same values.
        os.environ.update(environment)
        for name in unset:
            os.environ.pop(name, None)
        self.settings = Settings()
        configure_logging(self.settings)
        self.problem = digest_problem(self.settings, expected_digest)
        if self.problem is not None:
            log.error("%s", self.problem)
        self.metrics_interval_s = metrics_interval_s
        self.served: FastAPI | None = None  # not `app`: Ray's wrapper owns that name
        self.bridge: MetricsBridge | None = None

    def __serve_build_asgi_app__(self) -> ASGIApp:
        app = create_app(self.settings)
        if self.problem is not None:
            app.router.lifespan_context = _nothing  # it will never serve: load no model
        app.add_middleware(ReplicaGate, replica=replica_name(), problem=self.problem)
        if self.metrics_interval_s > 0:
            self.bridge = MetricsBridge(app.state.metrics.registry, self.metrics_interval_s)
            self.bridge.start()
        self.served = app
        return app

    def check_health(self) -> None:
        """What ``/health/ready`` answers 200 to, plus the repository digest."""
        if self.problem is not None:
            raise RuntimeError(self.problem)
        if self.served is None or self.served.state.services is None:
            raise RuntimeError("poolserve is not ready: the models are not loaded")

    def __del__(self) -> None:
        bridge = getattr(self, "bridge", None)  # absent when the constructor failed
        if bridge is not None:
            bridge.stop()


def digest_problem(settings: Settings, expected: str) -> str | None:
    """Why this replica's repository must not serve, or None when its digest matches."""
    root = settings.model_repository
    try:
        digest = repository_digest(root, settings.models)
    except ManifestError as exc:
        return f"model repository {root} is unusable on this node: {exc}"
    if digest != expected:
        return (
            f"model repository {root} on this node has digest {digest}, the deployment "
            f"expects {expected}: give every node the same repository (docs/ray.md)"
        )
    return None


def replica_name() -> str:
    """Ray's id of this replica; "local" outside a replica (in-process tests)."""
    try:
        return serve.get_replica_context().replica_tag
    except RayServeException:
        return "local"


@asynccontextmanager
async def _nothing(_: FastAPI) -> AsyncIterator[None]:
    yield
