"""Bounded concurrency for inference: at most N running on worker threads, M waiting.

Inference never runs on the event loop. A request that finds every slot busy and the
waiting line full is refused at once with 503 and Retry-After, instead of queueing without
bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.to_thread
from prometheus_client import Gauge

from app.core.errors import ApiError, ErrorCode

T = TypeVar("T")
RETRY_AFTER_S = "1"
HEAVY_FRACTION = 0.1
"""A request estimated at over this fraction of any of its budgets is heavy: it takes a slot
of the heavy lane (``max_concurrent_heavy``) before an inference slot."""


class InferenceGate:
    def __init__(self, max_concurrent: int, max_waiting: int, waiting: Gauge) -> None:
        self._slots = anyio.Semaphore(max_concurrent)
        self._limiter = anyio.CapacityLimiter(max_concurrent)
        self._max_waiting = max_waiting
        self._waiting = 0
        self._gauge = waiting

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker thread once a slot is free; 503 when the line is full."""
        async with self.slot():
            return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block (waiting in line for it); 503 when the line is full."""
        if self._slots.value == 0 and self._waiting >= self._max_waiting:
            raise ApiError(
                ErrorCode.OVERLOADED,
                "too many inference requests are waiting; retry shortly",
                {"Retry-After": RETRY_AFTER_S},
            )
        self._waiting += 1
        self._gauge.set(self._waiting)
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self._gauge.set(self._waiting)
        try:
            yield
        finally:
            self._slots.release()
