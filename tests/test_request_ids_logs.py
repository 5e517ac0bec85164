"""Request ids and log lines: in-process (httpx on the ASGI app, with the service's own log
handler writing into a buffer), and one real ``python -m app`` writing JSON lines to stderr.

References: the client's own id and the bytes it sent and received, the status and envelope
the reply really carried, RFC 4122 (a generated id is a version-4 uuid), ISO 8601 (Python's
``datetime.fromisoformat``), and JSON (every line parses on its own).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import numpy as np
import pytest

from app.core.logs import make_handler
from bench.server import free_port, wait_ready
from tests.app_fixtures import AppClient

POOL_BODY = {
    "op": "max",
    "params": {"kernel_size": 2},
    "tensor": {"shape": [1, 1, 2, 2], "dtype": "float32", "data": [1, 4, 3, 2]},
}
MARKER = b"QZXV-TENSOR-MARKER-7731"
"""Bytes no log line may ever hold: it only travels in request bodies."""
CLIENT_LOGGERS = ("httpx", "httpcore")
"""The tests' own client logs its URLs: not the service's lines."""
MakeClient = Callable[..., AppClient]
Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """Every record logged during the test, through the service's JSON handler, parsed."""
    buffer = io.StringIO()
    handler = make_handler("json", buffer)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lambda: [
            line
            for line in map(json.loads, buffer.getvalue().splitlines())
            if not line["logger"].startswith(CLIENT_LOGGERS)
        ]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def access_lines(lines: Lines, request_id: str) -> list[dict[str, Any]]:
    return [
        line
        for line in lines()
        if line["logger"] == "poolserve.access" and line["request_id"] == request_id
    ]


def only_access_line(lines: Lines, request_id: str) -> dict[str, Any]:
    found = access_lines(lines, request_id)
    assert len(found) == 1, found
    return found[0]


# request ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sane", ["abc", "req-42.retry:1_a", "A" * 128, "0"])
def test_a_sane_request_id_is_honoured(app_client: AppClient, json_lines: Lines, sane: str) -> None:
    response = app_client.get("/models", headers={"X-Request-ID": sane})
    assert response.headers["x-request-id"] == sane
    assert only_access_line(json_lines, sane)["status"] == 200


@pytest.mark.parametrize(
    "insane", ["", "has space", "A" * 129, "semi;colon", "new\tline", "é", "a/b", "{x}"]
)
def test_an_insane_request_id_is_replaced_not_refused(
    app_client: AppClient, json_lines: Lines, insane: str
) -> None:
    response = app_client.get("/models", headers={"X-Request-ID": insane.encode()})
    assert response.status_code == 200
    given = response.headers["x-request-id"]
    assert given != insane
    assert uuid.UUID(hex=given).version == 4
    assert only_access_line(json_lines, given)["status"] == 200
    assert all(insane not in json.dumps(line) for line in json_lines() if insane)


def test_an_absent_request_id_is_generated_fresh(app_client: AppClient) -> None:
    ids = [app_client.get("/health/live").headers["x-request-id"] for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(uuid.UUID(hex=i).version == 4 and i == uuid.UUID(hex=i).hex for i in ids)


def test_every_error_reply_echoes_the_id_and_logs_its_code(
    make_client: MakeClient, json_lines: Lines
) -> None:
    """404, 405, 413 (the body-limit middleware, before any route), 415, 422 and 401."""
    client = make_client(max_body_bytes=4096)
    keyed = make_client(api_keys=["k"])
    requests: dict[str, tuple[AppClient, str, str, dict[str, Any]]] = {
        "e404": (client, "GET", "/no/such/route", {}),
        "e405": (client, "DELETE", "/pool", {}),
        "e413": (client, "POST", "/pool", {"content": bytes(8192)}),
        "e415": (client, "POST", "/descriptor", {"content": b"x",
                                                 "headers": {"Content-Type": "text/plain"}}),
        "e422": (client, "POST", "/pool", {"json": {**POOL_BODY, "op": "no_such_op"}}),
        "e401": (keyed, "POST", "/pool", {"json": POOL_BODY}),
    }  # fmt: skip
    for request_id, (app, method, url, kwargs) in requests.items():
        headers = {**kwargs.pop("headers", {}), "X-Request-ID": request_id}
        response = app.request(method, url, headers=headers, **kwargs)
        assert response.status_code == int(request_id[1:]), response.text
        assert response.headers["x-request-id"] == request_id
        line = only_access_line(json_lines, request_id)
        assert (line["status"], line["code"]) == (response.status_code, response.json()["code"])
        routed = request_id not in ("e404", "e413", "e401")  # 413, 401: before routing
        assert line["route"] == (url if routed else None)


def test_an_unexpected_fault_is_a_500_with_its_id(
    make_client: MakeClient, json_lines: Lines
) -> None:
    """A fault (here a route that raises, added for the test) answers the envelope with the
    id, logs its traceback once under that id, and its access line says 500 internal."""
    client = make_client()

    async def broken() -> None:
        raise RuntimeError("a fault")

    client.app.add_api_route("/broken", broken)
    response = client.get("/broken", headers={"X-Request-ID": "fault-1"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error", "code": "internal"}
    assert response.headers["x-request-id"] == "fault-1"
    faults = [line for line in json_lines() if "exception" in line]
    assert [fault["request_id"] for fault in faults] == ["fault-1"]
    assert "RuntimeError: a fault" in faults[0]["exception"]
    line = only_access_line(json_lines, "fault-1")
    assert (line["status"], line["code"], line["route"]) == (500, "internal", "/broken")


def test_lines_logged_while_handling_carry_the_id(
    make_client: MakeClient, json_lines: Lines
) -> None:
    """On the event loop and on a worker thread (anyio copies the context)."""
    client = make_client()
    log = logging.getLogger("poolserve.test")

    async def chatty() -> dict[str, str]:
        log.info("on the loop")
        await anyio.to_thread.run_sync(log.info, "on a thread")
        return {}

    client.app.add_api_route("/chatty", chatty)
    for request_id in ("first", "second"):
        client.get("/chatty", headers={"X-Request-ID": request_id})
    mine = [(line["message"], line["request_id"]) for line in json_lines()
            if line["logger"] == "poolserve.test"]  # fmt: skip
    assert mine == [
        ("on the loop", "first"), ("on a thread", "first"),
        ("on the loop", "second"), ("on a thread", "second"),
    ]  # fmt: skip


# access lines --------------------------------------------------------------------------------


def test_the_access_line_has_every_field(app_client: AppClient, json_lines: Lines) -> None:
    body = json.dumps(POOL_BODY).encode()
    before = datetime.now().astimezone()
    response = app_client.post(
        "/pool", content=body, headers={"Content-Type": "application/json", "X-Request-ID": "f"}
    )
    assert response.status_code == 200
    line = only_access_line(json_lines, "f")
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= stamp <= datetime.now().astimezone()
    assert line["level"] == "INFO"
    assert (line["method"], line["route"], line["status"]) == ("POST", "/pool", 200)
    assert line["op"] == "max"
    assert (line["bytes_in"], line["bytes_out"]) == (len(body), len(response.content))
    assert 0 < line["latency_ms"] < 60_000
    assert "code" not in line
    assert "model" not in line


def test_the_route_is_the_template_and_the_model_is_named(
    app_client: AppClient, json_lines: Lines
) -> None:
    x = np.array([[[[1, 4], [3, 2]]]], np.float32)
    body = {
        "inputs": [{"name": "x", "shape": [1, 1, 2, 2], "datatype": "FP32",
                    "data": x.ravel().tolist()}],
        "parameters": {"kernel_size": 2},
    }  # fmt: skip
    response = app_client.post(
        "/v2/models/pool.max/infer", json=body, headers={"X-Request-ID": "v2"}
    )
    assert response.status_code == 200, response.text
    line = only_access_line(json_lines, "v2")
    assert line["route"] == "/v2/models/{model}/infer"
    assert (line["model"], line["op"]) == ("pool.max", "max")
    app_client.get("/v2/models/no.such.model", headers={"X-Request-ID": "v2-404"})
    missing = only_access_line(json_lines, "v2-404")
    assert (missing["route"], missing["status"], missing["code"]) == (
        "/v2/models/{model}", 404, "unknown_model",
    )  # fmt: skip


def test_an_unmatched_route_logs_no_path(app_client: AppClient, json_lines: Lines) -> None:
    """A client's path is not a route: it is not logged (it may be anything)."""
    app_client.get("/secret-" + MARKER.decode(), headers={"X-Request-ID": "nf"})
    line = only_access_line(json_lines, "nf")
    assert (line["route"], line["status"], line["code"]) == (None, 404, "not_found")
    assert all(MARKER.decode() not in json.dumps(line) for line in json_lines())


def test_no_line_holds_request_data(make_client: MakeClient, json_lines: Lines) -> None:
    """Tensors and images carrying a marker, valid or refused, at DEBUG: the marker is in no
    log line, though every request logged one."""
    client = make_client()
    marked = np.frombuffer(MARKER * 4, np.uint8).reshape(1, 1, 4, -1).astype(np.float32)
    npy = io.BytesIO()
    np.save(npy, np.frombuffer(MARKER * 4, np.uint8).reshape(1, 1, 4, -1))
    image = b"\xff\xd8\xff\xe0" + MARKER * 64  # a JPEG start, then no image
    npy_body = io.BytesIO()
    np.save(npy_body, marked)
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/pool?op=max&kernel_size=2", {"content": npy_body.getvalue(),
                                                "headers": {"Content-Type": "application/x-npy"}}),
        ("POST", "/pool?op=max", {"content": npy.getvalue(),
                                  "headers": {"Content-Type": "application/x-npy"}}),
        ("POST", "/descriptor", {"content": image, "headers": {"Content-Type": "image/jpeg"}}),
        ("POST", "/descriptor", {"files": [("images", ("m.jpg", image, "image/jpeg"))]}),
        ("POST", "/pool", {"json": {**POOL_BODY, "params": {"kernel_size": MARKER.decode()}}}),
        ("POST", "/pool", {"content": b'{"op": "max", ' + MARKER,
                           "headers": {"Content-Type": "application/json"}}),
        ("POST", "/v2/models/pool.max/infer", {"json": {"inputs": [
            {"name": "x", "shape": [1], "datatype": "BYTES", "data": [MARKER.decode()]}]}}),
    ]  # fmt: skip
    statuses = []
    for i, (method, url, kwargs) in enumerate(requests):
        headers = {**kwargs.pop("headers", {}), "X-Request-ID": f"marked-{i}"}
        statuses.append(client.request(method, url, headers=headers, **kwargs).status_code)
        only_access_line(json_lines, f"marked-{i}")
    assert statuses[0] == 200
    assert all(400 <= s < 500 for s in statuses[1:]), statuses
    text = "\n".join(json.dumps(line) for line in json_lines())
    assert MARKER.decode() not in text
    assert MARKER.hex() not in text


def test_the_text_format_has_the_same_fields(app_client: AppClient) -> None:
    body = json.dumps(POOL_BODY).encode()
    buffer = io.StringIO()
    handler = make_handler("text", buffer)
    access = logging.getLogger("poolserve.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        response = app_client.post(
            "/pool",
            content=body,
            headers={"Content-Type": "application/json", "X-Request-ID": "text-1"},
        )
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
    (line,) = [line for line in buffer.getvalue().splitlines() if "[text-1]" in line]
    stamp, level, logger, request_id, rest = line.split(" ", 4)
    assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)
    assert (level, logger, request_id) == ("INFO", "poolserve.access", "[text-1]")
    pattern = rf"POST /pool 200 [0-9.]+ ms in={len(body)} out={len(response.content)} op=max"
    assert re.fullmatch(pattern, rest), rest


# a real process ------------------------------------------------------------------------------


NOT_OURS = (
    "/",  # multiprocessing's resource tracker: its own process, sharing stderr, warns at exit
    "  warnings.warn(",
)


@pytest.mark.parametrize("workers", [1, 2])
def test_python_m_app_writes_json_lines_to_stderr(
    app_repository: Path, tmp_path: Path, workers: int
) -> None:
    """With 2 workers, the lines of the worker processes (uvicorn configures each one with
    the service's logging config) are JSON as well."""
    port = free_port()
    env = {
        **os.environ,
        "POOLSERVE_MODEL_REPOSITORY": str(app_repository),
        "POOLSERVE_MODELS": "netvlad_head",
        "POOLSERVE_PROVIDERS": "CPUExecutionProvider",
        "POOLSERVE_PORT": str(port),
        "POOLSERVE_LOG_FORMAT": "json",
        "POOLSERVE_WORKERS": str(workers),
    }
    url = f"http://127.0.0.1:{port}"
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "app"], env=env, stderr=sink)
        try:
            wait_ready(f"{url}/health/ready", process)
            with httpx.Client(base_url=url, timeout=30) as http:
                ok = http.post("/pool", json=POOL_BODY, headers={"X-Request-ID": "proc-1"})
                missing = http.get("/nowhere", headers={"X-Request-ID": "proc-2"})
        finally:
            process.terminate()
            process.wait(timeout=60)
    assert (ok.status_code, missing.status_code) == (200, 404)
    written = stderr.read_text().splitlines()
    lines = [json.loads(line) for line in written if not line.startswith(NOT_OURS)]
    by_id = {line["request_id"]: line for line in lines if line["logger"] == "poolserve.access"}
    assert (by_id["proc-1"]["route"], by_id["proc-1"]["status"]) == ("/pool", 200)
    assert by_id["proc-2"]["code"] == "not_found"
    loggers = {line["logger"] for line in lines}
    assert "uvicorn.error" in loggers  # uvicorn's own lines come through the same handler
    assert "uvicorn.access" not in loggers  # replaced by poolserve.access
    for line in lines:
        datetime.fromisoformat(line["timestamp"])
        assert {"timestamp", "level", "logger", "message", "request_id"} <= set(line)
