"""Copies a replica's poolserve metrics into Ray's metrics export, so the Prometheus
endpoint of every Ray node shows every replica's figures, each tagged by Ray with its
``deployment``, ``replica`` and ``application``.

Every sample becomes a Ray gauge of the same name holding the sample's current value:
counters keep their running totals (``rate()`` works on them) and histograms their
cumulative ``_bucket`` series with the ``le`` tag (``histogram_quantile`` works on them).
Ray's exporter prefixes each name with ``ray_``.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry
from ray.serve.metrics import Gauge

log = logging.getLogger("poolserve")

PREFIX = "poolserve_"
SKIPPED_SUFFIXES = ("_created",)
"""prometheus_client's creation timestamps: not figures."""


class MetricsBridge:
    """``copy()`` sets every gauge once; ``start()`` repeats it until ``stop()``."""

    def __init__(self, registry: CollectorRegistry, interval_s: float) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self._gauges: dict[tuple[str, tuple[str, ...]], Gauge] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poolserve-ray-metrics", daemon=True)

    def copy(self) -> int:
        """Copy every poolserve sample; returns how many."""
        copied = 0
        for family in self.registry.collect():
            for sample in family.samples:
                if not sample.name.startswith(PREFIX) or sample.name.endswith(SKIPPED_SUFFIXES):
                    continue
                gauge = self._gauge(sample.name, tuple(sorted(sample.labels)), family.documentation)
                gauge.set(sample.value, tags=dict(sample.labels))
                copied += 1
        return copied

    def _gauge(self, name: str, tag_keys: tuple[str, ...], documentation: str) -> Gauge:
        key = (name, tag_keys)
        if key not in self._gauges:
            # Ray annotates tag_keys as tuple[str], meaning a tuple of any length.
            self._gauges[key] = Gauge(name, documentation, tag_keys or None)  # type: ignore[arg-type]
        return self._gauges[key]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.copy()
            except Exception:  # a failed copy must not end the replica's metrics for good
                log.exception("copying the metrics into Ray's export failed")
