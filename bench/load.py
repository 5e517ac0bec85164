"""Closed-loop load at a fixed concurrency: ``c`` workers, each sending its next request as
soon as the last one is answered, until ``total`` requests are done. Async workers drive the
HTTP service, threads drive in-process code; both report the same ``LoadResult``."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoadResult:
    requests: int
    wall_s: float
    latencies_s: tuple[float, ...]

    @property
    def per_second(self) -> float:
        return self.requests / self.wall_s

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) * 1e3

    def row(self) -> list[str]:
        """requests, per second, p50 ms, p99 ms."""
        return [str(self.requests), f"{self.per_second:.2f}",
                f"{self.percentile_ms(50):.0f}", f"{self.percentile_ms(99):.0f}"]  # fmt: skip


async def drive_async(
    send: Callable[[int], Awaitable[None]], concurrency: int, total: int
) -> LoadResult:
    """Run ``send(i)`` for i in 0..total-1 with ``concurrency`` in flight."""
    counter = itertools.count()
    latencies: list[float] = []

    async def worker() -> None:
        while (i := next(counter)) < total:
            start = time.perf_counter()
            await send(i)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(total, time.perf_counter() - start, tuple(latencies))


def drive_threads(call: Callable[[int], object], concurrency: int, total: int) -> LoadResult:
    """Run ``call(i)`` for i in 0..total-1 on ``concurrency`` threads."""

    def timed(i: int) -> float:
        start = time.perf_counter()
        call(i)
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(timed, range(total)))
    return LoadResult(total, time.perf_counter() - start, tuple(latencies))
