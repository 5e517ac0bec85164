"""Bounded shutdown: SIGTERM to a real ``python -m app`` lets in-flight requests finish,
refuses new connections, closes idle keep-alive ones, and the process exits within
``drain_timeout_s``, also when its in-flight work would run longer."""

from __future__ import annotations

import json
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.shutdown import FORCED_EXIT_CODE
from bench.server import free_port
from tests.app_fixtures import npy_bytes
from tests.app_process import children, clean_environment, served

SLACK_S = 1.5
"""Process teardown after the bound (interpreter exit, onnxruntime's own cleanup)."""
MEDIAN = "op=median&kernel_size=9&stride=1"
"""About 0.7 s on 2 CPU cores for a 1x8x256x256 input (tests/test_app_deadlines.py), so
about 0.2 s for 1x8x128x128 and 3 s for 1x4x512x512 on one thread."""


def _head(path: str, length: int, content_type: str) -> bytes:
    connection, accept = "close", content_type  # npy in, npy out (a big result has no JSON)
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nConnection: {connection}\r\nAccept: {accept}\r\n\r\n"
    ).encode()


def _reply(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of a Connection: close reply."""
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _one_reply(sock: socket.socket) -> bytes:
    """One reply on a kept-alive connection: its head, then Content-Length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(1 << 16)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(1 << 16)
    return head


def _pool_npy(port: int, x: np.ndarray) -> socket.socket:
    """A /pool median request sent whole; the reply is read later."""
    body = npy_bytes(x)
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(_head(f"/pool?{MEDIAN}", len(body), "application/x-npy") + body)
    return sock


class SlowUpload(threading.Thread):
    """A 2x2 max pool whose JSON body trickles in over ``seconds``: in flight all along."""

    X = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)

    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        body = {"op": "max", "params": {"kernel_size": 2}, "tensor": {"shape": [1, 1, 4, 4],
                "data": self.X.ravel().tolist()}}  # fmt: skip
        self.body = json.dumps(body).encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(_head("/pool", len(self.body), "application/json"))
        self.seconds = seconds
        self.reply: tuple[int, bytes] | None = None

    def run(self) -> None:
        pieces = 10
        step = -(-len(self.body) // pieces)
        for start in range(0, len(self.body), step):
            time.sleep(self.seconds / pieces)
            self.sock.sendall(self.body[start : start + step])
        self.reply = _reply(self.sock)

    def expected(self) -> list[float]:
        return [float(v) for v in self.X.reshape(1, 1, 2, 2, 2, 2).max(axis=(3, 5)).ravel()]


def _env(repository: Path, **settings: str) -> dict[str, str]:
    return clean_environment(
        POOLSERVE_MODEL_REPOSITORY=str(repository),
        POOLSERVE_MODELS="netvlad_head",
        POOLSERVE_PROVIDERS="CPUExecutionProvider",
        POOLSERVE_LOG_LEVEL="warning",
        POOLSERVE_INTRA_OP_THREADS="1",
        **settings,
    )


def _wait_exit(process: subprocess.Popen[bytes], seconds: float) -> float:
    """Seconds until the process exited; fails past ``seconds``."""
    start = time.monotonic()
    process.wait(timeout=seconds)
    return time.monotonic() - start


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(
    app_repository: Path, tmp_path: Path
) -> None:
    drain = 10.0  # room for a loaded machine: the requests need about 3 s
    port = free_port()
    x = np.random.default_rng(0).random((1, 8, 128, 128), dtype=np.float32)
    env = _env(app_repository, POOLSERVE_DRAIN_TIMEOUT_S=str(drain))
    with served(["--port", str(port)], env, tmp_path, port) as server:
        status, _ = _reply(_pool_npy(port, x))  # builds and caches the graph first
        assert status == 200
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        idle.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _one_reply(idle).startswith(b"HTTP/1.1 200")  # now idle, kept alive
        upload = SlowUpload(port, seconds=2.5)
        upload.start()
        inference = _pool_npy(port, x)
        time.sleep(0.5)  # both accepted and running
        server.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        time.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        assert idle.recv(1 << 16) == b"", "the idle keep-alive connection is closed"
        status, body = _reply(inference)
        assert status == 200, body[:200]
        upload.join(timeout=drain)
        assert upload.reply is not None
        assert upload.reply[0] == 200, upload.reply
        assert json.loads(upload.reply[1])["tensor"]["data"] == upload.expected()
        server.wait(timeout=drain + SLACK_S)
        print(f"exit {time.monotonic() - sent:.2f} s after SIGTERM, code {server.returncode}")
        assert time.monotonic() - sent < drain + SLACK_S
        assert server.returncode != FORCED_EXIT_CODE, "nothing was left: a clean exit"


@pytest.mark.slow
def test_work_longer_than_the_drain_does_not_hold_the_exit(
    app_repository: Path, tmp_path: Path
) -> None:
    drain = 1.0
    port = free_port()
    small = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    big = np.random.default_rng(1).random((1, 4, 512, 512), dtype=np.float32)  # 3 to 6 s
    env = _env(
        app_repository,
        POOLSERVE_DRAIN_TIMEOUT_S=str(drain),
        POOLSERVE_MAX_POOL_WORK=str(10**11),
        POOLSERVE_MAX_POOL_MEMORY_BYTES=str(2 << 30),
    )
    with served(["--port", str(port)], env, tmp_path, port) as server:
        assert _reply(_pool_npy(port, small))[0] == 200  # starts the graph builder
        builders = children(server.pid)
        assert builders, "the /pool graph builder runs as a child process"
        slow = _pool_npy(port, big)
        time.sleep(0.5)  # running on onnxruntime's thread
        assert not select.select([slow], [], [], 0)[0], "admitted and still running"
        server.send_signal(signal.SIGTERM)
        took = _wait_exit(server, drain + SLACK_S)
        print(f"exit {took:.2f} s after SIGTERM, code {server.returncode}")
        assert took < drain + SLACK_S
        status, body = _reply(slow)  # cut by the drain: the envelope, not uvicorn's 500
        assert status == 503
        assert json.loads(body)["code"] == "shutting_down"
        deadline = time.monotonic() + 5
        while any(Path(f"/proc/{pid}").exists() for pid in builders):
            assert time.monotonic() < deadline, "the graph builder outlived the server"
            time.sleep(0.1)


def test_the_watchdog_ends_a_process_whose_exit_hangs_and_its_children() -> None:
    # A process stuck after shutdown (a non-daemon thread that never ends), with a child.
    script = (
        "import multiprocessing, threading, time\n"
        "from app.shutdown import arm_exit_watchdog\n"
        "if __name__ == '__main__':\n"
        "    child = multiprocessing.get_context('spawn').Process(target=time.sleep, args=(60,))\n"
        "    child.start()\n"
        "    print(child.pid, flush=True)\n"
        "    threading.Thread(target=time.sleep, args=(60,)).start()\n"
        "    arm_exit_watchdog(0.5)\n"
    )
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    child = int(process.stdout.readline())
    process.wait(timeout=20)
    assert process.returncode == FORCED_EXIT_CODE
    assert time.monotonic() - start < 15
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and _state(child) != "Z":
        assert time.monotonic() < deadline, "the child outlived the watchdog"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
