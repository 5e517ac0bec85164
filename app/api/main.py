"""The API router: every resource's routes."""

from fastapi import APIRouter

from app.api.routes import descriptor, health, metrics, models, pool, v2

api_router = APIRouter()
for module in (pool, descriptor, health, models, metrics, v2):
    api_router.include_router(module.router)
