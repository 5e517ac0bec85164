"""One protocol tensor's data in and out: JSON ``data``, binary bytes, ``BYTES`` elements.

Every size a request claims (shape, datatype, ``binary_data_size``, each ``BYTES`` length
prefix) is checked against the limits and against the bytes actually there before anything
is allocated; numeric binary data becomes a zero-copy view of the bytes it arrived in.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.codecs.tensor import TensorLimits, check_shape, decode_json_tensor, flat_leaves
from app.core.errors import ApiError, ErrorCode
from app.oip.datatypes import BYTES, NUMERIC

Value = np.ndarray | list[bytes]
"""A numeric tensor, or a BYTES tensor's elements (flat, in row-major order)."""
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    value: Value


def _datatype(datatype: object, allowed: Sequence[str]) -> str:
    if not isinstance(datatype, str) or datatype not in allowed:
        raise ApiError(
            ErrorCode.UNSUPPORTED_DTYPE, f"this input takes the datatype {' or '.join(allowed)}"
        )
    return datatype


def from_binary(
    name: str,
    datatype: object,
    shape: object,
    raw: memoryview,
    limits: TensorLimits,
    allowed: Sequence[str],
) -> InputTensor:
    """A tensor from its binary bytes (an HTTP body part, gRPC raw contents, shared memory):
    the byte count must be exactly what the shape and datatype need."""
    kind = _datatype(datatype, allowed)
    dims = check_shape(shape, limits)
    count = math.prod(dims)
    if kind == BYTES:
        return InputTensor(name, kind, dims, bytes_elements(raw, count))
    dtype = NUMERIC[kind]
    if len(raw) != count * dtype.itemsize:
        raise ApiError(
            ErrorCode.BINARY_SIZE_MISMATCH,
            f"input {name} has {len(raw)} bytes; its shape and datatype need "
            f"{count * dtype.itemsize}",
        )
    array = np.frombuffer(raw, dtype=dtype, count=count).reshape(dims)
    if not array.flags.aligned:  # e.g. after a JSON header of odd length: NumPy would crawl
        array = array.copy()
    return InputTensor(name, kind, dims, array.astype(dtype.newbyteorder("="), copy=False))


def bytes_elements(raw: memoryview, count: int) -> list[bytes]:
    """``count`` length-prefixed elements that fill ``raw`` exactly."""
    elements, at = [], 0
    for _ in range(count):
        if at + 4 > len(raw):
            raise _bad_bytes("the BYTES data ends inside a length prefix")
        (length,) = _LENGTH.unpack_from(raw, at)
        at += 4
        if length > len(raw) - at:
            raise _bad_bytes("a BYTES length prefix runs past the end of the data")
        elements.append(bytes(raw[at : at + length]))
        at += length
    if at != len(raw):
        raise _bad_bytes("the BYTES data holds more bytes than its elements")
    return elements


def _bad_bytes(message: str) -> ApiError:
    return ApiError(ErrorCode.BAD_BYTES, message)


def from_json(
    name: str,
    datatype: object,
    shape: object,
    data: object,
    limits: TensorLimits,
    allowed: Sequence[str],
    base64_elements: bool = False,
) -> InputTensor:
    """A tensor from JSON ``data``, flat or nested as ``shape``. ``BYTES`` elements are
    strings: UTF-8 text, or base64 when the input says ``content_type: base64``."""
    kind = _datatype(datatype, allowed)
    if kind != BYTES:
        array = decode_json_tensor(shape, NUMERIC[kind].name, data, limits, (NUMERIC[kind].name,))
        return InputTensor(name, kind, array.shape, array)
    dims = check_shape(shape, limits)
    if not isinstance(data, list):
        raise ApiError(ErrorCode.BAD_VALUE, f"input {name}: data must be a list of strings")
    leaves = flat_leaves(data, dims)
    if not all(isinstance(leaf, str) for leaf in leaves):
        raise ApiError(ErrorCode.BAD_VALUE, f"input {name}: every BYTES element is a string")
    decode = _from_base64 if base64_elements else _from_text
    return InputTensor(name, kind, dims, [decode(leaf) for leaf in leaves])


def _from_text(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogatepass")


def _from_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_bytes("a BYTES element is not valid base64") from None


def binary_bytes(array: np.ndarray) -> memoryview:
    """An output's binary form: little-endian, row-major, as a view when it already is."""
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return memoryview(np.ascontiguousarray(little).reshape(-1).view(np.uint8).data)


def json_data(array: np.ndarray) -> Any:
    """An output's JSON ``data``: flat, row-major (orjson writes the array directly);
    float16 goes as float32, which JSON numbers carry exactly."""
    flat = np.ascontiguousarray(array).ravel()
    return flat.astype(np.float32) if flat.dtype == np.float16 else flat
