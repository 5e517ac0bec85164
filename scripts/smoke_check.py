"""Check a running poolserve against closed-form answers (stdlib, NumPy and Pillow only).

    python scripts/smoke_check.py http://127.0.0.1:8000 --model netvlad_poolformer_s12_224

Waits for /health/ready, then checks /pool (JSON and npy bodies), /descriptor (multipart and
a raw image body), /models, /metrics and the error envelope. Runs against `make smoke`'s
server and, unchanged, against the container (its runtime image has no dev packages).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np
from PIL import Image


class SmokeError(AssertionError):
    """A check failed; the message says which and what came back."""


def say(line: str, stream: TextIO = sys.stdout) -> None:
    stream.write(line + "\n")
    stream.flush()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        if not isinstance(value, dict):
            raise SmokeError(f"expected a JSON object, got {type(value).__name__}")
        return value


@dataclass
class Server:
    base: str
    timeout: float = 60.0
    checks: list[str] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        req = urllib.request.Request(self.base + path, data=body, method=method)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return Reply(
                    resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
                )
        except urllib.error.HTTPError as err:
            return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeError(message)


def wait_ready(server: Server, timeout: float, server_pid: int | None) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server_pid is not None and not pid_alive(server_pid):
            raise SmokeError(f"server process {server_pid} exited before it was ready")
        try:
            reply = server.request("GET", "/health/ready")
            if reply.status == 200:
                return
            last = f"{reply.status} {reply.body[:200]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise SmokeError(f"/health/ready not 200 after {timeout:.0f} s (last: {last})")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by the shell) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def max_pool_2x2(x: np.ndarray) -> np.ndarray:
    """Closed-form 2x2/stride-2 max pool of an (N, C, H, W) array with even H and W."""
    n, c, h, w = x.shape
    pooled: np.ndarray = x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    return pooled


def check_live(server: Server) -> None:
    reply = server.request("GET", "/health/live")
    expect(reply.status == 200, f"/health/live answered {reply.status}")


def check_pool_json(server: Server) -> None:
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4) * np.float32(-1.5) + 7
    body = {
        "op": "max",
        "params": {"kernel_size": 2, "stride": 2},
        "tensor": {"shape": list(x.shape), "dtype": "float32", "data": x.ravel().tolist()},
    }
    reply = server.request(
        "POST", "/pool", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    expect(reply.status == 200, f"/pool JSON answered {reply.status}: {reply.body[:300]!r}")
    answer = reply.json()
    tensor = answer["tensor"]
    expect(isinstance(tensor, dict), f"/pool JSON has no tensor object: {answer}")
    assert isinstance(tensor, dict)
    got = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    np.testing.assert_allclose(got, max_pool_2x2(x), rtol=0, atol=0)


def check_pool_npy(server: Server) -> None:
    x = np.linspace(-3, 5, 1 * 3 * 6 * 8, dtype=np.float32).reshape(1, 3, 6, 8)
    buffer = io.BytesIO()
    np.save(buffer, x, allow_pickle=False)
    reply = server.request(
        "POST",
        "/pool?op=max&kernel_size=2&stride=2",
        buffer.getvalue(),
        {"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
    )
    expect(reply.status == 200, f"/pool npy answered {reply.status}: {reply.body[:300]!r}")
    got = np.load(io.BytesIO(reply.body), allow_pickle=False)
    np.testing.assert_allclose(got, max_pool_2x2(x), rtol=0, atol=0)


def check_error_envelope(server: Server) -> None:
    body = {"op": "no_such_op", "params": {}, "tensor": {"shape": [1], "data": [0.0]}}
    reply = server.request(
        "POST", "/pool", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    expect(400 <= reply.status < 500, f"unknown op answered {reply.status}, not a 4xx")
    envelope = reply.json()
    expect(
        all(isinstance(envelope.get(key), str) for key in ("error", "code")),
        f"error body is not the envelope: {envelope}",
    )


def make_image(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A PNG of smooth colour gradients plus noise: different seeds give different images."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    channels = [np.sin(xx / (17 + 9 * i) + yy / (23 + 5 * i) + phase[i]) for i in range(3)]
    rgb = (np.stack(channels, axis=-1) * 100 + 127 + rng.normal(0, 10, (h, w, 3))).clip(0, 255)
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(files: list[tuple[str, bytes]], field_name: str = "images") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; '
            f'filename="{name}"\r\nContent-Type: image/png\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def descriptors_of(answer: dict[str, object]) -> np.ndarray:
    return np.asarray(answer["descriptors"], dtype=np.float32)


def check_descriptor(server: Server, model: str) -> None:
    first, second = make_image(1), make_image(2)
    body, content_type = multipart([("a.png", first), ("b.png", second), ("a2.png", first)])
    reply = server.request(
        "POST", f"/descriptor?model={model}", body, {"Content-Type": content_type}
    )
    expect(reply.status == 200, f"/descriptor answered {reply.status}: {reply.body[:300]!r}")
    answer = reply.json()
    d = descriptors_of(answer)
    expect(answer["model"] == model, f"answered with model {answer['model']!r}, not {model!r}")
    expect(answer["count"] == 3 and d.shape[0] == 3, f"expected 3 descriptors, got {d.shape}")
    expect(answer["dim"] == d.shape[1], f"dim {answer['dim']} but rows of {d.shape[1]}")
    expect(bool(np.isfinite(d).all()), "descriptor has non-finite values")
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(d[0], d[2], atol=1e-6)  # same image, same descriptor
    # Seeded weights make descriptors nearly input-blind (they differ by ~1e-4), so the bar
    # is ten times the same-image tolerance, not a retrieval-quality margin.
    expect(float(np.abs(d[0] - d[1]).max()) > 1e-5, "two different images gave one descriptor")

    raw = server.request(
        "POST",
        f"/descriptor?model={model}",
        first,
        {"Content-Type": "image/png", "Accept": "application/x-npy"},
    )
    expect(raw.status == 200, f"raw /descriptor answered {raw.status}: {raw.body[:300]!r}")
    single = np.load(io.BytesIO(raw.body), allow_pickle=False)
    expect(single.shape == (1, d.shape[1]), f"raw npy descriptor has shape {single.shape}")
    np.testing.assert_allclose(single[0], d[0], atol=1e-6)


def check_models_and_metrics(server: Server, model: str) -> None:
    reply = server.request("GET", "/models")
    expect(reply.status == 200, f"/models answered {reply.status}")
    expect(model.encode() in reply.body, f"/models does not list {model!r}")
    metrics = server.request("GET", "/metrics")
    expect(metrics.status == 200, f"/metrics answered {metrics.status}")
    expect(b"# TYPE" in metrics.body, "/metrics is not Prometheus text")


def run_checks(server: Server, model: str) -> None:
    steps: list[tuple[str, Callable[[], None]]] = [
        ("health/live", lambda: check_live(server)),
        ("pool json", lambda: check_pool_json(server)),
        ("pool npy", lambda: check_pool_npy(server)),
        ("error envelope", lambda: check_error_envelope(server)),
        ("descriptor", lambda: check_descriptor(server, model)),
        ("models, metrics", lambda: check_models_and_metrics(server, model)),
    ]
    for name, step in steps:
        started = time.perf_counter()
        step()
        say(f"smoke_check: {name:<16} ok ({time.perf_counter() - started:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("base_url")
    parser.add_argument("--model", default="netvlad_poolformer_s12_224")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--server-pid", type=int, default=None)
    args = parser.parse_args(argv)
    server = Server(args.base_url.rstrip("/"))
    try:
        started = time.perf_counter()
        wait_ready(server, args.ready_timeout, args.server_pid)
        say(f"smoke_check: ready after {time.perf_counter() - started:.1f} s")
        run_checks(server, args.model)
    except (SmokeError, AssertionError, KeyError, ValueError, OSError) as exc:
        say(f"smoke_check: FAILED: {type(exc).__name__}: {exc}", sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
