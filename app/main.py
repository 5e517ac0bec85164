"""The app factory and its lifespan: verify the repository, load and warm up, then serve."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.api.deps import Services
from app.api.main import api_router
from app.api.routes import pool, v2
from app.core.access import RequestContextMiddleware
from app.core.auth import BearerAuthMiddleware, load_api_keys
from app.core.config import Settings
from app.core.errors import install_error_handlers
from app.core.metrics import Metrics
from app.core.middleware import (
    CORS_EXPOSED_HEADERS,
    BodyLimitMiddleware,
    EnvelopeCORSMiddleware,
    HeadAsGetMiddleware,
    MetricsMiddleware,
)
from app.grpc_server import start_grpc, stop_grpc
from app.inference.batcher import DynamicBatcher
from app.inference.descriptor import DescriptorEngine
from app.inference.gate import InferenceGate
from app.inference.graph_cache import GraphCache
from app.inference.pool import PoolEngine
from app.inference.runner import Runner
from app.inference.sessions import load_repository, pick_default_model
from app.inference.tuning import active_provider, tune, usable_cores
from app.oip.service import OipService
from app.oip.shm import SharedMemoryRegistry

log = logging.getLogger("poolserve")


def load_services(settings: Settings, metrics: Metrics) -> Services:
    """Everything the routes need; raises StartupError when the service must not start."""
    settings, tuning = tune(settings, active_provider(settings), usable_cores())
    log.info("%s", tuning.describe())
    metrics.set_build_info(tuning.provider)
    manifest, models = load_repository(settings)
    default = pick_default_model(settings, manifest, models)
    for name, loaded in models.items():
        metrics.provider.labels(name, loaded.provider).set(1)
    slots = settings.max_concurrent_inferences or 1  # tune() has set it
    gate = InferenceGate(slots, settings.max_waiting, metrics.waiting, metrics, "slot")
    heavy = InferenceGate(
        settings.max_concurrent_heavy, settings.max_waiting, metrics.heavy_waiting, metrics,
        "heavy",
    )  # fmt: skip
    runner = Runner(
        models, gate, metrics, io_binding=settings.io_binding,
        deadline_s=settings.inference_deadline_s, heavy=heavy,
    )  # fmt: skip
    if settings.batching:
        runner.batchers = {
            name: _batcher(settings, runner, metrics, name)
            for name, loaded in models.items()
            if loaded.preprocess is not None  # image models: /descriptor's path
        }
    cache = GraphCache(settings.graph_cache_bytes, metrics)
    pools = PoolEngine(settings, runner, cache, models)
    descriptors = DescriptorEngine(settings, runner, models, default, metrics)
    oip = OipService(settings, models, pools, descriptors)
    shm = (
        SharedMemoryRegistry(settings.max_shm_regions, settings.max_shm_bytes)
        if settings.shared_memory
        else None
    )
    return Services(models, runner, pools, descriptors, default, oip, shm, tuning)


def _batcher(settings: Settings, runner: Runner, metrics: Metrics, model: str) -> DynamicBatcher:
    return DynamicBatcher(
        runner.batch_function(model),
        settings.max_batch_size,
        settings.max_queue_delay_ms / 1000.0,
        settings.max_queue_size,
        observer=lambda stats: metrics.observe_queue(model, "batch", stats.waits_s),
        on_queue_size=metrics.queue_size.labels(model, "batch").set,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    services = await anyio.to_thread.run_sync(load_services, settings, app.state.metrics)
    app.state.services = services
    log.info("ready: %d models from %s", len(services.models), settings.model_repository)
    grpc_server = None
    try:
        keys = app.state.api_keys
        grpc_server = await start_grpc(lambda: app.state.services, settings, keys)
        yield
    finally:
        await stop_grpc(grpc_server)  # before the engines its calls use close
        await services.runner.close()
        if services.shm is not None:
            services.shm.close()
        app.state.services = None


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def _install_openapi(app: FastAPI) -> None:
    """The generated document plus the /pool and OIP body schemas (read by hand, not declared)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                pool.openapi_components() | v2.openapi_components()
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app with its own settings, metrics registry and (after start-up) sessions."""
    settings = settings or Settings()
    app = FastAPI(
        title="poolserve",
        summary="CNN pooling and global image descriptors on onnxruntime",
        version="0.1.0",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.services = None
    install_error_handlers(app)
    _install_openapi(app)
    app.include_router(api_router)
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_body_bytes,
        json_limit=settings.max_json_body_bytes,
    )
    app.add_middleware(HeadAsGetMiddleware)
    app.state.api_keys = load_api_keys(settings)  # raises StartupError on a bad key file
    if app.state.api_keys:  # inside the metrics: 401s are counted
        app.add_middleware(
            BearerAuthMiddleware, keys=app.state.api_keys, open_probes=settings.open_probes
        )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    _add_cors(app, settings)  # outside the auth: preflights carry no key
    app.add_middleware(RequestContextMiddleware)  # outermost: every reply carries its id
    return app


def _add_cors(app: FastAPI, settings: Settings) -> None:
    if settings.cors_allow_origins:  # off by default: OPTIONS is then a 405 like any method
        app.add_middleware(
            EnvelopeCORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=settings.cors_allow_methods,
            allow_headers=settings.cors_allow_headers,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=settings.cors_max_age_s,
        )
