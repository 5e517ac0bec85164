"""Bounded LRU of built /pool graphs, each kept as an onnxruntime session, weighed in bytes.

The key is everything the graph depends on: (op, lowering kind, validated params, dtype,
static H/W). Validated params are frozen pydantic models, so they hash by value. An entry
weighs its serialized model (weights included) plus a fixed per-session allowance: its runs
shrink the CPU arena back after each run (``Runner.run_session(shrink_arena=True)``), so a
cached session does not keep its peak resident (measured in docs/throughput.md).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import onnxruntime as ort

from app.core.metrics import Metrics

SESSION_BYTES = 1 << 20
"""What one idle onnxruntime session holds besides its model (kernels, plans), about."""


@dataclass(frozen=True)
class PoolGraph:
    session: ort.InferenceSession
    providers: tuple[str, ...]
    input_names: tuple[str, ...]
    model_bytes: int

    @property
    def weight(self) -> int:
        return self.model_bytes + SESSION_BYTES


class GraphCache:
    def __init__(self, max_bytes: int, metrics: Metrics) -> None:
        self._max_bytes = max_bytes
        self._items: OrderedDict[Hashable, PoolGraph] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._metrics = metrics

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> PoolGraph | None:
        """The cached graph for ``key`` (now the most recently used), or None: a miss."""
        with self._lock:
            graph = self._items.get(key)
            if graph is not None:
                self._items.move_to_end(key)
        (self._metrics.cache_hits if graph is not None else self._metrics.cache_misses).inc()
        return graph

    def put(self, key: Hashable, graph: PoolGraph) -> PoolGraph:
        """Add ``graph`` (two requests may build the same key; either is correct) and evict
        the least recently used until the cache fits; the newest entry stays even when it
        alone is over, since the run that built it still needs it."""
        with self._lock:
            evicted = self._store(key, graph)
        del evicted  # their sessions are freed here, outside the lock hits take
        return graph

    def _store(self, key: Hashable, graph: PoolGraph) -> list[PoolGraph]:
        old = self._items.pop(key, None)
        self._bytes += graph.weight - (old.weight if old else 0)
        self._items[key] = graph
        evicted = [old] if old else []
        while self._bytes > self._max_bytes and len(self._items) > 1:
            _, out = self._items.popitem(last=False)
            self._bytes -= out.weight
            evicted.append(out)
        self._metrics.cache_entries.set(len(self._items))
        self._metrics.cache_bytes.set(self._bytes)
        return evicted
