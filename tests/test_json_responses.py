"""JSON replies: strict JSON everywhere (no NaN or Infinity tokens, which the standard
library's parser would otherwise accept), float32 numbers that come back to the same bits,
and large replies encoded on a worker thread while small ones stay on the event loop."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

import app.api.negotiation as negotiation
from tests.app_fixtures import SMOKE_MODEL, AppClient

NPY = "application/x-npy"


def _strict(text: str) -> Any:
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in a JSON reply")

    return json.loads(text, parse_constant=refuse)


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _files(count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{i}.jpg", _jpeg(i), "image/jpeg")) for i in range(count)]


POOL = {"op": "max", "params": {"kernel_size": 2}, "tensor": {"shape": [1, 1, 2, 2],
        "data": [1.0, 2.0, 3.0, 4.0]}}  # fmt: skip
REQUESTS: list[tuple[str, str, dict[str, Any], int]] = [
    ("GET", "/models", {}, 200),
    ("GET", "/health/live", {}, 200),
    ("GET", "/health/ready", {}, 200),
    ("GET", "/v2", {}, 200),
    ("GET", f"/v2/models/{SMOKE_MODEL}", {}, 200),
    ("POST", "/pool", {"json": POOL}, 200),
    ("POST", "/descriptor", {"files": _files(1)}, 200),
    (
        "POST",
        "/v2/models/pool.max/infer",
        {
            "json": {
                "inputs": [
                    {"name": "x", "shape": [1, 1, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}
                ],
                "parameters": {"kernel_size": 2},
            }
        },
        200,
    ),  # fmt: skip
    ("GET", "/nowhere", {}, 404),
    ("DELETE", "/pool", {}, 405),
    ("POST", "/pool", {"content": b"{", "headers": {"content-type": "application/json"}}, 400),
    ("POST", "/pool", {"json": {**POOL, "op": "nope"}}, 422),
    ("POST", "/descriptor", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
    ("POST", "/pool", {"json": POOL, "headers": {"accept": "text/html"}}, 406),
]


@pytest.mark.parametrize(("method", "url", "kwargs", "status"), REQUESTS)
def test_every_json_reply_is_strict_json(
    app_client: AppClient, method: str, url: str, kwargs: dict[str, Any], status: int
) -> None:
    reply = app_client.request(method, url, **kwargs)
    assert reply.status_code == status, reply.text[:300]
    assert reply.headers["content-type"].startswith("application/json")
    assert int(reply.headers["content-length"]) == len(reply.content)
    body = _strict(reply.text)
    if status >= 400:
        assert set(body) == {"error", "code"}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_json_numbers_come_back_to_the_same_bits(app_client: AppClient, dtype: str) -> None:
    """orjson writes each float at its own precision, shortest form: parsing it back and
    casting to the dtype gives the npy reply's exact bits."""
    x = np.random.default_rng(3).standard_normal((1, 2, 8, 8)).astype(dtype) * 1e-3
    tensor = {"shape": list(x.shape), "dtype": dtype, "data": x.ravel().tolist()}
    body = {"op": "avg", "params": {"kernel_size": 3, "stride": 1}, "tensor": tensor}
    as_json = app_client.post("/pool", json=body)
    as_npy = app_client.post("/pool", json=body, headers={"accept": NPY})
    assert as_json.status_code == as_npy.status_code == 200
    want = np.load(io.BytesIO(as_npy.content), allow_pickle=False)
    got = np.asarray(_strict(as_json.text)["tensor"]["data"], dtype=dtype).reshape(want.shape)
    np.testing.assert_array_equal(got, want)


def test_large_json_replies_are_encoded_off_the_event_loop(
    app_client: AppClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One descriptor (32768 numbers) is encoded on the loop; three (98304, over
    OFF_LOOP_ELEMENTS) on a worker thread, which has no running event loop."""
    on_loop: list[bool] = []
    original = negotiation._dumps

    def recording(body: dict[str, Any]) -> bytes:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return original(body)

    monkeypatch.setattr(negotiation, "_dumps", recording)
    for count in (1, 3):
        reply = app_client.post("/descriptor", files=_files(count))
        assert reply.status_code == 200
        assert len(_strict(reply.text)["descriptors"]) == count
    assert on_loop == [True, False]
