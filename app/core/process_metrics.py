"""process_* metrics of every live uvicorn worker, labelled ``pid``.

prometheus_client's ProcessCollector reports only the process that answers the scrape, and
its multiprocess mode does not aggregate process metrics, so with several workers each
scrape would show a different worker's memory and CPU. This collector reads /proc for every
worker that has written to the multiprocess directory (its files are named after the pid)
and is still alive; PromQL sums them (``sum(process_resident_memory_bytes)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client reads it when it is imported: set, every value lives in its files."""


class WorkerProcessCollector:
    def __init__(self, directory: str, proc: str = "/proc") -> None:
        self.directory = Path(directory)
        self.proc = Path(proc)

    def live_pids(self) -> list[int]:
        """Pids of the multiprocess files (``counter_123.db``, ``gauge_livesum_123.db``)
        whose process still runs."""
        pids = {
            int(stem)
            for path in self.directory.glob("*.db")
            if (stem := path.stem.rsplit("_", 1)[-1]).isdigit()
        }
        return sorted(pid for pid in pids if (self.proc / str(pid)).is_dir())

    def _process(self, pid: int) -> ProcessCollector:
        return ProcessCollector(pid=lambda: pid, proc=str(self.proc), registry=None)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for pid in self.live_pids():
            for family in self._process(pid).collect():  # nothing when the process has just gone
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                merged.samples.extend(
                    s._replace(labels={**s.labels, "pid": str(pid)}) for s in family.samples
                )
        return list(families.values())
