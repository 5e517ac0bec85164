"""One protocol tensor's data: binary views, BYTES length prefixes, JSON and base64 elements,
and the aligned body buffer. References: numpy's own arrays, tritonclient's serializer."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
from starlette.requests import Request
from tritonclient.utils import serialize_byte_tensor

from app.api.aligned_body import read_aligned
from app.codecs.tensor import TensorLimits
from app.core.errors import ApiError
from app.oip.tensors import bytes_elements, from_binary, from_json

LIMITS = TensorLimits(1 << 20, 4)


@pytest.mark.parametrize("offset", [0, 1, 3, 64])
def test_binary_at_any_offset_reads_the_values_aligned(offset: int) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    raw = memoryview(b"\0" * offset + x.tobytes())[offset:]
    tensor = from_binary("x", "FP32", [2, 3, 4, 5], raw, LIMITS, ("FP32",))
    assert isinstance(tensor.value, np.ndarray)
    np.testing.assert_array_equal(tensor.value, x)
    assert tensor.value.flags.aligned


def test_binary_of_the_wrong_size_or_datatype_is_refused() -> None:
    raw = memoryview(np.zeros(16, np.float32).tobytes())
    with pytest.raises(ApiError) as info:
        from_binary("x", "FP32", [1, 1, 4, 5], raw, LIMITS, ("FP32",))
    assert info.value.code == "binary_size_mismatch"
    with pytest.raises(ApiError) as info:
        from_binary("x", "INT64", [1, 1, 4, 2], raw, LIMITS, ("FP32",))
    assert info.value.code == "unsupported_dtype"


def test_bytes_elements_match_tritonclients_serializer() -> None:
    elements = [b"", b"a", bytes(range(256)) * 3]
    serialized = serialize_byte_tensor(np.array(elements, dtype=np.object_)).item()
    assert bytes_elements(memoryview(serialized), 3) == elements


@pytest.mark.parametrize(
    "raw",
    [b"\x05\x00\x00\x00abc", b"\x01\x00", b"\x01\x00\x00\x00ab", b"\xff\xff\xff\xff"],
    ids=["prefix past the end", "cut prefix", "bytes left over", "huge prefix"],
)
def test_lying_bytes_prefixes_are_refused(raw: bytes) -> None:
    with pytest.raises(ApiError) as info:
        bytes_elements(memoryview(raw), 1)
    assert info.value.code == "bad_bytes"


def test_json_bytes_as_base64_and_as_text() -> None:
    blob = bytes(range(256))
    data = [base64.b64encode(blob).decode()]
    tensor = from_json("IMAGE", "BYTES", [1], data, LIMITS, ("BYTES",), base64_elements=True)
    assert tensor.value == [blob]
    text = from_json("IMAGE", "BYTES", [2], ["héllo", "x"], LIMITS, ("BYTES",))
    assert text.value == ["héllo".encode(), b"x"]
    with pytest.raises(ApiError) as info:
        from_json("IMAGE", "BYTES", [1], ["not base64!"], LIMITS, ("BYTES",), True)
    assert info.value.code == "bad_bytes"


def _request(body: bytes, chunk: int, declared: int | None) -> Request:
    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                for i, p in enumerate(parts)]  # fmt: skip

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


@pytest.mark.parametrize("aligned_at", [0, 7, 133])
def test_read_aligned_puts_the_binary_start_on_64_bytes(aligned_at: int) -> None:
    body = bytes(range(256)) * 40
    view = asyncio.run(read_aligned(_request(body, 1000, len(body)), aligned_at))
    assert bytes(view) == body
    address = np.frombuffer(view, np.uint8).ctypes.data
    assert (address + aligned_at) % 64 == 0


def test_read_aligned_without_a_length_and_with_a_lying_one() -> None:
    body = b"x" * 300
    assert bytes(asyncio.run(read_aligned(_request(body, 100, None), 5))) == body
    with pytest.raises(ApiError):
        asyncio.run(read_aligned(_request(body, 100, 200), 5))
    with pytest.raises(ApiError):
        asyncio.run(read_aligned(_request(body, 100, 400), 5))
