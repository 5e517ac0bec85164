"""A minimal HTTP/1.1 client on a plain socket, for benchmarks only.

httpx's sync client copies the rest of a large body on every partial send, so on loopback it
costs more than the server it measures. This client sends the header and the body straight
from their buffers and receives the reply into one buffer sized from ``Content-Length``: the
figure it gives is the server's (and the kernel's), not the client's.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytearray


class RawHttp:
    """One keep-alive connection; ``post`` sends a request and reads the whole reply."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.sock = socket.create_connection((self.host, parts.port or 80))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawHttp:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def post(
        self, path: str, body: bytes | memoryview, headers: Mapping[str, str] | None = None
    ) -> RawReply:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.sock.sendall(body)
        return self._reply()

    def get(self, path: str) -> RawReply:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode("latin-1"))
        return self._reply()

    def _reply(self) -> RawReply:
        head, rest = self._head()
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        body = bytearray(int(headers.get("content-length", "0")))
        view = memoryview(body)
        view[: len(rest)] = rest
        got = len(rest)
        while got < len(body):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise ConnectionError("the server closed the connection mid-reply")
            got += n
        return RawReply(int(status_line.split()[1]), headers, body)

    def _head(self) -> tuple[bytes, bytes]:
        """The status line and headers, and whatever of the body came with them."""
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk or len(buf) > HEAD_LIMIT:
                raise ConnectionError("no complete reply head")
            buf += chunk
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        return head, rest
