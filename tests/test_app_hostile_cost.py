"""Hostile *cost*: small requests that used to hold gigabytes or minutes, and inputs that
used to answer 500. Each is priced and refused (4xx in the envelope) or served within
budget, and the service answers a normal request right after it."""

from __future__ import annotations

import io
import json
import math
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app_fixtures import SMOKE_MODEL, AppClient, app_settings, create_app

NPY = "application/x-npy"
GOOD_POOL: dict[str, Any] = {
    "op": "max",
    "params": {"kernel_size": 2},
    "tensor": {"shape": [1, 1, 2, 2], "data": [1.0, 2.0, 3.0, 4.0]},
}


@pytest.fixture(scope="module")
def client(app_repository: Path) -> Iterator[AppClient]:
    """The default budgets (what the README documents), CPU provider."""
    app = AppClient(create_app(app_settings(app_repository))).start()
    yield app
    app.close()


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def refused(client: AppClient, status: int, code: str, r: httpx.Response) -> dict[str, Any]:
    """``r`` is the envelope with this status and code; a normal request works after it."""
    assert r.status_code == status, r.text[:400]
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "code"}, body
    assert body["code"] == code, body
    assert len(body["error"]) < 600
    ok = client.post("/pool", json=GOOD_POOL)
    assert ok.status_code == 200, ok.text
    return body


def pool_json(op: str, params: dict[str, Any], shape: list[int], data: list[float] | None = None):
    count = math.prod(shape)
    values = data if data is not None else [float(i % 7) for i in range(count)]
    return {"op": op, "params": params, "tensor": {"shape": shape, "data": values}}


def pool_npy(client: AppClient, x: np.ndarray, **query: Any) -> httpx.Response:
    params = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in query.items()}
    return client.post("/pool", params=params, content=npy(x), headers={"content-type": NPY})


# H1: a learnable op's result is priced like any other -----------------------------------


def test_h1_netvlad_head_result_over_the_limit(client: AppClient) -> None:
    x = np.ones((8192, 512, 1, 1), np.float32)  # 16 MiB in, 1 GiB of descriptors out
    r = pool_npy(client, x, op="netvlad", model="netvlad_head")
    body = refused(client, 413, "output_too_large", r)
    assert "max_tensor_elements" in body["error"]


# H4 / H5: sliding-window work and graph size ---------------------------------------------


def test_h4_huge_window_work_is_too_expensive(client: AppClient) -> None:
    x = np.zeros((1, 1, 768, 768), np.float32)
    r = pool_npy(client, x, op="max", kernel_size=385, stride=1)
    body = refused(client, 413, "too_expensive", r)
    assert "max_pool_work" in body["error"]


@pytest.mark.parametrize(
    ("op", "params", "shape"),
    [
        ("adaptive_max", {"output_size": 40, "return_indices": True}, [1, 1, 2, 2]),
        ("adaptive_avg", {"output_size": 1000}, [1, 1, 2, 2]),
        ("median", {"kernel_size": [1, 4000]}, [1, 1, 1, 8192]),
        ("spp", {"levels": [1] * 2000}, [1, 1, 2, 2]),
    ],
)
def test_h5_graph_size_is_priced(client: AppClient, op, params, shape) -> None:
    start = time.perf_counter()
    r = client.post("/pool", json=pool_json(op, params, shape))
    body = refused(client, 413, "too_expensive", r)
    assert "max_graph_nodes" in body["error"] or "max_pool" in body["error"]
    assert time.perf_counter() - start < 2.0  # priced, not built


def test_m5_fractional_kernel_half_the_input_is_too_expensive(client: AppClient) -> None:
    x = np.zeros((1, 1, 512, 512), np.float32)
    r = pool_npy(client, x, op="fractional_max", kernel_size=256, output_size=[256, 256])
    refused(client, 413, "too_expensive", r)


def test_h6_json_reply_over_its_cap_is_refused_and_npy_is_not(client: AppClient) -> None:
    x = np.ones((1, 1100, 1, 1), np.float32)  # bilinear: (1, 1100**2) = 1.21 M numbers
    r = client.post(
        "/pool", params={"op": "bilinear"}, content=npy(x), headers={"content-type": NPY}
    )
    body = refused(client, 413, "output_too_large", r)
    assert "application/x-npy" in body["error"]
    ok = client.post(
        "/pool", params={"op": "bilinear"}, content=npy(x),
        headers={"content-type": NPY, "accept": NPY},
    )  # fmt: skip
    assert ok.status_code == 200
    assert np.load(io.BytesIO(ok.content)).shape == (1, 1100 * 1100)


def test_h7_json_body_is_limited_on_the_stream(app_repository: Path) -> None:
    app = AppClient(create_app(app_settings(app_repository, max_json_body_bytes=4096))).start()
    try:
        junk = b"[" + b"[]," * 10_000 + b"[]]"

        async def chunks() -> Any:  # no Content-Length: counted as it arrives
            yield junk[:2048]
            yield junk[2048:]

        r = app.post("/pool", content=chunks(), headers={"content-type": "application/json"})
        refused(app, 413, "body_too_large", r)
    finally:
        app.close()


# H2 / H8: /descriptor is priced from the headers -------------------------------------------


def png(width: int, height: int) -> bytes:
    """A valid all-black RGB PNG of any size, a few bytes per row (zlib of zeros)."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(3 * width) for _ in range(height)), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_h8_pixels_are_priced_per_request(client: AppClient) -> None:
    big = png(6000, 6000)  # 36 M pixels each, under the per-image limit, two over 64 M
    files = [("images", (f"{i}.png", big, "image/png")) for i in range(2)]
    start = time.perf_counter()
    r = client.post(f"/descriptor?model={SMOKE_MODEL}", files=files)
    body = refused(client, 413, "too_expensive", r)
    assert "max_request_pixels" in body["error"]
    assert time.perf_counter() - start < 2.0  # from the headers, nothing decoded


def test_descriptor_compute_budget(app_repository: Path) -> None:
    settings = app_settings(app_repository, max_descriptor_gflops=5.0, models=[SMOKE_MODEL])
    app = AppClient(create_app(settings)).start()
    try:
        image = io.BytesIO()
        Image.new("RGB", (224, 224), (30, 60, 90)).save(image, "PNG")
        one = [("images", ("a.png", image.getvalue(), "image/png"))]
        assert app.post("/descriptor", files=one).status_code == 200  # 3.6 GFLOPs
        r = app.post("/descriptor", files=one * 2)  # 7.3 GFLOPs
        body = refused(app, 413, "too_expensive", r)
        assert "max_descriptor_gflops" in body["error"]
    finally:
        app.close()


# M2 / M3 / M4: no 5xx from parameters or values ----------------------------------------------


@pytest.mark.parametrize(
    ("op", "params"),
    [
        ("max", {"kernel_size": 2, "stride": 2**63}),
        ("max", {"kernel_size": 2, "stride": 2**64 + 5}),
        ("yolo_spp", {"kernel_sizes": [2**63 - 1]}),
        ("sppf", {"kernel_size": 2**62 + 1}),
        ("poolformer_mixer", {"pool_size": 2**61 + 1}),
    ],
)
def test_m2_huge_integers_are_4xx(client: AppClient, op, params) -> None:
    r = client.post("/pool", json=pool_json(op, params, [1, 1, 4, 4]))
    assert r.status_code in (413, 422), r.text
    refused(client, r.status_code, r.json()["code"], r)


@pytest.mark.parametrize(
    ("op", "params", "value"),
    [
        ("gem", {"eps": 1e300}, 1.0),
        ("lp", {"norm_type": 1e30, "kernel_size": 2}, 2.0),
        ("bilinear", {"eps": 1e300}, 1.0),
        ("avg", {"kernel_size": 2}, 3e38),
        ("mixed", {"kernel_size": 2}, 3e38),
        ("stochastic", {"kernel_size": 2}, 1e30),
    ],
)
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_m3_overflowing_results_are_422(client: AppClient, op, params, value) -> None:
    r = client.post("/pool", json=pool_json(op, params, [1, 1, 2, 2], [value] * 4))
    refused(client, 422, "non_finite_result", r)


def test_m3_float16_overflow_is_422(client: AppClient) -> None:
    x = np.full((1, 1, 2, 2), 60000, np.float16)
    r = pool_npy(client, x, op="lp", norm_type=2.0, kernel_size=2)
    refused(client, 422, "non_finite_result", r)


def test_m4_infinite_norm_echoes_as_a_string(client: AppClient) -> None:
    for norm in ("inf", "Infinity"):
        r = client.post(
            "/pool", json=pool_json("lp", {"norm_type": norm, "kernel_size": 2}, [1, 1, 2, 2])
        )
        assert r.status_code == 200, r.text
        assert r.json()["params"]["norm_type"] == "inf"
        assert r.json()["tensor"]["data"] == [3.0]  # max |x| of the window 0, 1, 2, 3


# L2 / L3 / L4 / L5 / L6: the contract slips ----------------------------------------------


def test_l2_unknown_keys_are_not_echoed_and_the_message_stays_short(client: AppClient) -> None:
    params = {f"ZZsecret{i}": 1 for i in range(200_000)}
    params["kernel_size"] = 2
    r = client.post("/pool", json=pool_json("max", params, [1, 1, 2, 2]))
    refused(client, 422, "invalid_params", r)
    assert "ZZsecret" not in r.text
    assert len(r.content) < 1000


def test_l3_accept_q_values(client: AppClient) -> None:
    def send(accept: str) -> httpx.Response:
        return client.post("/pool", json=GOOD_POOL, headers={"accept": accept})

    assert (
        send("application/x-npy;q=0.5, application/json")
        .headers["content-type"]
        .startswith("application/json")
    )
    assert send("application/json;q=0.2, application/x-npy;q=0.9").headers["content-type"] == NPY
    assert send("*/*").headers["content-type"].startswith("application/json")
    refused(client, 406, "not_acceptable", send("application/x-npy;q=0"))
    refused(client, 406, "not_acceptable", send("text/html"))


def test_l4_duplicate_multipart_parts(client: AppClient) -> None:
    x = npy(np.ones((1, 1, 2, 2), np.float32))
    files = [("tensor", ("a.npy", x, NPY)), ("tensor", ("b.npy", x, NPY))]
    r = client.post("/pool", files=files, data={"op": "max", "params": '{"kernel_size": 2}'})
    refused(client, 422, "duplicate_part", r)


@pytest.mark.parametrize(
    "params",
    [{"kernel_size": [True, True]}, {"kernel_size": 2, "ceil_mode": "yes"}, {"kernel_size": "2"}],
)
def test_l5_loose_types_are_refused(client: AppClient, params) -> None:
    r = client.post("/pool", json=pool_json("max", params, [1, 1, 2, 2]))
    refused(client, 422, "invalid_params", r)


def test_l6_head_on_get_routes(client: AppClient) -> None:
    for path in ("/health/live", "/health/ready", "/models", "/metrics"):
        r = client.request("HEAD", path)
        assert r.status_code == 200, path
        assert r.content == b""
