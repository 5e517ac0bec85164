"""Deadlines and cancellation: a run past ``inference_deadline_s``, or whose client has
gone, is terminated through onnxruntime's ``RunOptions.terminate`` and frees its slot."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from app.core.errors import ErrorCode
from app.inference.deadline import RunControl, Watchdog
from bench.server import serve
from export.runtime.graph import build_pool_graph
from export.runtime.sessions import ORT_ERRORS, create_session
from models.pooling import parse_params
from tests.app_fixtures import AppClient, app_settings, create_app, npy_bytes

NPY = "application/x-npy"
SLOW = {"op": "median", "kernel_size": "9", "stride": "1"}
"""About 0.7 s on 2 CPU cores for SLOW_X, under every default budget."""
SLOW_X = np.random.default_rng(0).random((1, 8, 256, 256), dtype=np.float32)
QUICK = {
    "op": "max",
    "params": {"kernel_size": 2},
    "tensor": {"shape": [1, 1, 2, 2], "data": [1, 2, 3, 4]},
}


def _slow_session():
    params = parse_params("median", kernel_size=9, stride=1)
    return create_session(build_pool_graph("median", params), ["CPUExecutionProvider"])


def test_a_stopped_run_fails_at_once_with_the_reason() -> None:
    session, control = _slow_session(), RunControl()
    session.run(None, {"x": SLOW_X[:, :1, :64, :64]})  # warm
    options = control.new_run()
    threading.Timer(0.05, control.stop, (ErrorCode.CANCELLED,)).start()
    start = time.perf_counter()
    with pytest.raises(ORT_ERRORS):
        session.run(None, {"x": SLOW_X}, options)
    assert time.perf_counter() - start < 0.5
    assert control.reason == ErrorCode.CANCELLED
    assert control.new_run().terminate  # later runs of a stopped request stop at once


def test_the_watchdog_stops_only_runs_still_going() -> None:
    watchdog, finished, going = Watchdog(), RunControl(), RunControl()
    done = watchdog.watch(finished, finished.new_run(), 0.05)
    done.done = True
    running = going.new_run()
    watchdog.watch(going, running, 0.05)
    time.sleep(0.3)
    assert finished.reason is None
    assert going.reason == ErrorCode.DEADLINE_EXCEEDED
    assert running.terminate


def test_a_run_past_its_deadline_is_504_and_frees_its_slot(app_repository: Path) -> None:
    settings = app_settings(
        app_repository, inference_deadline_s=0.1, max_concurrent_inferences=1, max_waiting=0
    )
    app = AppClient(create_app(settings)).start()
    try:
        r = app.post("/pool", params=SLOW, content=npy_bytes(SLOW_X), headers={"content-type": NPY})
        assert r.status_code == 504, r.text
        assert r.json()["code"] == "deadline_exceeded"
        # one slot and no waiting room: a slot still held would make this a 503
        assert app.post("/pool", json=QUICK).status_code == 200
    finally:
        app.close()


def _send_and_hang_up(url: str, body: bytes) -> None:
    """POST the slow request over a raw socket, then close it before the answer."""
    target = urlparse(url)
    query = "&".join(f"{k}={v}" for k, v in SLOW.items())
    head = (
        f"POST /pool?{query} HTTP/1.1\r\nHost: {target.hostname}\r\n"
        f"Content-Type: {NPY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((target.hostname, target.port), timeout=5) as sock:
        sock.sendall(head + body)
        time.sleep(0.15)  # the run has started


@pytest.mark.slow
def test_a_client_that_goes_away_frees_its_slot(app_repository: Path) -> None:
    settings = {"max_concurrent_inferences": 1, "max_waiting": 8}
    with (
        serve(app_repository, ["netvlad_head"], **settings) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        body, headers = npy_bytes(SLOW_X), {"content-type": NPY}
        start = time.perf_counter()
        slow = client.post("/pool", params=SLOW, content=body, headers=headers)
        assert slow.status_code == 200
        full_run = time.perf_counter() - start  # built and warm now
        for _ in range(3):  # three abandoned runs back to back
            _send_and_hang_up(server.url, body)
        start = time.perf_counter()
        assert client.post("/pool", json=QUICK).status_code == 200
        # without cancellation the quick request would wait for the three slow runs
        assert time.perf_counter() - start < full_run
