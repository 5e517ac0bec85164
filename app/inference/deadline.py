"""Stopping onnxruntime runs: at their deadline, or when their client has gone.

onnxruntime checks ``RunOptions.terminate`` between nodes and then fails the run, which
frees its worker thread (and so its inference slot) at once. ``RunControl`` holds the
options of one request's runs and says why they were stopped; ``Watchdog`` is one thread
that stops every run still going at its deadline.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time

import onnxruntime as ort

from app.core.errors import ErrorCode


class RunControl:
    """The runs of one request (or one batch), and why they were stopped, if they were."""

    def __init__(self) -> None:
        self._options: list[ort.RunOptions] = []
        self._lock = threading.Lock()
        self.reason: ErrorCode | None = None

    def new_run(self) -> ort.RunOptions:
        """Options for one more run; already terminated if the request was stopped."""
        options = ort.RunOptions()
        with self._lock:
            self._options.append(options)
            if self.reason is not None:
                options.terminate = True
        return options

    def stop(self, reason: ErrorCode, options: ort.RunOptions | None = None) -> None:
        """Terminate one run (``options``), or every run of this request; the first reason
        given is the one reported."""
        with self._lock:
            self.reason = self.reason or reason
            for run in [options] if options is not None else self._options:
                run.terminate = True


class Ticket:
    """One run under watch; ``done`` once it ended, so its deadline no longer applies."""

    def __init__(self, control: RunControl, options: ort.RunOptions) -> None:
        self.control, self.options, self.done = control, options, False


class Watchdog:
    """One daemon thread that stops every run still going at its deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Ticket]] = []
        self._ids = itertools.count()
        self._wake = threading.Condition()
        threading.Thread(target=self._loop, name="poolserve-watchdog", daemon=True).start()

    def watch(self, control: RunControl, options: ort.RunOptions, seconds: float) -> Ticket:
        ticket = Ticket(control, options)
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._ids), ticket))
            self._wake.notify()
        return ticket

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                _, _, ticket = heapq.heappop(self._heap)
            if not ticket.done:
                ticket.control.stop(ErrorCode.DEADLINE_EXCEEDED, ticket.options)
