"""Hostile input against the service (robustness checklist B4): every hostile request gets
its 4xx in the one envelope ``{"error", "code"}`` without echoing the input, and the
service answers a normal request right after it (checklist item 36)."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app_fixtures import AppClient, app_settings, create_app

NPY = "application/x-npy"
MAX_BODY = 64 * 1024
MARKER = "ZZhostileZZ"
GOOD_POOL: dict[str, Any] = {
    "op": "max",
    "params": {"kernel_size": 2},
    "tensor": {"shape": [1, 1, 2, 2], "data": [1.0, 2.0, 3.0, 4.0]},
}


@pytest.fixture(scope="module")
def client(app_repository: Path) -> Iterator[AppClient]:
    """A small body limit so oversized bodies stay cheap; everything else default."""
    settings = app_settings(app_repository, max_body_bytes=MAX_BODY, max_images=2)
    app = AppClient(create_app(settings)).start()
    yield app
    app.close()


def hostile(
    client: AppClient, status: int, code: str | None, method: str, url: str, **kw: Any
) -> httpx.Response:
    """Send one hostile request, check its envelope, then check a normal request works."""
    r = client.request(method, url, **kw)
    assert r.status_code == status, r.text[:500]
    body = r.json()
    assert set(body) == {"error", "code"}, body
    assert isinstance(body["error"], str)
    assert isinstance(body["code"], str)
    if code is not None:
        assert body["code"] == code, body
    assert MARKER not in r.text, "the error echoes the input"
    ok = client.post("/pool", json=GOOD_POOL)
    assert ok.status_code == 200, ok.text
    assert ok.json()["tensor"]["data"] == [4.0]
    return r


def _npy(arr: np.ndarray, **kw: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A v1 .npy header only, declaring any shape (no data follows)."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _jpeg(size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buf, "JPEG")
    return buf.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring huge dims, with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _image(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buf, fmt)
    return buf.getvalue()


def _pool(tensor: dict[str, Any], op: str = "max", **params: Any) -> dict[str, Any]:
    return {"op": op, "params": params or {"kernel_size": 2}, "tensor": tensor}


# --- body size --------------------------------------------------------------------------


def test_oversized_body_honest_length(client: AppClient) -> None:
    body = b"x" * (MAX_BODY + 1)
    hostile(client, 413, None, "POST", "/pool", content=body, headers={"content-type": NPY})


def test_oversized_body_lying_length(client: AppClient) -> None:
    body = b"x" * (MAX_BODY * 2)
    headers = {"content-type": NPY, "content-length": "10"}
    hostile(client, 413, None, "POST", "/pool", content=body, headers=headers)


def test_oversized_chunked_body(client: AppClient) -> None:
    async def chunks() -> Any:
        for _ in range(8):
            yield b"y" * (MAX_BODY // 4)

    hostile(client, 413, None, "POST", "/pool", content=chunks(), headers={"content-type": NPY})


def test_empty_body(client: AppClient) -> None:
    hostile(
        client,
        400,
        "invalid_json",
        "POST",
        "/pool",
        content=b"",
        headers={"content-type": "application/json"},
    )


# --- JSON form --------------------------------------------------------------------------


def test_malformed_json(client: AppClient) -> None:
    hostile(
        client,
        400,
        "invalid_json",
        "POST",
        "/pool",
        content=b'{"op": "max", ' + MARKER.encode(),
        headers={"content-type": "application/json"},
    )


@pytest.mark.parametrize(
    "body",
    [
        [1, 2, 3],
        {"op": 5, "tensor": {"shape": [1, 1, 2, 2], "data": [1, 2, 3, 4]}},
        {"op": "max", "params": "kernel_size=2", "tensor": {"shape": [1], "data": [1]}},
        {"op": "max", "tensor": {"shape": "1,1,2,2", "data": [1, 2, 3, 4]}},
        {"op": "max", "tensor": {"shape": [1, 1, 2, 2], "data": "1234"}},
        {"op": "max", "tensor": {"shape": [1, 1, 2, 2], "data": [1, 2, 3, MARKER]}},
        {"op": "max", "tensor": {"shape": [1, 1, 2, True], "data": [1, 2]}},
        {"op": "max", "tensor": {"shape": [1, 1, 2, 2], "data": [1, 2, 3, 4]}, "bogus": 1},
        {"op": "max"},
    ],
    ids=[
        "array",
        "op-int",
        "params-str",
        "shape-str",
        "data-str",
        "data-item-str",
        "shape-bool",
        "extra-field",
        "no-tensor",
    ],
)
def test_wrong_json_types(client: AppClient, body: Any) -> None:
    hostile(client, 422, None, "POST", "/pool", json=body)


def test_unknown_op(client: AppClient) -> None:
    hostile(client, 422, None, "POST", "/pool", json={**GOOD_POOL, "op": MARKER})


@pytest.mark.parametrize(
    ("op", "params", "status"),
    [
        ("max", {"kernel_size": -2}, 422),
        ("max", {"kernel_size": 0}, 422),
        ("max", {"kernel_size": 3}, 422),  # bigger than the 2x2 input
        ("max", {"kernel_size": 2, "stride": 0}, 422),
        ("avg", {"kernel_size": 2, "padding": -1}, 422),
        ("adaptive_avg", {"output_size": 10**9}, 413),  # refused before allocating the output
        ("max", {"kernel_size": 2, "bogus": 1}, 422),
        ("max", {"kernel_size": "two"}, 422),
        ("max", {"kernel_size": 10**400}, 422),
    ],
    ids=[
        "negative-kernel",
        "zero-kernel",
        "kernel-gt-input",
        "zero-stride",
        "negative-padding",
        "huge-output-size",
        "unknown-param",
        "kernel-str",
        "kernel-huge-int",
    ],
)
def test_bad_params(client: AppClient, op: str, params: dict[str, Any], status: int) -> None:
    body = _pool({"shape": [1, 1, 2, 2], "data": [1.0, 2.0, 3.0, 4.0]}, op, **params)
    hostile(client, status, None, "POST", "/pool", json=body)


def test_huge_declared_json_shape(client: AppClient) -> None:
    tensor = {"shape": [2**20, 2**20, 2**20, 2**20], "data": [1.0]}
    hostile(client, 413, None, "POST", "/pool", json=_pool(tensor))


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json(client: AppClient, value: str) -> None:
    raw = (
        '{"op":"max","params":{"kernel_size":2},"tensor":{"shape":[1,1,2,2],'
        f'"data":[1,2,3,{value}]}}}}'
    )
    hostile(
        client,
        422,
        "non_finite",
        "POST",
        "/pool",
        content=raw.encode(),
        headers={"content-type": "application/json"},
    )


@pytest.mark.parametrize("dtype", ["float64", "uint8", "object", MARKER])
def test_wrong_json_dtype(client: AppClient, dtype: str) -> None:
    tensor = {"shape": [1, 1, 2, 2], "dtype": dtype, "data": [1.0, 2.0, 3.0, 4.0]}
    hostile(client, 422, None, "POST", "/pool", json=_pool(tensor))


@pytest.mark.parametrize(
    "shape", [[4], [1, 1, 1, 1, 2, 2], [1, 0, 2, 2]], ids=["rank1", "rank6", "zero-dim"]
)
def test_bad_rank(client: AppClient, shape: list[int]) -> None:
    n = int(np.prod(shape))
    hostile(client, 422, None, "POST", "/pool", json=_pool({"shape": shape, "data": [1.0] * n}))


def test_shape_data_mismatch(client: AppClient) -> None:
    tensor = {"shape": [1, 1, 2, 2], "data": [1.0, 2.0, 3.0]}
    hostile(client, 422, None, "POST", "/pool", json=_pool(tensor))


def test_deeply_nested_json(client: AppClient) -> None:
    # deeper than the parser's recursion limit: a clean 400, never a RecursionError 500
    raw = '{"op":"max","tensor":{"shape":[1],"data":' + "[" * 30_000 + "]" * 30_000 + "}}"
    hostile(
        client,
        400,
        "invalid_json",
        "POST",
        "/pool",
        content=raw.encode(),
        headers={"content-type": "application/json"},
    )


def test_nested_data_deeper_than_shape(client: AppClient) -> None:
    data = [[[[[[1.0]]]]]]
    hostile(client, 422, None, "POST", "/pool", json=_pool({"shape": [1, 1, 1, 1], "data": data}))


# --- npy form ---------------------------------------------------------------------------


def _post_npy(client: AppClient, status: int, code: str | None, raw: bytes, **query: str) -> None:
    hostile(
        client,
        status,
        code,
        "POST",
        "/pool",
        params={"op": "max", "kernel_size": "2", **query},
        content=raw,
        headers={"content-type": NPY},
    )


def test_huge_declared_npy_shape(client: AppClient) -> None:
    _post_npy(client, 413, None, _npy_header("<f4", (2**20, 2**20, 2**20, 2**20)) + b"\0" * 64)


def test_pickled_npy(client: AppClient) -> None:
    arr = np.array([{"a": 1}, None], dtype=object)
    _post_npy(client, 422, None, _npy(arr, allow_pickle=True))


def test_truncated_npy(client: AppClient) -> None:
    raw = _npy(np.ones((1, 1, 4, 4), np.float32))
    _post_npy(client, 422, None, raw[:-10])
    _post_npy(client, 422, None, raw[:20])


def test_garbage_npy(client: AppClient) -> None:
    _post_npy(client, 422, None, MARKER.encode() * 4)


def test_non_finite_npy(client: AppClient) -> None:
    arr = np.ones((1, 1, 2, 2), np.float32)
    arr[0, 0, 1, 1] = np.nan
    _post_npy(client, 422, "non_finite", _npy(arr))


@pytest.mark.parametrize("dtype", [np.float64, np.uint8, np.complex64])
def test_wrong_npy_dtype(client: AppClient, dtype: Any) -> None:
    _post_npy(client, 422, None, _npy(np.ones((1, 1, 2, 2), dtype)))


@pytest.mark.parametrize("shape", [(4,), (1, 1, 1, 1, 2, 2)], ids=["rank1", "rank6"])
def test_npy_bad_rank(client: AppClient, shape: tuple[int, ...]) -> None:
    _post_npy(client, 422, None, _npy(np.ones(shape, np.float32)))


def test_query_repeated_op(client: AppClient) -> None:
    raw = _npy(np.ones((1, 1, 2, 2), np.float32))
    hostile(
        client,
        422,
        None,
        "POST",
        "/pool?op=max&op=avg&kernel_size=2",
        content=raw,
        headers={"content-type": NPY},
    )


def test_query_bad_types(client: AppClient) -> None:
    raw = _npy(np.ones((1, 1, 2, 2), np.float32))
    hostile(
        client,
        422,
        None,
        "POST",
        f"/pool?op=max&kernel_size={MARKER}",
        content=raw,
        headers={"content-type": NPY},
    )
    hostile(
        client,
        422,
        None,
        "POST",
        "/pool?op=max&kernel_size=2&kernel_size=3",
        content=raw,
        headers={"content-type": NPY},
    )


def test_npy_missing_op(client: AppClient) -> None:
    raw = _npy(np.ones((1, 1, 2, 2), np.float32))
    hostile(client, 422, "missing_op", "POST", "/pool", content=raw, headers={"content-type": NPY})


# --- multipart form ---------------------------------------------------------------------


def test_multipart_missing_tensor(client: AppClient) -> None:
    hostile(
        client,
        422,
        None,
        "POST",
        "/pool",
        data={"op": "max"},
        files={"other": ("a.npy", b"x", NPY)},
    )


def test_multipart_missing_op(client: AppClient) -> None:
    raw = _npy(np.ones((1, 1, 2, 2), np.float32))
    hostile(client, 422, "missing_op", "POST", "/pool", files={"tensor": ("t.npy", raw, NPY)})


def test_multipart_extra_parts(client: AppClient) -> None:
    raw = _npy(np.ones((1, 1, 2, 2), np.float32))
    files = [("tensor", ("t.npy", raw, NPY))] * 6  # more files than the form allows
    hostile(client, 400, None, "POST", "/pool", data={"op": "max"}, files=files)
    fields = {"op": "max", "params": "{}", "model": "m", "bogus": "1"}  # more fields
    hostile(client, 400, None, "POST", "/pool", data=fields, files={"tensor": ("t", raw, NPY)})


def test_multipart_no_boundary(client: AppClient) -> None:
    hostile(
        client,
        400,
        None,
        "POST",
        "/pool",
        content=b"--x\r\n\r\n",
        headers={"content-type": "multipart/form-data"},
    )


def test_unsupported_media_type(client: AppClient) -> None:
    hostile(
        client,
        415,
        None,
        "POST",
        "/pool",
        content=json.dumps(GOOD_POOL).encode(),
        headers={"content-type": "text/plain"},
    )


# --- /descriptor ------------------------------------------------------------------------


def _describe(client: AppClient, status: int, code: str | None, *blobs: bytes) -> None:
    files = [("images", (f"i{i}.bin", b, "application/octet-stream")) for i, b in enumerate(blobs)]
    hostile(client, status, code, "POST", "/descriptor", files=files)


def test_corrupt_image(client: AppClient) -> None:
    _describe(client, 415, None, MARKER.encode() * 10)


def test_truncated_image(client: AppClient) -> None:
    jpg = _jpeg()
    _describe(client, 415, None, jpg[: len(jpg) // 2])


def test_decompression_bomb(client: AppClient) -> None:
    _describe(client, 413, "image_too_large", _png_bomb(100_000, 100_000))


def test_too_many_images(client: AppClient) -> None:
    _describe(client, 413, "too_many_images", _jpeg(), _jpeg(), _jpeg())


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_disallowed_image_format(client: AppClient, fmt: str) -> None:
    _describe(client, 415, None, _image(fmt))


def test_descriptor_no_images(client: AppClient) -> None:
    hostile(
        client, 422, None, "POST", "/descriptor", data={}, files={"x": ("a", b"a", "text/plain")}
    )


def test_descriptor_wrong_media(client: AppClient) -> None:
    hostile(
        client,
        415,
        "unsupported_media_type",
        "POST",
        "/descriptor",
        content=b'{"images": []}',
        headers={"content-type": "text/plain"},
    )


# --- /descriptor, JSON body -------------------------------------------------------------

B64_JPEG = base64.b64encode(_jpeg()).decode()


def _describe_json(client: AppClient, status: int, code: str, body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    hostile(client, status, code, "POST", "/descriptor", content=raw, headers=headers)


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b'{"images": [', 400, "invalid_json"),
        (b'{"images": ["' + MARKER.encode() + b'\xff"]}', 400, "invalid_json"),  # not UTF-8
        (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),  # past the parser's depth
        (b'{"images": [1e999999]}', 422, "validation_error"),
    ],
)
def test_descriptor_json_unparsable(client: AppClient, raw: bytes, status: int, code: str) -> None:
    _describe_json(client, status, code, raw)


@pytest.mark.parametrize(
    "body",
    [
        [],
        "images",
        {},
        {"images": "QUJD"},  # one string, not a list
        {"images": [1]},
        {"images": [None]},
        {"images": [["QUJD"]]},
        {"images": [{"data": "QUJD"}]},
        {"images": [B64_JPEG], "model": 5},
        {"images": [B64_JPEG], MARKER: 1},  # unknown field: counted, never echoed
    ],
)
def test_descriptor_json_wrong_types(client: AppClient, body: Any) -> None:
    _describe_json(client, 422, "validation_error", body)


def test_descriptor_json_count(client: AppClient) -> None:
    _describe_json(client, 422, "missing_images", {"images": []})
    _describe_json(client, 413, "too_many_images", {"images": [B64_JPEG] * 3})
    # counted before any image is decoded: the broken third one is never reached
    _describe_json(client, 413, "too_many_images", {"images": [B64_JPEG, B64_JPEG, MARKER]})
    # a flood of tiny strings is counted before it is parsed (parsing would take ~7x the body)
    flood = b'{"images": [' + b",".join([b'"QUJD"'] * 200_000) + b"]}"
    _describe_json(client, 413, "too_many_images", flood)
    full = {"images": [B64_JPEG] * 2, "model": "netvlad_poolformer_s12_224"}  # at the limit
    assert client.post("/descriptor", json=full).status_code == 200


@pytest.mark.parametrize(
    "text",
    [
        MARKER,  # length not a multiple of 4
        MARKER + "!!!!!",  # '!' is not in the alphabet ...
        "QUJD\nQUJD",  # ... nor are line breaks
        "QQ=",  # padding missing
        "QQ==QQ==",  # data after the padding
        "é" * 4,  # beyond ASCII
        "data:image/png," + MARKER,  # a data URI must be base64
        "data:image/png;base64" + MARKER,  # no comma
    ],
)
def test_descriptor_json_bad_base64(client: AppClient, text: str) -> None:
    _describe_json(client, 422, "bad_base64", {"images": [text]})


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("data:text/plain;base64,QUJD", "unsupported_media"),  # no image at all
        (f"data:;base64,{B64_JPEG}", "unsupported_media"),  # RFC 2397's default: text/plain
        ("data:image/gif;base64," + base64.b64encode(_image("GIF")).decode(), "unsupported_media"),
        (f"data:image/{MARKER};base64,{B64_JPEG}", "unsupported_media"),
        (base64.b64encode(_image("GIF")).decode(), "unsupported_media"),  # sniffed: GIF
        (base64.b64encode(MARKER.encode() * 3).decode(), "bad_image"),
        ("", "bad_image"),
    ],
)
def test_descriptor_json_not_an_accepted_image(client: AppClient, text: str, code: str) -> None:
    _describe_json(client, 415, code, {"images": [text]})


def test_descriptor_json_refuses_urls_without_fetching(client: AppClient) -> None:
    """A listener on loopback stands where the URL points: nothing may connect to it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        for url in (
            f"http://127.0.0.1:{port}/{MARKER}.jpg",
            f"HTTPS://127.0.0.1:{port}/a.jpg",
            f"ftp://127.0.0.1:{port}/a.jpg",
            "file:///etc/passwd",
            f"//127.0.0.1:{port}/a.jpg",  # scheme-relative: not base64 either
        ):
            code = "bad_base64" if url.startswith("//") else "image_url"
            _describe_json(client, 422, code, {"images": [url]})
        with pytest.raises(TimeoutError):
            listener.accept()


def test_unknown_model(client: AppClient) -> None:
    files = [("images", ("a.jpg", _jpeg(), "image/jpeg"))]
    hostile(client, 404, "unknown_model", "POST", f"/descriptor?model={MARKER}", files=files)
    hostile(
        client, 422, None, "POST", "/pool", json={**GOOD_POOL, "op": "netvlad", "model": MARKER}
    )


# --- framework errors -------------------------------------------------------------------


def test_not_found(client: AppClient) -> None:
    hostile(client, 404, None, "GET", f"/{MARKER}")
    hostile(client, 404, None, "GET", "/../../etc/passwd")


def test_method_not_allowed(client: AppClient) -> None:
    r = hostile(client, 405, None, "DELETE", "/pool")
    assert "POST" in r.headers["allow"]
    hostile(client, 405, None, "GET", "/pool")


def test_multipart_redos_boundary(client: AppClient) -> None:
    # checklist B4 #5: a pathological boundary must be refused quickly, not backtrack
    start = time.monotonic()
    headers = {"content-type": 'multipart/form-data; boundary="' + "\\" * 40 + "a"}
    hostile(client, 400, None, "POST", "/pool", content=b"--a\r\n\r\n", headers=headers)
    assert time.monotonic() - start < 5.0
