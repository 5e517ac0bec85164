"""API keys, open probes and CORS, in-process (httpx on the ASGI app), and on a real server:
the gRPC service with tritonclient's gRPC client sending the key as metadata, and start-up
refusing an unusable key file.

References: RFC 6750 (a 401 challenges with ``WWW-Authenticate: Bearer``), the Fetch
standard's CORS protocol (a preflight answers with the allowed origin, methods and headers),
and the real clients.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from app.core.config import Settings
from app.grpc_server import start_grpc
from app.inference.sessions import StartupError
from bench.server import free_port, serve
from tests.app_fixtures import AppClient, app_settings, create_app

KEYS = ["key-one", "key-two", "key-three"]
PROBES = ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics")
POOL_BODY = {
    "op": "max",
    "params": {"kernel_size": 2},
    "tensor": {"shape": [1, 1, 2, 2], "dtype": "float32", "data": [1, 4, 3, 2]},
}
ORIGIN = "https://app.example"
MakeClient = Callable[..., AppClient]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def grpc_bearer(key: str) -> dict[str, str]:
    """gRPC metadata keys are lower-case (grpc refuses others)."""
    return {"authorization": f"Bearer {key}"}


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "unauthorized"
    assert set(response.json()) == {"error", "code"}
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.fixture
def keyed(make_client: MakeClient) -> AppClient:
    return make_client(api_keys=KEYS)


# API keys ------------------------------------------------------------------------------------


def test_without_keys_everything_is_open(app_client: AppClient) -> None:
    assert app_client.get("/models").status_code == 200
    assert app_client.post("/pool", json=POOL_BODY).status_code == 200


def test_a_request_without_a_key_is_401_in_the_envelope(keyed: AppClient) -> None:
    assert_unauthorized(keyed.post("/pool", json=POOL_BODY))
    assert_unauthorized(keyed.get("/models"))
    assert_unauthorized(keyed.get("/docs"))  # the API's description is not a probe


@pytest.mark.parametrize(
    "authorization",
    ["Bearer wrong", "Bearer key-one2", "Bearer key-on", "Basic a2V5LW9uZQ==", "key-one",
     "Bearer", "Bearer ", "Token key-one"],
)  # fmt: skip
def test_a_wrong_key_or_scheme_is_401(keyed: AppClient, authorization: str) -> None:
    assert_unauthorized(
        keyed.post("/pool", json=POOL_BODY, headers={"Authorization": authorization})
    )


@pytest.mark.parametrize("key", KEYS)
def test_every_key_passes(keyed: AppClient, key: str) -> None:
    response = keyed.post("/pool", json=POOL_BODY, headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.json()["tensor"]["data"] == [4.0]  # max of 1, 4, 3, 2


def test_the_scheme_is_case_insensitive(keyed: AppClient) -> None:
    """RFC 9110 11.1: the auth scheme is case-insensitive; the token is not."""
    assert keyed.get("/models", headers={"Authorization": "bearer key-two"}).status_code == 200
    assert_unauthorized(keyed.get("/models", headers={"Authorization": "Bearer KEY-TWO"}))


def test_keys_from_a_file(make_client: MakeClient, tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# the ops team's key\nfile-key-a\n\n   file-key-b  \n#commented-key\n")
    client = make_client(api_keys=["setting-key"], api_key_file=path)
    for key in ("setting-key", "file-key-a", "file-key-b"):
        assert client.get("/models", headers=bearer(key)).status_code == 200, key
    for key in ("#commented-key", "commented-key", "# the ops team's key"):
        assert_unauthorized(client.get("/models", headers=bearer(key)))


@pytest.mark.parametrize("content", [None, "", "# only a comment\n\n"])
def test_an_unusable_key_file_stops_start_up(
    app_repository: Path, tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(StartupError, match="api_key_file .*keys"):
        create_app(app_settings(app_repository, api_key_file=path))


def test_probes_stay_open_by_default(keyed: AppClient) -> None:
    for path in PROBES:
        assert keyed.get(path).status_code == 200, path
    assert_unauthorized(keyed.get("/v2"))  # server metadata is not a probe


def test_closed_probes_need_a_key(make_client: MakeClient) -> None:
    client = make_client(api_keys=KEYS, open_probes=False)
    for path in PROBES:
        assert_unauthorized(client.get(path))
        assert client.get(path, headers=bearer(KEYS[0])).status_code == 200, path


def test_every_key_is_compared_in_constant_time(
    keyed: AppClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hmac.compare_digest against each key, and no early exit when the first one matches."""
    calls: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module app.core.auth calls
    for key in (KEYS[0], KEYS[-1], "wrong"):
        calls.clear()
        keyed.get("/models", headers=bearer(key))
        assert len(calls) == len(KEYS), key
        assert {len(a) for a, _ in calls} | {len(b) for _, b in calls} == {32}  # digests


# CORS ----------------------------------------------------------------------------------------


def preflight(client: AppClient, origin: str = ORIGIN, method: str = "POST") -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    return client.request("OPTIONS", "/pool", headers=headers)


def test_without_cors_a_preflight_is_a_405_envelope(keyed: AppClient) -> None:
    response = preflight(keyed)  # API keys set: a preflight still needs none
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "access-control-allow-origin" not in response.headers


def test_with_cors_a_preflight_is_answered_without_a_key(make_client: MakeClient) -> None:
    client = make_client(api_keys=KEYS, cors_allow_origins=[ORIGIN], cors_max_age_s=120)
    response = preflight(client)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type"} <= set(allowed.replace(" ", "").split(","))
    assert response.headers["access-control-max-age"] == "120"


def test_a_refused_preflight_is_a_400_envelope(make_client: MakeClient) -> None:
    client = make_client(cors_allow_origins=[ORIGIN])
    other_origin = preflight(client, origin="https://evil.example")
    other_method = preflight(client, method="DELETE")
    for response in (other_origin, other_method):
        assert response.status_code == 400
        assert response.json()["code"] == "cors_refused"
    assert "access-control-allow-origin" not in other_origin.headers
    assert "origin" in other_origin.json()["error"]
    assert "method" in other_method.json()["error"]


def test_cross_origin_replies_are_readable_by_the_page(make_client: MakeClient) -> None:
    """The allowed origin on every reply, 401 included (so the page can read the error), and
    the request id among the headers a script may read."""
    client = make_client(api_keys=KEYS, cors_allow_origins=[ORIGIN])
    ok = client.post("/pool", json=POOL_BODY, headers={"Origin": ORIGIN, **bearer(KEYS[1])})
    refused = client.post("/pool", json=POOL_BODY, headers={"Origin": ORIGIN})
    assert (ok.status_code, refused.status_code) == (200, 401)
    for response in (ok, refused):
        assert response.headers["access-control-allow-origin"] == ORIGIN
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "x-request-id" in exposed
    other = client.get("/models", headers={"Origin": "https://evil.example", **bearer(KEYS[1])})
    assert "access-control-allow-origin" not in other.headers


# gRPC ----------------------------------------------------------------------------------------


@contextmanager
def grpc_only(settings: Settings) -> Iterator[str]:
    """The gRPC service alone, on a loop in a thread, with no models (calls that need them
    answer UNAVAILABLE not_ready): enough to see which calls get past the key check."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start_grpc(lambda: None, settings), loop).result(30)
    try:
        yield f"127.0.0.1:{settings.grpc_port}"
    finally:
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def grpc_status(call: Callable[[], Any]) -> str:
    try:
        call()
    except InferenceServerException as exc:
        return str(exc.status())
    return "OK"


@pytest.mark.parametrize("open_probes", [True, False])
def test_grpc_calls_need_a_key(open_probes: bool) -> None:
    settings = Settings(grpc_port=free_port(), api_keys=KEYS, open_probes=open_probes)
    with grpc_only(settings) as address:
        client = triton.InferenceServerClient(address)
        try:
            live = grpc_status(client.is_server_live)
            keyed_live = grpc_status(lambda: client.is_server_live(headers=grpc_bearer(KEYS[2])))
            metadata = grpc_status(lambda: client.get_model_metadata("pool.max"))
            wrong = grpc_bearer("wrong")
            wrong_key = grpc_status(lambda: client.get_model_metadata("pool.max", headers=wrong))
            keyed = grpc_status(
                lambda: client.get_model_metadata("pool.max", headers=grpc_bearer(KEYS[0]))
            )
        finally:
            client.close()
    assert live == ("OK" if open_probes else "StatusCode.UNAUTHENTICATED")
    assert keyed_live == "OK"
    assert metadata == wrong_key == "StatusCode.UNAUTHENTICATED"
    assert keyed == "StatusCode.UNAVAILABLE"  # past the key check: no models loaded


# real processes ------------------------------------------------------------------------------


def test_a_real_server_with_a_key_file(app_repository: Path, tmp_path: Path) -> None:
    """REST and gRPC of one ``python -m app`` take the keys of its key file."""
    keys = tmp_path / "keys"
    keys.write_text("# rotated monthly\nproc-key\n")
    port = free_port()
    with serve(app_repository, ["netvlad_head"], None, grpc_port=port, api_key_file=keys) as s:
        with httpx.Client(base_url=s.url, timeout=30) as http:
            assert_unauthorized(http.post("/pool", json=POOL_BODY))
            assert http.post("/pool", json=POOL_BODY, headers=bearer("proc-key")).json()["tensor"][
                "data"
            ] == [4.0]
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            x = np.array([[[[1, 4], [3, 2]]]], np.float32)
            tensor = triton.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            refused = grpc_status(lambda: client.infer("pool.max", [tensor]))
            result = client.infer(
                "pool.max", [tensor], parameters={"kernel_size": 2}, headers=grpc_bearer("proc-key")
            )
        finally:
            client.close()
    assert refused == "StatusCode.UNAUTHENTICATED"
    np.testing.assert_array_equal(result.as_numpy("y"), [[[[4.0]]]])


def test_a_missing_key_file_stops_python_m_app(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-keys"
    env = {**os.environ, "POOLSERVE_API_KEY_FILE": str(missing), "POOLSERVE_PORT": str(free_port())}
    done = subprocess.run(
        [sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3  # uvicorn's start-up failure status, as for a lifespan failure
    assert f"api_key_file '{missing}' cannot be read" in done.stderr
