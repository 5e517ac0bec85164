"""Every inference goes through ``Runner``: the gate, a worker thread, metrics, error mapping.

``await runner.run(model, batch)`` is the one entry point for /descriptor, so a dynamic
batcher can later sit behind it without touching the route.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import numpy as np
import onnxruntime as ort

from app.core.errors import ApiError
from app.core.metrics import Metrics
from app.inference.gate import InferenceGate
from app.inference.sessions import LoadedModel
from export.runtime import ORT_ERRORS

log = logging.getLogger("poolserve")
T = TypeVar("T")
_INVALID_ARGUMENT = next(e for e in ORT_ERRORS if e.__name__ == "InvalidArgument")


class Runner:
    def __init__(
        self, models: Mapping[str, LoadedModel], gate: InferenceGate, metrics: Metrics
    ) -> None:
        self.models = dict(models)
        self.gate = gate
        self.metrics = metrics

    async def run(self, model: str, batch: np.ndarray) -> np.ndarray:
        """The model's first output for one input batch."""
        loaded = self.models[model]
        feeds = {loaded.input_names[0]: batch}
        outputs = await self.run_session(model, loaded.session, feeds)
        return outputs[0]

    async def run_session(
        self, label: str, session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        """Run any session on the gate's worker threads; ORT errors become envelopes."""
        batch = int(next(iter(feeds.values())).shape[0]) if feeds else 0

        def call() -> list[np.ndarray]:
            start = time.perf_counter()
            result = list(session.run(None, dict(feeds)))
            self.metrics.observe_inference(label, batch, time.perf_counter() - start)
            return result

        return await self.call(call)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` under the gate, mapping onnxruntime's run errors."""
        try:
            return await self.gate.run(fn)
        except _INVALID_ARGUMENT as exc:
            log.info("onnxruntime refused the input: %s", exc)
            raise ApiError(
                422, "invalid_input", "the model refused this input (shape or dtype)"
            ) from exc
        except ORT_ERRORS as exc:
            log.error("onnxruntime failed", exc_info=exc)
            raise ApiError(500, "internal", "internal server error") from exc
