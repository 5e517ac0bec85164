"""Every inference goes through ``Runner``: the gate, a worker thread, metrics, error mapping.

``await runner.run_model(model, batch)`` is the one entry point for /descriptor. With batching on,
a model's requests go through its ``DynamicBatcher``, which runs one coalesced batch at a time
on its own thread (its bounded queue is the back-pressure); otherwise each request runs on the
gate's worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import onnxruntime as ort

from app.core.errors import ApiError, ErrorCode
from app.core.metrics import Metrics
from app.core.request_context import note_model
from app.inference.batcher import DynamicBatcher, QueueFullError
from app.inference.binding import run_bound_or_plain
from app.inference.deadline import RunControl, Watchdog
from app.inference.gate import InferenceGate
from app.inference.sessions import LoadedModel
from export.runtime.sessions import ORT_ERRORS

log = logging.getLogger("poolserve")
T = TypeVar("T")
_INVALID_ARGUMENT = next(e for e in ORT_ERRORS if e.__name__ == "InvalidArgument")


class Runner:
    def __init__(
        self,
        models: Mapping[str, LoadedModel],
        gate: InferenceGate,
        metrics: Metrics,
        batchers: Mapping[str, DynamicBatcher] | None = None,
        io_binding: bool = True,
        deadline_s: float = 30.0,
        heavy: InferenceGate | None = None,
    ) -> None:
        self.models = dict(models)
        self.gate = gate
        self.metrics = metrics
        self.batchers = dict(batchers or {})
        self.io_binding = io_binding  # CUDA sessions only (see app.inference.binding)
        self.deadline_s = deadline_s
        self.watchdog = Watchdog()
        self.heavy = heavy or InferenceGate(1, 64, metrics.heavy_waiting, metrics, "heavy")
        """The heavy lane: requests estimated at over HEAVY_FRACTION of a budget take one of
        its few slots first, so they cannot hold every inference slot (docs/throughput.md)."""
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def run_model(
        self,
        model: str,
        batch: np.ndarray,
        control: RunControl | None = None,
        *,
        heavy: bool = False,
    ) -> np.ndarray:
        """The model's first output for one input batch. A heavy batch runs on its own
        (not through the batcher, where it would hold up every light request behind it)."""
        batcher = self.batchers.get(model)
        if batcher is not None and not heavy:
            return await self._run_batched(batcher, batch)
        loaded = self.models[model]
        feeds = {loaded.input_names[0]: batch}
        outputs = await self.run_session(model, loaded.session, feeds, control)
        return outputs[0]

    async def _run_batched(self, batcher: DynamicBatcher, batch: np.ndarray) -> np.ndarray:
        """Submit in chunks of at most max_batch_size rows; map a full queue to 503."""
        size = batcher.max_batch_size
        chunks = [batch[i : i + size] for i in range(0, batch.shape[0], size)]
        try:
            with _ort_errors_as_envelopes():
                parts = await asyncio.gather(*(batcher.submit(c) for c in chunks))
        except QueueFullError as exc:
            raise ApiError(
                ErrorCode.OVERLOADED,
                "too many descriptor requests are queued; retry shortly",
                {"Retry-After": str(exc.retry_after_s)},
            ) from exc
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def batch_function(self, model: str) -> Callable[[np.ndarray], np.ndarray]:
        """What a model's batcher runs: the session's first output, with inference metrics."""
        loaded = self.models[model]
        name = loaded.input_names[0]
        return lambda rows: self._timed_run(model, loaded.session, {name: rows}, RunControl())[0]

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        """Have ``close()`` await ``close`` too (the /pool graph builder's process)."""
        self._closers.append(close)

    async def close(self) -> None:
        """Drain and stop every batcher, then whatever registered with ``on_close``."""
        for batcher in self.batchers.values():
            await batcher.close()
        for close in self._closers:
            await close()

    async def run_session(
        self,
        label: str,
        session: ort.InferenceSession,
        feeds: Mapping[str, np.ndarray],
        control: RunControl | None = None,
        *,
        shrink_arena: bool = False,
    ) -> list[np.ndarray]:
        """Run any session on the gate's worker threads; ORT errors become envelopes.

        ``control`` stops the run when its client goes (the route's watcher); the deadline
        stops it anyway. ``shrink_arena`` returns the CPU arena's growth after the run:
        /pool graphs are one-offs whose peak must not stay resident.
        """
        control = control or RunControl()
        note_model(label)  # the request's outcome counts under this model (or pool:<op>)
        return await self.on_worker(
            lambda: self._timed_run(label, session, feeds, control, shrink_arena), label
        )

    def _timed_run(
        self,
        label: str,
        session: ort.InferenceSession,
        feeds: Mapping[str, np.ndarray],
        control: RunControl,
        shrink_arena: bool = False,
    ) -> list[np.ndarray]:
        """One session run (on the calling thread), under its deadline, recorded in the
        inference metrics."""
        batch = int(next(iter(feeds.values())).shape[0]) if feeds else 0
        options = control.new_run()
        if shrink_arena:
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        ticket = self.watchdog.watch(control, options, self.deadline_s)
        start = time.perf_counter()
        try:
            result = run_bound_or_plain(session, feeds, self.io_binding, options)
        except ORT_ERRORS as exc:
            if options.terminate and control.reason is not None:  # we stopped it: say why
                raise _stopped(control.reason, label) from exc
            raise
        finally:
            ticket.done = True
        self.metrics.observe_inference(label, batch, time.perf_counter() - start)
        return result

    async def on_worker(self, fn: Callable[[], T], model: str | None = None) -> T:
        """Run ``fn`` under the gate, mapping onnxruntime's run errors; a named ``model``
        has its wait counted in its queue metrics."""
        with _ort_errors_as_envelopes():
            return await self.gate.run(fn, model)


@contextmanager
def _ort_errors_as_envelopes() -> Iterator[None]:
    """onnxruntime's refusal of an input is the client's 422; any other failure a 500."""
    try:
        yield
    except _INVALID_ARGUMENT as exc:
        log.info("onnxruntime refused the input: %s", exc)
        raise ApiError(
            ErrorCode.INVALID_INPUT, "the model refused this input (shape or dtype)"
        ) from exc
    except ORT_ERRORS as exc:
        log.error("onnxruntime failed", exc_info=exc)
        raise ApiError(ErrorCode.INTERNAL, "internal server error") from exc


def _stopped(reason: ErrorCode, label: str) -> ApiError:
    if reason == ErrorCode.DEADLINE_EXCEEDED:
        return ApiError(reason, f"{label} ran past inference_deadline_s and was stopped")
    return ApiError(reason, f"{label} was stopped: its client went away")
