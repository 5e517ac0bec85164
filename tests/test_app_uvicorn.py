"""The real server: ``python -m app`` under uvicorn on a free port, spoken to over TCP."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.server import serve
from tests.app_fixtures import npy_bytes

NPY = "application/x-npy"
X = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
EXPECTED = X.reshape(1, 1, 2, 2, 2, 2).max(axis=(3, 5))  # 2x2 max pool, closed form


@pytest.fixture(scope="module")
def server(app_repository: Path) -> Iterator[httpx.Client]:
    """Every repository model, CPU; the server is stopped even when start-up fails."""
    with (
        serve(app_repository, []) as running,
        httpx.Client(base_url=running.url, timeout=30) as client,
    ):
        yield client


def _pool_json(client: httpx.Client) -> None:
    body = {
        "op": "max",
        "params": {"kernel_size": 2},
        "tensor": {"shape": list(X.shape), "data": X.ravel().tolist()},
    }
    r = client.post("/pool", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["tensor"]["data"] == EXPECTED.ravel().tolist()


@pytest.mark.slow
def test_pool_json(server: httpx.Client) -> None:
    _pool_json(server)


@pytest.mark.slow
def test_pool_npy(server: httpx.Client) -> None:
    r = server.post(
        "/pool",
        params={"op": "max", "kernel_size": "2"},
        content=npy_bytes(X),
        headers={"content-type": NPY, "accept": NPY},
    )
    assert r.status_code == 200, r.text
    out = np.load(io.BytesIO(r.content), allow_pickle=False)
    np.testing.assert_array_equal(out, EXPECTED)


@pytest.mark.slow
def test_descriptor_jpeg(server: httpx.Client) -> None:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (240, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
    r = server.post("/descriptor", files=[("images", ("a.jpg", buf.getvalue(), "image/jpeg"))])
    assert r.status_code == 200, r.text
    assert np.isfinite(np.asarray(r.json()["descriptors"], dtype=np.float64)).all()


@pytest.mark.slow
def test_hostile_then_normal(server: httpx.Client) -> None:
    r = server.post("/pool", content=b"\x93NUMPY garbage", headers={"content-type": NPY})
    assert r.status_code == 422
    assert set(r.json()) == {"error", "code"}
    _pool_json(server)


@pytest.mark.slow
def test_metrics_count_requests(server: httpx.Client) -> None:
    _pool_json(server)
    text = server.get("/metrics").text
    assert "poolserve_requests" in text
    assert "/pool" in text
