"""Dynamic batching with Triton's semantics, for any ``rows -> rows`` function.

Concurrent ``submit`` calls are coalesced into one ``run_batch`` call of at most
``max_batch_size`` rows. A batch waits at most ``max_queue_delay_s`` after its oldest
request arrived; a batch that is full (or cannot grow because the next request would not
fit) goes at once. ``run_batch`` runs on the batcher's own worker thread, one batch at a
time, so requests that arrive meanwhile form the next batch. The queue is bounded in
requests: beyond ``max_queue_size`` waiting requests ``submit`` raises ``QueueFullError``
(the service answers 503 with Retry-After). An exception in ``run_batch`` reaches every
request of that batch, and the batcher carries on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("poolserve")
RowKey = tuple[tuple[int, ...], np.dtype[np.generic]]


class BatcherError(Exception):
    """Base of the batcher's own refusals."""


class QueueFullError(BatcherError):
    """The queue holds ``max_queue_size`` requests; try again after ``retry_after_s``."""

    def __init__(self, queued: int, retry_after_s: int) -> None:
        super().__init__(f"batch queue full ({queued} requests waiting)")
        self.retry_after_s = retry_after_s


class BatcherClosedError(BatcherError):
    """The batcher was closed before this request ran."""


@dataclass(frozen=True)
class BatchStats:
    """What the observer hears about each batch run."""

    rows: int
    requests: int
    queue_delay_s: float  # how long the oldest request of the batch waited
    run_s: float
    waits_s: tuple[float, ...] = ()  # how long each request of the batch waited


@dataclass(eq=False)  # identity: queue removal must not compare arrays
class _Request:
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float
    key: RowKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = (tuple(self.rows.shape[1:]), self.rows.dtype)


class DynamicBatcher:
    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        observer: Callable[[BatchStats], None] | None = None,
        on_queue_size: Callable[[int], None] | None = None,
    ) -> None:
        """
        Args:
            run_batch: rows (B, ...) -> outputs (B, ...), row i of the output for row i of
                the input. It must not keep a reference to its input after returning.
            max_batch_size: most rows in one run; a request may carry at most this many.
            max_queue_delay_s: longest a request waits for companions (0: no waiting).
            max_queue_size: most requests waiting to be batched.
            observer: called with each batch's ``BatchStats`` (e.g. a histogram).
            on_queue_size: called with the number of waiting requests whenever it changes
                (e.g. a gauge).
        """
        if max_batch_size < 1 or max_queue_size < 1 or max_queue_delay_s < 0:
            raise ValueError(
                "max_batch_size and max_queue_size must be >= 1, max_queue_delay_s >= 0"
            )
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.observer = observer
        self.on_queue_size = on_queue_size
        self._queue: deque[_Request] = deque()
        self._arrival = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")
        self._last_run_s = 0.0
        self._buffer: np.ndarray | None = None  # reused input batch: one alloc, not one a run

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """The outputs for ``rows`` (shape (n, ...), 1 <= n <= max_batch_size)."""
        if self._closing:
            raise BatcherClosedError("the batcher is closed")
        if rows.ndim < 1 or not 1 <= rows.shape[0] <= self.max_batch_size:
            raise ValueError(f"a request carries 1..{self.max_batch_size} rows, got {rows.shape}")
        if len(self._queue) >= self.max_queue_size:
            raise QueueFullError(len(self._queue), self._retry_after())
        loop = asyncio.get_running_loop()
        request = _Request(rows, loop.create_future(), loop.time())
        self._queue.append(request)
        self._queue_changed()
        self._arrival.set()
        if self._worker is None:
            self._worker = loop.create_task(self._serve(), name="dynamic-batcher")
        try:
            return await request.future
        except asyncio.CancelledError:
            if request in self._queue:  # not taken into a batch yet: free its place
                self._queue.remove(request)
                self._queue_changed()
            raise

    async def close(self, drain: bool = True) -> None:
        """Refuse new requests; run (``drain``) or fail the queued ones; stop the thread."""
        self._closing = True
        if not drain:
            self._fail_queued(BatcherClosedError("the batcher was closed"))
        self._arrival.set()
        if self._worker is not None:
            await self._worker
        self._thread.shutdown(wait=True)

    def _retry_after(self) -> int:
        batches_ahead = len(self._queue) / self.max_batch_size + 1
        return max(1, math.ceil(batches_ahead * (self._last_run_s + self.max_queue_delay_s)))

    async def _serve(self) -> None:
        try:
            await self._serve_forever()
        except BaseException:
            self._fail_queued(BatcherClosedError("the batcher stopped"))
            raise

    def _fail_queued(self, exc: Exception) -> None:
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(exc)
        self._queue_changed()

    async def _serve_forever(self) -> None:
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._arrival.clear()
                await self._arrival.wait()
            await self._wait_for_companions()
            batch = self._take_batch()
            if batch:
                await self._run(batch)

    async def _wait_for_companions(self) -> None:
        """Until the head's batch is full or the head has waited max_queue_delay_s."""
        loop = asyncio.get_running_loop()
        deadline = self._queue[0].arrived + self.max_queue_delay_s
        while self._queue and not self._closing and not self._batch_is_full():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except TimeoutError:
                return

    def _batch_is_full(self) -> bool:
        key, rows = self._queue[0].key, 0
        for request in self._queue:
            if request.key != key:
                continue
            if rows + request.rows.shape[0] > self.max_batch_size:
                return True  # the queue already holds more than one batch
            rows += request.rows.shape[0]
        return rows == self.max_batch_size

    def _take_batch(self) -> list[_Request]:
        """FIFO: the head and every later request of its row shape and dtype that fits."""
        key, rows = self._queue[0].key, 0
        taken: list[_Request] = []
        for request in list(self._queue):
            if request.future.done():  # cancelled while queued
                self._queue.remove(request)
            elif request.key == key and rows + request.rows.shape[0] <= self.max_batch_size:
                self._queue.remove(request)
                taken.append(request)
                rows += request.rows.shape[0]
        self._queue_changed()
        return taken

    async def _run(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        waits = tuple(now - r.arrived for r in batch)
        inputs = self._concatenate([r.rows for r in batch])
        start = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._thread, self._call, inputs)
        except Exception as exc:  # every request of this batch gets the error
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        finally:
            self._last_run_s = time.perf_counter() - start
        offset = 0
        for request in batch:
            n = request.rows.shape[0]
            if not request.future.done():
                request.future.set_result(outputs[offset : offset + n])
            offset += n
        self._observe(BatchStats(offset, len(batch), waits[0], self._last_run_s, waits))

    def _call(self, inputs: np.ndarray) -> np.ndarray:
        outputs = self.run_batch(inputs)
        if not isinstance(outputs, np.ndarray) or outputs.ndim < 1:
            raise TypeError(f"run_batch must return an array, got {type(outputs).__name__}")
        if outputs.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"run_batch returned {outputs.shape[0]} rows for {inputs.shape[0]} inputs"
            )
        if self._buffer is not None and np.may_share_memory(outputs, self._buffer):
            outputs = outputs.copy()  # the buffer is overwritten by the next batch
        return outputs

    def _concatenate(self, arrays: list[np.ndarray]) -> np.ndarray:
        """One request passes as is; several are copied into the reused batch buffer."""
        if len(arrays) == 1:
            return arrays[0]
        first = arrays[0]
        shape = (self.max_batch_size, *first.shape[1:])
        if self._buffer is None or self._buffer.shape != shape or self._buffer.dtype != first.dtype:
            self._buffer = np.empty(shape, first.dtype)
        total = sum(a.shape[0] for a in arrays)
        return np.concatenate(arrays, axis=0, out=self._buffer[:total])

    def _queue_changed(self) -> None:
        if self.on_queue_size is None:
            return
        try:
            self.on_queue_size(len(self._queue))
        except Exception:  # a broken metric must not stop serving
            log.exception("queue-size callback failed")

    def _observe(self, stats: BatchStats) -> None:
        if self.observer is None:
            return
        try:
            self.observer(stats)
        except Exception:  # a broken metric must not stop serving
            log.exception("batch observer failed")
