"""/pool graphs are built in a child process, so that building never holds this one's GIL.

Tracing a lowering with onnxscript is pure Python that holds the GIL throughout: 10-35 ms
per graph for median, adaptive_max, spp and rmac, about 0.5 ms per node up to
``max_graph_nodes``. Built on a server thread, it stalls every cache hit and /health/live
behind it (issue 18, docs/throughput.md). One child process builds one graph at a time and
sends back the serialized model; the caller opens its session here.

The child starts on the first miss (``spawn``: it inherits none of this process's threads
or sessions) and takes about a second to import the builders. Until it has started, and
from a miss after it died, misses build on the caller's worker thread as they used to, one
at a time. A child that dies mid-build costs its requests a 503 with Retry-After, never the
server; the next miss starts another.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import anyio.to_thread

from app.core.errors import ApiError, ErrorCode
from app.inference.gate import RETRY_AFTER_S
from export.runtime.graph import build_lowered_graph
from export.runtime.lowering import LoweringKind, select_lowering
from models.pooling.params import PoolParams

log = logging.getLogger("poolserve")
OnThread = Callable[[Callable[[], bytes]], Awaitable[bytes]]
"""How a build runs on this process's worker threads (``Runner.on_worker``)."""


@dataclass(frozen=True)
class BuildJob:
    """Everything a /pool graph depends on, picklable: the child looks the lowering up
    again by its kind rather than receiving its functions."""

    op: str
    kind: LoweringKind
    params: PoolParams
    dtype: str
    static_hw: tuple[int, int] | None


def build_model(job: BuildJob) -> bytes:
    """The job's model, serialized.

    Raises:
        LoweringError: no lowering of that kind builds these params.
    """
    lowering = select_lowering(job.op, job.params, job.dtype, kind=job.kind)
    model = build_lowered_graph(lowering, job.params, job.dtype, static_hw=job.static_hw)
    serialized: bytes = model.SerializeToString()
    return serialized


def _started() -> int:
    """The child's first job: answering it means it has imported the builders."""
    return os.getpid()


class GraphBuilder:
    """Builds /pool graphs in one child process; ``close()`` stops it."""

    def __init__(self, max_waiting: int, on_thread: OnThread) -> None:
        self.build_fn: Callable[[BuildJob], bytes] = build_model
        """What builds a job (tests swap in slow or failing ones; it must pickle)."""
        self._max_waiting = max_waiting
        self._on_thread = on_thread
        self._waiting = 0
        self._here = threading.Lock()  # one local build at a time: one GIL holder
        self._start = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._ready: Future[int] | None = None
        self._closed = False  # closed, or the child could not start: build here from now on

    @property
    def running(self) -> bool:
        """Whether a child has been started (and not found dead or closed since)."""
        return self._pool is not None

    @property
    def waiting(self) -> int:
        """Requests whose graph the child is building or will build next."""
        return self._waiting

    async def build(self, job: BuildJob) -> bytes:
        """The job's serialized model, from the child once it has started, else built here.

        Raises:
            LoweringError: as ``build_model``.
            ApiError: 503 when ``max_waiting`` builds wait already, or the child died.
        """
        if self._pool is None and not self._closed:  # spawning takes ~15 ms: not on the loop
            await anyio.to_thread.run_sync(self.start)
        pool = self._started_pool()
        if pool is None:
            return await self._on_thread(lambda: self._build_here(job))
        return await self._build_there(pool, job)

    def start(self) -> Future[int]:
        """Start the child unless it runs; the future answers its pid once it has started."""
        with self._start:
            if self._closed:
                raise RuntimeError("the graph builder is closed")
            if self._pool is None or self._ready is None:
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(1, mp_context=context)
                self._ready = self._pool.submit(_started)
            return self._ready

    async def close(self) -> None:
        """Stop the child (after its build in progress; queued builds are cancelled)."""
        with self._start:
            self._closed, pool, self._pool = True, self._pool, None
        if pool is not None:
            await anyio.to_thread.run_sync(lambda: pool.shutdown(wait=True, cancel_futures=True))

    def _started_pool(self) -> ProcessPoolExecutor | None:
        """The child's pool once its first job answered; None (it is starting) before."""
        if self._closed:
            return None
        ready = self.start()
        if not ready.done():
            return None
        if ready.exception() is not None:
            log.error("the graph build process did not start", exc_info=ready.exception())
            self._closed = True
            return None
        return self._pool

    def _build_here(self, job: BuildJob) -> bytes:
        with self._here:
            return self.build_fn(job)

    async def _build_there(self, pool: ProcessPoolExecutor, job: BuildJob) -> bytes:
        if self._waiting >= self._max_waiting:
            raise ApiError(
                ErrorCode.OVERLOADED,
                "too many /pool graphs are waiting to be built; retry shortly",
                {"Retry-After": RETRY_AFTER_S},
            )
        try:
            future = pool.submit(self.build_fn, job)
        except BrokenProcessPool:  # it died before this request came: not this one's fault
            self._lost(pool)
            return await self._on_thread(lambda: self._build_here(job))
        self._waiting += 1
        try:  # a cancelled wait cancels the job too, unless the child has begun it
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            self._lost(pool)
            raise ApiError(
                ErrorCode.OVERLOADED,
                "the /pool graph build process stopped while building this graph; another "
                "starts with the next request: retry",
                {"Retry-After": RETRY_AFTER_S},
            ) from exc
        finally:
            self._waiting -= 1

    def _lost(self, pool: ProcessPoolExecutor) -> None:
        """Forget a dead child; the next miss starts another."""
        with self._start:
            if self._pool is not pool:
                return  # another request has replaced it already
            self._pool, self._ready = None, None
        log.error("the /pool graph build process died; the next miss starts another")
        pool.shutdown(wait=False, cancel_futures=True)
