"""Metrics across uvicorn workers: a private PROMETHEUS_MULTIPROC_DIR for one run, and
uvicorn's supervisor telling prometheus_client when a worker is gone.

Kept apart from app.core.metrics so that the supervisor process imports neither
onnxruntime nor the app: it only starts workers, which build everything themselves.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client.multiprocess import mark_process_dead
from uvicorn.supervisors import Multiprocess

from app.core.process_metrics import MULTIPROC_ENV


@contextmanager
def private_metrics_dir() -> Iterator[str]:
    """A fresh directory in PROMETHEUS_MULTIPROC_DIR for the workers started in the block
    (they inherit the environment); removed with its files afterwards. Never a directory
    from the environment: files of an earlier run would add to this run's totals."""
    directory = tempfile.mkdtemp(prefix="poolserve-metrics-")
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


class MetricsMultiprocess(Multiprocess):
    """uvicorn's worker supervisor; a worker it replaces (died, hung, or restarted on
    SIGHUP) is marked dead, so its live gauges (requests waiting) stop counting. Its
    counters stay: totals include the requests it served."""

    def keep_subprocess_alive(self) -> None:
        before = self._pids()
        super().keep_subprocess_alive()
        self._mark_gone(before)

    def restart_all(self) -> None:
        before = self._pids()
        super().restart_all()
        self._mark_gone(before)

    def _pids(self) -> set[int]:
        return {p.pid for p in self.processes if p.pid is not None}

    def _mark_gone(self, before: set[int]) -> None:
        directory = os.environ.get(MULTIPROC_ENV)
        for pid in before - self._pids():
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
