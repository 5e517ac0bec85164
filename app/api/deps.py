"""Route dependencies: the loaded services, the settings, the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode
from app.core.metrics import Metrics
from app.inference.descriptor import DescriptorEngine
from app.inference.pool import PoolEngine
from app.inference.runner import Runner
from app.inference.sessions import LoadedModel
from app.inference.tuning import Tuning
from app.oip.service import OipService
from app.oip.shm import SharedMemoryRegistry


@dataclass(frozen=True)
class Services:
    """What the lifespan loads; present once every model is verified and warmed up."""

    models: dict[str, LoadedModel]
    runner: Runner
    pools: PoolEngine
    descriptors: DescriptorEngine
    default_model: str | None
    oip: OipService
    shm: SharedMemoryRegistry | None = None
    """The system shared-memory regions, when the setting turns them on."""
    tuning: Tuning | None = None
    """Which provider-dependent defaults were applied (reported by /models)."""


def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise ApiError(ErrorCode.NOT_READY, "the models are still loading", {"Retry-After": "5"})
    return services


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
