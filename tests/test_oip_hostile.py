"""Hostile Open Inference Protocol requests over REST: each is a 4xx in the error envelope
(``error`` is the protocol's field), never a 5xx, and a normal request succeeds after it."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.server import serve
from tests.app_fixtures import SMOKE_MODEL

X = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
MAX_2X2 = X.reshape(1, 1, 2, 2, 2, 2).max(axis=(3, 5))


@pytest.fixture(scope="module")
def http(app_repository: Path) -> Iterator[httpx.Client]:
    with (
        serve(
            app_repository,
            [],
            shared_memory=True,
            max_body_bytes=8 * 2**20,
            max_json_body_bytes=2**20,
            max_shm_regions=2,
        ) as running,  # fmt: skip
        httpx.Client(base_url=running.url, timeout=60) as client,
    ):
        yield client


def _binary(header: dict[str, Any], *parts: bytes, length: str | None = None) -> dict[str, Any]:
    raw = json.dumps(header).encode()
    hlen = str(len(raw)) if length is None else length
    return {"content": raw + b"".join(parts), "headers": {"Inference-Header-Content-Length": hlen}}


def _x_header(size: int, datatype: str = "FP32", shape: list[int] | None = None) -> dict[str, Any]:
    return {
        "inputs": [{"name": "x", "datatype": datatype, "shape": shape or [1, 1, 4, 4],
                    "parameters": {"binary_data_size": size}}],
        "parameters": {"kernel_size": 2, "binary_data_output": True},
    }  # fmt: skip


def _normal(http: httpx.Client) -> None:
    r = http.post("/v2/models/pool.max/infer", **_binary(_x_header(X.nbytes), X.tobytes()))
    assert r.status_code == 200, r.text
    length = int(r.headers["inference-header-content-length"])
    y = np.frombuffer(r.content[length:], dtype=np.float32).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(y, MAX_2X2)


def _refused(http: httpx.Client, status: int, code: str, path: str, **kwargs: Any) -> None:
    r = http.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    assert r.json()["error"]
    _normal(http)


INFER = "/v2/models/pool.max/infer"


def test_normal_binary_request(http: httpx.Client) -> None:
    _normal(http)


@pytest.mark.parametrize("declared", [X.nbytes + 4, X.nbytes - 4, 10**18])
def test_lying_binary_data_size(http: httpx.Client, declared: int) -> None:
    _refused(http, 400, "binary_size_mismatch", INFER,
             **_binary(_x_header(declared), X.tobytes()))  # fmt: skip


def test_bytes_after_the_inputs(http: httpx.Client) -> None:
    _refused(http, 400, "binary_size_mismatch", INFER,
             **_binary(_x_header(X.nbytes), X.tobytes(), b"trailing"))  # fmt: skip


@pytest.mark.parametrize("length", ["999999", "-1", "12abc", "0", "1" * 40])
def test_bad_header_length(http: httpx.Client, length: str) -> None:
    _refused(http, 400, "invalid_inference_header", INFER,
             **_binary(_x_header(X.nbytes), X.tobytes(), length=length))  # fmt: skip


def test_header_cut_inside_the_json(http: httpx.Client) -> None:
    _refused(http, 400, "invalid_json", INFER,
             **_binary(_x_header(X.nbytes), X.tobytes(), length="10"))  # fmt: skip


def test_json_header_over_its_limit(http: httpx.Client) -> None:
    header = _x_header(X.nbytes) | {"id": "a" * (2**20 + 10)}
    _refused(http, 413, "body_too_large", INFER, **_binary(header, X.tobytes()))


def test_body_over_the_limit(http: httpx.Client) -> None:
    big = np.zeros(3 * 2**20, np.float32)
    _refused(http, 413, "body_too_large", INFER,
             **_binary(_x_header(big.nbytes, shape=[1, 1, 3, 2**20]), big.tobytes()))  # fmt: skip


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/models/pool.nope/infer", 404, "unknown_model"),
        ("/v2/models/pool.max/versions/2/infer", 404, "unknown_version"),
        ("/v2/models/pool.max/versions/1/infer", 200, None),
    ],
)
def test_unknown_model_or_version(http: httpx.Client, path: str, status: int, code: str | None):
    r = http.post(path, **_binary(_x_header(X.nbytes), X.tobytes()))
    assert r.status_code == status, r.text
    if code:
        assert r.json()["code"] == code
    _normal(http)


def test_wrong_datatype(http: httpx.Client) -> None:
    x = X.astype(np.int32)
    _refused(http, 422, "unsupported_dtype", INFER,
             **_binary(_x_header(x.nbytes, "INT32"), x.tobytes()))  # fmt: skip


def test_shape_that_disagrees_with_the_bytes(http: httpx.Client) -> None:
    _refused(http, 400, "binary_size_mismatch", INFER,
             **_binary(_x_header(X.nbytes, shape=[1, 1, 4, 5]), X.tobytes()))  # fmt: skip


@pytest.mark.parametrize("shape", [[1, 1, -4, 4], [2**40, 2**40, 1, 1], [1, 1, 4], [True, 1, 4, 4]])
def test_hostile_shapes(http: httpx.Client, shape: list[Any]) -> None:
    r = http.post(INFER, **_binary(_x_header(X.nbytes, shape=shape), X.tobytes()))
    assert 400 <= r.status_code < 500, r.text
    _normal(http)


def test_wrong_input_name_and_duplicates(http: httpx.Client) -> None:
    header = _x_header(X.nbytes)
    header["inputs"][0]["name"] = "z"
    _refused(http, 422, "wrong_tensors", INFER, **_binary(header, X.tobytes()))
    header = _x_header(X.nbytes)
    header["inputs"] *= 2
    _refused(http, 422, "wrong_tensors", INFER, **_binary(header, X.tobytes(), X.tobytes()))


def test_unknown_output(http: httpx.Client) -> None:
    header = _x_header(X.nbytes) | {"outputs": [{"name": "indices"}]}
    _refused(http, 422, "unknown_output", INFER, **_binary(header, X.tobytes()))


def test_json_data_of_the_wrong_kind(http: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 2, 2],
                        "data": ["a", "b", "c", "d"]}]}  # fmt: skip
    _refused(http, 422, "bad_value", INFER, json=body)


def test_non_finite_json_data(http: httpx.Client) -> None:
    body = '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1,1,1,1], "data": [NaN]}]}'
    r = http.post(INFER, content=body)
    assert r.status_code in (400, 422), r.text
    _normal(http)


def _bytes_element(blob: bytes, claimed: int | None = None) -> bytes:
    return struct.pack("<I", len(blob) if claimed is None else claimed) + blob


@pytest.mark.parametrize("claimed", [2**31, 5, 0])
def test_bytes_with_lying_length_prefixes(http: httpx.Client, claimed: int) -> None:
    data = _bytes_element(b"\xff\xd8\xff" + b"x" * 20, claimed)
    header = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1],
                          "parameters": {"binary_data_size": len(data)}}]}  # fmt: skip
    r = http.post(f"/v2/models/{SMOKE_MODEL}/infer", **_binary(header, data))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "bad_bytes"
    _normal(http)


def test_bytes_element_count_over_max_images(http: httpx.Client) -> None:
    data = _bytes_element(b"x") * 40
    header = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [40],
                          "parameters": {"binary_data_size": len(data)}}]}  # fmt: skip
    _refused(http, 413, "tensor_too_large", f"/v2/models/{SMOKE_MODEL}/infer",
             **_binary(header, data))  # fmt: skip


def test_over_budget(http: httpx.Client) -> None:
    x = np.zeros((1, 1, 768, 768), np.float32)
    header = _x_header(x.nbytes, shape=list(x.shape))
    header["parameters"] = {"kernel_size": 385, "stride": 1}
    _refused(http, 413, "too_expensive", INFER, **_binary(header, x.tobytes()))


def test_compressed_request_refused(http: httpx.Client) -> None:
    kwargs = _binary(_x_header(X.nbytes), X.tobytes())
    kwargs["headers"]["Content-Encoding"] = "gzip"
    _refused(http, 415, "unsupported_media_type", INFER, **kwargs)


# shared memory ------------------------------------------------------------------------------


def _register(http: httpx.Client, name: str, key: str, size: int, offset: int = 0):
    body = json.dumps({"key": key, "offset": offset, "byte_size": size})
    return http.post(f"/v2/systemsharedmemory/region/{name}/register", content=body)


@pytest.fixture
def region(http: httpx.Client) -> Iterator[str]:
    path = Path("/dev/shm/poolserve_hostile_test")
    path.write_bytes(X.tobytes())
    try:
        assert _register(http, "r", "/poolserve_hostile_test", X.nbytes).status_code == 200
        yield "r"
    finally:
        http.post("/v2/systemsharedmemory/unregister")
        path.unlink()


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "/etc/passwd", "/../../etc/passwd", "a/b", "", ".", "..", "/"]
)
def test_region_key_outside_dev_shm(http: httpx.Client, key: str) -> None:
    r = _register(http, "evil", key, 16)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "bad_region"
    _normal(http)


def test_region_larger_than_its_file(http: httpx.Client, region: str) -> None:
    r = _register(http, "big", "/poolserve_hostile_test", X.nbytes + 1)
    assert (r.status_code, r.json()["code"]) == (422, "bad_region")
    _normal(http)


@pytest.mark.parametrize(("offset", "size"), [(8, X.nbytes), (X.nbytes, 4), (0, X.nbytes + 1)])
def test_shared_memory_offset_or_size_beyond_the_region(
    http: httpx.Client, region: str, offset: int, size: int
) -> None:
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 4, 4], "parameters": {
        "shared_memory_region": region, "shared_memory_offset": offset,
        "shared_memory_byte_size": size}}], "parameters": {"kernel_size": 2}}  # fmt: skip
    _refused(http, 422, "region_bounds", INFER, json=header)


def test_output_region_too_small_is_refused_before_the_run(http: httpx.Client, region: str):
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 4, 4],
                          "data": X.ravel().tolist()}],
              "outputs": [{"name": "y", "parameters": {"shared_memory_region": region,
                           "shared_memory_offset": X.nbytes - 8,
                           "shared_memory_byte_size": 16}}],
              "parameters": {"kernel_size": 2}}  # fmt: skip
    _refused(http, 422, "region_bounds", INFER, json=header)


def test_unknown_region_and_duplicate_name(http: httpx.Client, region: str) -> None:
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 4, 4], "parameters": {
        "shared_memory_region": "nope", "shared_memory_byte_size": X.nbytes}}]}  # fmt: skip
    _refused(http, 404, "unknown_region", INFER, json=header)
    r = _register(http, region, "/poolserve_hostile_test", 16)
    assert (r.status_code, r.json()["code"]) == (409, "region_exists")


def test_region_count_capped(http: httpx.Client, region: str) -> None:
    assert _register(http, "second", "/poolserve_hostile_test", 16).status_code == 200
    r = _register(http, "third", "/poolserve_hostile_test", 16)
    assert (r.status_code, r.json()["code"]) == (413, "too_many_regions")


def test_file_truncated_after_registration(http: httpx.Client, region: str) -> None:
    os.truncate("/dev/shm/poolserve_hostile_test", 8)
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 4, 4], "parameters": {
        "shared_memory_region": region, "shared_memory_byte_size": X.nbytes}}],
        "parameters": {"kernel_size": 2}}  # fmt: skip
    _refused(http, 422, "region_bounds", INFER, json=header)


def test_shared_memory_off_by_default(app_repository: Path) -> None:
    with (
        serve(app_repository, [SMOKE_MODEL]) as running,
        httpx.Client(base_url=running.url, timeout=60) as client,
    ):
        assert "system_shared_memory" not in client.get("/v2").json()["extensions"]
        r = _register(client, "r", "/anything", 16)
        assert (r.status_code, r.json()["code"]) == (403, "shared_memory_off")
        assert client.get("/v2/systemsharedmemory/status").status_code == 403
