"""The HTTP limits of ``python -m app`` (app/http_limits.py), spoken to over raw sockets: 431
for oversized headers, 408 for slow headers or bodies, the idle and keep-alive timeouts, the
connection cap, and ordinary requests (keep-alive included) unchanged."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.server import serve

MODELS = ["netvlad_head"]
LIMITS = {
    "max_header_bytes": 65536,
    "header_timeout_s": 1,
    "body_timeout_s": 1,
    "keepalive_timeout_s": 1,
}
JSON = {"Content-Type": "application/json"}
GET_LIVE = b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"
POOL = {
    "op": "max",
    "params": {"kernel_size": 2},
    "tensor": {"shape": [1, 1, 2, 2], "data": [1, 2, 3, 4]},
}

Address = tuple[str, int]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One raw TCP connection; every read is bounded by the socket timeout."""

    def __init__(self, address: Address, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readable(self, wait_s: float) -> bool:
        """Whether the server has sent something (or closed); only before the first read."""
        return bool(select.select([self.sock], [], [], wait_s)[0])

    def reply(self) -> Reply:
        status = int(self.file.readline(1024).split()[1])
        headers: dict[str, str] = {}
        for _ in range(64):
            line = self.file.readline(8192).strip()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.lower()] = value.strip()
        body = self.file.read(int(headers["content-length"]))
        return Reply(status, headers, body)

    def closed_within(self, limit_s: float) -> float:
        """Seconds until the server ends the connection, with nothing more sent."""
        started = time.monotonic()
        self.sock.settimeout(limit_s)
        with suppress(ConnectionResetError):
            assert self.file.read(1) == b""
        return time.monotonic() - started


def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: t", *(f"{k}: {v}" for k, v in headers.items())]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def assert_envelope(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["connection"] == "close"
    assert set(reply.json()) == {"error", "code"}
    assert reply.json()["code"] == code


def assert_live(address: Address) -> None:
    with Client(address) as client:
        client.send(GET_LIVE)
        reply = client.reply()
    assert reply.status == 200
    assert reply.json() == {"status": "live"}


def _address(url: str) -> Address:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


@pytest.fixture(scope="module")
def server(app_repository: Path) -> Iterator[Address]:
    with serve(app_repository, MODELS, **LIMITS) as running:
        yield _address(running.url)


def test_get_and_pool_on_one_connection(server: Address) -> None:
    with Client(server) as client:
        for _ in range(2):
            client.send(GET_LIVE)
            assert client.reply().json() == {"status": "live"}
        body = json.dumps(POOL).encode()
        client.send(request("POST", "/pool", JSON, body))
        reply = client.reply()
    assert reply.status == 200, reply.body
    assert reply.json()["tensor"]["data"] == [4]


def test_header_under_the_cap_is_served(server: Address) -> None:
    with Client(server) as client:
        client.send(request("GET", "/health/live", {"X-Pad": "a" * 60_000}))
        assert client.reply().status == 200


def test_oversized_header_is_431_at_once(server: Address) -> None:
    started = time.monotonic()
    with Client(server) as client:
        client.send(request("GET", "/health/live", {"X-Big": "a" * 200 * 1024}))
        assert_envelope(client.reply(), 431, "headers_too_large")
        client.closed_within(1.0)
    assert time.monotonic() - started < 0.5
    assert_live(server)


def test_slowloris_headers_are_408(server: Address) -> None:
    with Client(server) as client:
        started = time.monotonic()
        client.send(b"GET /health/live HTTP/1.1\r\nHost: t\r\n")
        for i in range(8):  # a header line every 0.5 s, never the blank line
            if client.readable(0.5):
                break
            client.send(b"X-Slow-%d: 1\r\n" % i)
        assert_envelope(client.reply(), 408, "request_timeout")
        assert 0.9 < time.monotonic() - started < 2.0
        client.closed_within(1.0)


def test_slow_body_is_408(server: Address) -> None:
    with Client(server) as client:
        head = request("POST", "/pool", JSON)
        client.send(head[:-2] + b"Content-Length: 1000\r\n\r\n" + b"{" * 10)
        started = time.monotonic()
        assert client.readable(3.0)
        assert_envelope(client.reply(), 408, "request_timeout")
        assert 0.9 < time.monotonic() - started < 2.0
        client.closed_within(1.0)


def test_idle_keepalive_connection_is_closed(server: Address) -> None:
    with Client(server) as client:
        client.send(GET_LIVE)
        assert client.reply().status == 200
        assert 0.8 < client.closed_within(3.0) < 2.0


def test_silent_connection_is_closed(server: Address) -> None:
    with Client(server) as client:
        assert 0.8 < client.closed_within(3.0) < 2.0


@pytest.fixture(scope="module")
def capped_server(app_repository: Path) -> Iterator[Address]:
    with serve(app_repository, MODELS, **LIMITS, max_connections=4) as running:
        yield _address(running.url)


def test_connections_beyond_the_cap_are_refused(capped_server: Address) -> None:
    with ExitStack() as stack:
        clients = [stack.enter_context(Client(capped_server)) for _ in range(20)]
        time.sleep(0.3)  # well inside the 1 s idle timeout of the admitted ones
        refused = [c for c in clients if c.readable(0)]
        held = [c for c in clients if c not in refused]
        assert len(held) <= 4
        for client in refused:
            assert_envelope(client.reply(), 503, "unavailable")
            client.closed_within(1.0)
        for client in held:
            assert client.closed_within(3.0) < 2.0
    time.sleep(0.2)  # the server sees the closes
    assert_live(capped_server)


@pytest.mark.slow
def test_limits_hold_with_two_workers(app_repository: Path) -> None:
    with serve(app_repository, MODELS, **LIMITS, workers=2) as running:
        address = _address(running.url)
        for _ in range(3):
            with Client(address) as client:
                client.send(request("GET", "/health/live", {"X-Big": "a" * 100_000}))
                assert_envelope(client.reply(), 431, "headers_too_large")
        assert_live(address)
