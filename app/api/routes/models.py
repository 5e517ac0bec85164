"""GET /models: the loaded models and the ops /pool serves, with their parameter schemas."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import ServicesDep
from app.core.errors import responses
from app.inference.sessions import LoadedModel
from app.inference.tuning import Tuning
from export.runtime.lowering import lowerings_for
from models.pooling import get_pool_spec, list_pools

router = APIRouter(tags=["models"])


class ModelInfo(BaseModel):
    name: str
    kind: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    dim: int | None
    min_hw: int | None
    weights: str
    providers: list[str]
    provider: str
    op: str | None
    params: dict[str, Any] | None
    preprocess: dict[str, Any] | None
    exif: bool | None = Field(
        description="image models: whether images are turned upright by their EXIF "
        "orientation (exif_models) or taken as stored; null for tensor models"
    )


class OpInfo(BaseModel):
    name: str
    summary: str
    inputs: list[str]
    learnable: bool
    models: list[str]
    lowerings: list[str]
    params_schema: dict[str, Any]


class TuningInfo(BaseModel):
    provider: str = Field(description="the provider the defaults were chosen for")
    values: dict[str, Any] = Field(description="batching, concurrency, intra-op threads in use")
    defaulted: list[str] = Field(description="those left unset, so chosen for the provider")


class ModelsResponse(BaseModel):
    default_model: str | None
    models: list[ModelInfo]
    ops: list[OpInfo]
    tuning: TuningInfo | None


def _model_info(m: LoadedModel, exif: bool | None) -> ModelInfo:
    entry = m.entry
    return ModelInfo(
        name=m.name,
        kind=entry.kind,
        inputs=[s.model_dump() for s in entry.inputs],
        outputs=[s.model_dump() for s in entry.outputs],
        dim=m.dim,
        min_hw=entry.min_hw,
        weights=entry.weights,
        providers=list(m.providers),
        provider=m.provider,
        op=entry.op,
        params=entry.params,
        preprocess=(entry.cfg or {}).get("preprocess"),
        exif=exif,
    )


def _op_info(name: str, services: ServicesDep) -> OpInfo:
    spec = get_pool_spec(name)
    return OpInfo(
        name=name,
        summary=spec.summary,
        inputs=list(spec.input_names),
        learnable=spec.learnable,
        models=services.pools.entries_for(name),
        lowerings=[lw.kind for lw in lowerings_for(name)],
        params_schema=spec.params.model_json_schema(),
    )


@router.get("/models", summary="Loaded models and /pool ops", responses=responses(503))
async def models(services: ServicesDep) -> ModelsResponse:
    """Models with I/O, dims, weights and providers; ops with their parameter schemas."""
    return ModelsResponse(
        default_model=services.default_model,
        models=[_model_info(m, _exif(m, services)) for m in services.models.values()],
        ops=[_op_info(name, services) for name in list_pools()],
        tuning=_tuning_info(services.tuning),
    )


def _exif(m: LoadedModel, services: ServicesDep) -> bool | None:
    return None if m.preprocess is None else services.descriptors.applies_exif(m.name)


def _tuning_info(tuning: Tuning | None) -> TuningInfo | None:
    if tuning is None:
        return None
    return TuningInfo(
        provider=tuning.provider, values=tuning.values, defaulted=list(tuning.defaulted)
    )
