"""Prometheus metrics. One worker: one ``CollectorRegistry`` per app (so tests can build many
apps). Several uvicorn workers: prometheus_client's multiprocess mode, which ``python -m app``
turns on by setting PROMETHEUS_MULTIPROC_DIR before the workers start (app/server.py); every
scrape then sums the workers' files, whichever worker answers it.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata

import numpy as np
import onnxruntime as ort
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.multiprocess import MultiProcessCollector

from app.core.process_metrics import MULTIPROC_ENV, WorkerProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
SUCCESS, FAILURE = "success", "failure"

# No *_created series: the text format shows them as extra gauges, and multiprocess mode,
# which several workers use, has none; one worker and many then expose the same names.
disable_created_metrics()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """Every metric the service exports; ``registry`` is what /metrics exposes."""

    def __init__(self) -> None:
        directory = multiprocess_dir()
        self.registry = CollectorRegistry()
        # Multiprocess: the metrics write to files and the registry reads them all back.
        self._own: CollectorRegistry | None = None if directory else self.registry
        self._http()
        self._inference()
        self._stages()
        self._graph_cache()
        self._process(directory)
        self.build = Info("poolserve_build", "Versions and the active provider", registry=None)
        self.registry.register(self.build)  # per process, even in multiprocess mode

    def _process(self, directory: str | None) -> None:
        PlatformCollector(registry=self.registry)
        if directory is None:
            ProcessCollector(registry=self.registry)
            return
        MultiProcessCollector(self.registry, path=directory)  # type: ignore[no-untyped-call]
        self.registry.register(WorkerProcessCollector(directory))

    def _http(self) -> None:
        r, labels = self._own, ("endpoint", "method", "status")
        self.requests = Counter(
            "poolserve_requests", "HTTP requests by endpoint and status", labels, registry=r
        )
        self.latency = Histogram(
            "poolserve_request_duration_seconds",
            "HTTP request latency by endpoint and status",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_requests = Counter(
            "poolserve_model_requests",
            "HTTP requests per model (/pool ops as pool:<op>) by outcome and error code",
            ("model", "outcome", "code"),
            registry=r,
        )

    def _inference(self) -> None:
        r = self._own
        self.inference = Histogram(
            "poolserve_inference_seconds",
            "onnxruntime run time per model (/pool graphs as pool:<op>)",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "poolserve_batch_size",
            "Batch size (N) of each inference per model",
            ("model",),
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.provider = Gauge(
            "poolserve_active_provider_info",
            "1 for the execution provider each model's session really runs on",
            ("model", "provider"),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.waiting = Gauge(
            "poolserve_waiting_inferences",
            "Requests waiting for an inference slot",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.heavy_waiting = Gauge(
            "poolserve_waiting_heavy_requests",
            "Expensive requests waiting for the heavy lane (max_concurrent_heavy)",
            registry=r,
            multiprocess_mode="livesum",
        )

    def _stages(self) -> None:
        """Per model: the queues a request waits in, and the image stages before the run."""
        r, labels = self._own, ("model", "queue")
        self.queue = Histogram(
            "poolserve_queue_duration_seconds",
            "Time each request waited per model and queue: slot (an inference slot), heavy "
            "(the heavy lane), batch (the dynamic batcher; Triton's "
            "nv_inference_queue_duration_us)",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_size = Gauge(
            "poolserve_queue_size",
            "Requests waiting now per model and queue (slot, heavy, batch)",
            labels,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.decode = Histogram(
            "poolserve_decode_seconds",
            "Time to decode one image, per model",
            ("model",),
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.preprocess = Histogram(
            "poolserve_preprocess_seconds",
            "Time to resize and normalise one decoded image, per model",
            ("model",),
            buckets=STAGE_BUCKETS,
            registry=r,
        )

    def _graph_cache(self) -> None:
        r = self._own
        self.cache_hits = Counter(
            "poolserve_graph_cache_hits", "/pool graph-cache hits", registry=r
        )
        self.cache_misses = Counter(
            "poolserve_graph_cache_misses", "/pool graph-cache misses (graph built)", registry=r
        )
        self.cache_entries = Gauge(
            "poolserve_graph_cache_entries",
            "/pool graphs held in the cache",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_bytes = Gauge(
            "poolserve_graph_cache_bytes",
            "/pool graph-cache weight in bytes",
            registry=r,
            multiprocess_mode="livesum",
        )

    def set_build_info(self, provider: str) -> None:
        self.build.info(
            {
                "version": _version("poolserve"),
                "python": platform.python_version(),
                "onnxruntime": ort.__version__,
                "numpy": np.__version__,
                "provider": provider,
            }
        )

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        labels = (endpoint, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_outcome(self, model: str, status: int, code: str) -> None:
        """One request for ``model``: success below 400, else failure with its error code."""
        outcome = SUCCESS if status < 400 else FAILURE
        self.model_requests.labels(model, outcome, code if outcome == FAILURE else "").inc()

    def observe_inference(self, model: str, batch: int, seconds: float) -> None:
        self.inference.labels(model).observe(seconds)
        self.batch.labels(model).observe(batch)

    def observe_queue(self, model: str, queue: str, waits_s: Iterable[float]) -> None:
        histogram = self.queue.labels(model, queue)
        for wait in waits_s:
            histogram.observe(wait)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"
