"""GET /metrics: Prometheus text format; with several workers, the totals of them all
(``Metrics.registry`` reads prometheus_client's multiprocess files then)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import MetricsDep

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(metrics: MetricsDep) -> Response:
    """Requests, per-model outcomes, queues, decode, preprocess and inference times, batch
    sizes, providers, build info, graph cache, process metrics (README, "Metrics")."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
