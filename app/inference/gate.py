"""Bounded concurrency for inference: at most N running on worker threads, M waiting.

Inference never runs on the event loop. A request that finds every slot busy and the
waiting line full is refused at once with 503 and Retry-After, instead of queueing without
bound.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.to_thread
from prometheus_client import Gauge

from app.core.errors import ApiError, ErrorCode
from app.core.metrics import Metrics

T = TypeVar("T")
RETRY_AFTER_S = "1"
HEAVY_FRACTION = 0.1
"""A request estimated at over this fraction of any of its budgets is heavy: it takes a slot
of the heavy lane (``max_concurrent_heavy``) before an inference slot."""


class InferenceGate:
    def __init__(
        self,
        max_concurrent: int,
        max_waiting: int,
        waiting: Gauge,
        metrics: Metrics | None = None,
        queue: str = "slot",
    ) -> None:
        """``waiting`` counts every waiter; with ``metrics``, a waiter that names its model
        is also counted in ``poolserve_queue_size{model, queue}`` and its wait observed in
        ``poolserve_queue_duration_seconds{model, queue}``."""
        self._slots = anyio.Semaphore(max_concurrent)
        self._limiter = anyio.CapacityLimiter(max_concurrent)
        self._max_waiting = max_waiting
        self._waiting = 0
        self._gauge = waiting
        self._metrics = metrics
        self.queue = queue

    async def run(self, fn: Callable[[], T], model: str | None = None) -> T:
        """Run ``fn`` on a worker thread once a slot is free; 503 when the line is full."""
        async with self.slot(model):
            return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    @asynccontextmanager
    async def slot(self, model: str | None = None) -> AsyncIterator[None]:
        """Hold one slot for the block (waiting in line for it); 503 when the line is full."""
        if self._slots.value == 0 and self._waiting >= self._max_waiting:
            raise ApiError(
                ErrorCode.OVERLOADED,
                "too many inference requests are waiting; retry shortly",
                {"Retry-After": RETRY_AFTER_S},
            )
        queued = self._queued(model)
        self._waiting += 1
        self._gauge.set(self._waiting)
        if queued is not None:
            queued.inc()
        start = time.perf_counter()
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self._gauge.set(self._waiting)
            if queued is not None:
                queued.dec()
        if self._metrics is not None and model is not None:
            self._metrics.observe_queue(model, self.queue, (time.perf_counter() - start,))
        try:
            yield
        finally:
            self._slots.release()

    def _queued(self, model: str | None) -> Gauge | None:
        """This queue's size gauge for ``model`` (None without metrics or a model)."""
        if self._metrics is None or model is None:
            return None
        return self._metrics.queue_size.labels(model, self.queue)
