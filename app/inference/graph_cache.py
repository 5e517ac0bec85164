"""Bounded LRU of built /pool graphs, each kept as an onnxruntime session.

The key is everything the graph depends on: (op, lowering kind, validated params, dtype,
static H/W). Validated params are frozen pydantic models, so they hash by value.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import onnxruntime as ort

from app.core.metrics import Metrics


@dataclass(frozen=True)
class PoolGraph:
    session: ort.InferenceSession
    providers: tuple[str, ...]
    input_names: tuple[str, ...]


class GraphCache:
    def __init__(self, size: int, metrics: Metrics) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, PoolGraph] = OrderedDict()
        self._lock = threading.Lock()
        self._metrics = metrics

    def __len__(self) -> int:
        return len(self._items)

    def get_or_build(self, key: Hashable, build: Callable[[], PoolGraph]) -> PoolGraph:
        """The cached graph for ``key``, building (outside the lock) on a miss."""
        with self._lock:
            graph = self._items.get(key)
            if graph is not None:
                self._items.move_to_end(key)
                self._metrics.cache_hits.inc()
                return graph
        self._metrics.cache_misses.inc()
        graph = build()  # two threads may build the same key once each; both are correct
        with self._lock:
            self._items[key] = graph
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
            self._metrics.cache_entries.set(len(self._items))
        return graph
