"""GET /health/live and /health/ready."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.api.deps import get_services
from app.core.errors import responses

router = APIRouter(prefix="/health", tags=["health"])


class Live(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    providers: dict[str, list[str]]


@router.get("/live", summary="The process is up")
async def live() -> Live:
    """Always 200 while the process serves HTTP."""
    return Live(status="live")


@router.get("/ready", summary="Every model is loaded and warmed up", responses=responses(503))
async def ready(request: Request) -> Ready:
    """200 with each model's active providers once warmed up; 503 before."""
    services = get_services(request)
    providers = {name: list(m.providers) for name, m in services.models.items()}
    return Ready(status="ready", providers=providers)
