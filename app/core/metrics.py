"""Prometheus metrics, one ``CollectorRegistry`` per app (so tests can build many apps)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Every metric the service exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._http()
        self._inference()
        self._graph_cache()

    def _http(self) -> None:
        r, labels = self.registry, ("endpoint", "method", "status")
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

    def _inference(self) -> None:
        r = self.registry
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
        self.queue = Histogram(
            "poolserve_queue_duration_seconds",
            "Time each /descriptor request waited in its model's batch queue "
            "(Triton's nv_inference_queue_duration_us)",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.provider = Gauge(
            "poolserve_active_provider",
            "1 for the execution provider each model's session really runs on",
            ("model", "provider"),
            registry=r,
        )
        self.waiting = Gauge(
            "poolserve_waiting_inferences", "Requests waiting for an inference slot", registry=r
        )
        self.heavy_waiting = Gauge(
            "poolserve_waiting_heavy_requests",
            "Expensive requests waiting for the heavy lane (max_concurrent_heavy)",
            registry=r,
        )

    def _graph_cache(self) -> None:
        r = self.registry
        self.cache_hits = Counter(
            "poolserve_graph_cache_hits", "/pool graph-cache hits", registry=r
        )
        self.cache_misses = Counter(
            "poolserve_graph_cache_misses", "/pool graph-cache misses (graph built)", registry=r
        )
        self.cache_entries = Gauge(
            "poolserve_graph_cache_entries", "/pool graphs held in the cache", registry=r
        )
        self.cache_bytes = Gauge(
            "poolserve_graph_cache_bytes", "/pool graph-cache weight in bytes", registry=r
        )

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        labels = (endpoint, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_inference(self, model: str, batch: int, seconds: float) -> None:
        self.inference.labels(model).observe(seconds)
        self.batch.labels(model).observe(batch)

    def observe_queue(self, model: str, waits_s: Iterable[float]) -> None:
        histogram = self.queue.labels(model)
        for wait in waits_s:
            histogram.observe(wait)
