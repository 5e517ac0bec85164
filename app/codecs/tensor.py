"""Tensors in and out of the service: ``.npy`` bytes and JSON ``{shape, dtype, data}``.

Decoding checks everything the header or the shape claims (rank, dims, element count,
byte length, dtype) before a single element is touched, so a hostile request costs at most
its own body. Pickled (object) arrays are refused from the header alone; nothing is ever
unpickled. Policy, identical for both formats:

- dtypes: only those in ``allowed`` (default float32, float16, int64), little- or
  big-endian; big-endian is converted to native order after the checks (one copy).
- empty tensors (any dim 0) are refused with 422 ``empty_tensor``: no pooling op has a
  defined result on them and onnxruntime fails or returns nothing (robustness checklist 27).
- rank 0 (a scalar) passes the codec; the route checks the rank each op needs.
- ``.npy`` results are zero-copy views of the request buffer (read-only for ``bytes``);
  Fortran-order files come back as Fortran-ordered views, values identical to C order.
- finiteness is a separate step: call ``check_finite`` on every decoded float tensor.

Error codes (``app.core.errors.ErrorCode``; all 422 but ``tensor_too_large``, 413):
``bad_npy``, ``pickle_refused``, ``unsupported_dtype``, ``bad_shape``, ``empty_tensor``,
``tensor_too_large``, ``shape_mismatch``, ``bad_value``, ``non_finite``.
"""

from __future__ import annotations

import ast
import itertools
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.codecs.errors import CodecError
from app.core.errors import ErrorCode
from export.runtime.lowering import FLOAT_DTYPES

WIRE_DTYPES = (*FLOAT_DTYPES, "int64")
"""What a tensor may be sent as: the float dtypes graphs take, int64 for index inputs."""
NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 10_000  # numpy's own default max_header_size
_HEADER_KEYS = {"descr", "fortran_order", "shape"}
# byte order, kind, item size: the only descr strings we turn into a dtype
_SIMPLE_DESCR = re.compile(r"[<>|=]([fiub])([1248])")
# The item sizes numpy has for each kind: ``np.dtype`` raises TypeError on the rest of the
# pattern (f1, b2, b4, b8), so those are refused before it is called.
_ITEM_SIZES = {"f": "248", "i": "1248", "u": "1248", "b": "1"}
_INT64 = np.iinfo(np.int64)


@dataclass(frozen=True)
class TensorLimits:
    """Caps on a decoded tensor: total elements and number of dims."""

    max_elements: int
    max_rank: int

    def __post_init__(self) -> None:
        if self.max_elements < 1 or self.max_rank < 0:
            raise ValueError("TensorLimits: max_elements must be >= 1 and max_rank >= 0")


def _bad(message: str, code: ErrorCode = ErrorCode.BAD_NPY) -> CodecError:
    return CodecError(message, code)


def check_shape(shape: object, limits: TensorLimits) -> tuple[int, ...]:
    """Validate a claimed shape and return it with its element count under the limits.

    Checks, in this order and without multiplying huge numbers: a list or tuple of plain
    ints (bools refused), rank, no negative dims, no zero dims, element count.
    """
    if not isinstance(shape, list | tuple) or not all(
        type(d) is int
        for d in shape  # noqa: E721 (bool is an int subclass: refuse it)
    ):
        raise _bad("the shape must be a list of integers", ErrorCode.BAD_SHAPE)
    if len(shape) > limits.max_rank:
        raise _bad(
            f"the tensor has {len(shape)} dims; at most {limits.max_rank} are allowed",
            ErrorCode.BAD_SHAPE,
        )
    if any(d < 0 for d in shape):
        raise _bad("the shape has a negative dimension", ErrorCode.BAD_SHAPE)
    if any(d == 0 for d in shape):
        raise _bad("empty tensors (a dimension of 0) are not accepted", ErrorCode.EMPTY_TENSOR)
    count = 1
    for d in shape:
        count *= d
        if count > limits.max_elements:  # stop before the product grows any further
            raise _bad(
                f"the tensor has more than the {limits.max_elements} elements allowed",
                ErrorCode.TENSOR_TOO_LARGE,
            )
    return tuple(shape)


def _check_dtype(name: str, allowed: Sequence[str]) -> np.dtype[Any]:
    if name not in allowed:  # the name is not echoed: it may be anything the client sent
        raise _bad(
            f"this dtype is not accepted; send one of {', '.join(allowed)}",
            ErrorCode.UNSUPPORTED_DTYPE,
        )
    return np.dtype(name)


def _npy_dtype(descr: object, allowed: Sequence[str]) -> np.dtype[Any]:
    """The header's ``descr`` as a dtype, refusing objects, records and anything unlisted."""
    if isinstance(descr, str) and "O" in descr:
        raise _bad("object arrays (pickles) are never loaded", ErrorCode.PICKLE_REFUSED)
    if not isinstance(descr, str):  # a list of fields: a structured (record) dtype
        raise _bad("structured dtypes are not accepted", ErrorCode.UNSUPPORTED_DTYPE)
    match = _SIMPLE_DESCR.fullmatch(descr)
    if match is None:
        raise _bad(
            f"the .npy dtype is not accepted; send one of {', '.join(allowed)}",
            ErrorCode.UNSUPPORTED_DTYPE,
        )
    kind, size = match.groups()
    if size not in _ITEM_SIZES[kind]:
        raise _bad("the .npy header's descr is not a numpy dtype")
    dtype = np.dtype(descr)  # safe: only the dtypes of _ITEM_SIZES reach here
    _check_dtype(dtype.name, allowed)
    return dtype


def _header_bounds(view: memoryview) -> tuple[int, int, str]:
    """(header start, header end, text encoding) from the magic, version and length."""
    if len(view) < 10 or view[:6] != NPY_MAGIC:
        raise _bad("the body is not a .npy file (bad magic bytes)")
    major, minor = view[6], view[7]
    if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
        raise _bad(f"unsupported .npy format version {major}.{minor}")
    if major == 1:
        (length,) = struct.unpack("<H", view[8:10])
        start = 10
    else:
        if len(view) < 12:
            raise _bad("the .npy header is truncated")
        (length,) = struct.unpack("<I", view[8:12])
        start = 12
    if length > MAX_HEADER_BYTES:
        raise _bad(f"the .npy header is longer than {MAX_HEADER_BYTES} bytes")
    if start + length > len(view):
        raise _bad("the .npy header is truncated")
    return start, start + length, "utf-8" if major == 3 else "latin-1"


def _parse_header(raw: bytes, encoding: str) -> dict[str, Any]:
    try:
        header = ast.literal_eval(raw.decode(encoding))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise _bad("the .npy header is not a valid dictionary") from None
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS:
        raise _bad("the .npy header must hold exactly descr, fortran_order and shape")
    if type(header["fortran_order"]) is not bool:
        raise _bad("the .npy header's fortran_order must be True or False")
    return header


def parse_npy(
    buf: bytes | bytearray | memoryview,
    limits: TensorLimits,
    allowed: Sequence[str] = WIRE_DTYPES,
) -> NDArray[Any]:
    """Decode a ``.npy`` file (format 1.0, 2.0 or 3.0) without trusting its header.

    Returns a zero-copy view of ``buf`` in native byte order (a converted copy when the
    file is big-endian); read-only when ``buf`` is. Raises ``CodecError`` (see module doc).
    """
    view = memoryview(buf)
    if not view.c_contiguous:
        raise ValueError("parse_npy needs a contiguous buffer")  # caller bug, not input
    view = view.cast("B")
    start, end, encoding = _header_bounds(view)
    header = _parse_header(bytes(view[start:end]), encoding)
    dtype = _npy_dtype(header["descr"], allowed)
    if not isinstance(header["shape"], tuple):
        raise _bad("the .npy header's shape must be a tuple of integers", ErrorCode.BAD_SHAPE)
    shape = check_shape(header["shape"], limits)
    count = int(np.prod(shape, dtype=np.int64))  # safe now: count <= max_elements
    if len(view) - end != count * dtype.itemsize:
        raise _bad(
            f"the .npy body holds {len(view) - end} bytes but its header's shape and dtype "
            f"need {count * dtype.itemsize}",
            ErrorCode.SHAPE_MISMATCH,
        )
    flat = np.frombuffer(view, dtype=dtype, count=count, offset=end)
    arr = flat.reshape(shape[::-1]).T if header["fortran_order"] else flat.reshape(shape)
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def check_finite(arr: NDArray[Any]) -> None:
    """Raise 422 ``non_finite`` when a float tensor holds NaN or +-Inf."""
    if arr.dtype.kind != "f" or _surely_finite(arr):
        return
    if not bool(np.isfinite(arr).all()):
        raise _bad("the tensor holds NaN or infinite values", ErrorCode.NON_FINITE)


def _surely_finite(arr: NDArray[Any]) -> bool:
    """A fast sufficient test: any NaN or Inf makes the sum of squares NaN or Inf, so a
    finite one proves every value finite. BLAS computes it without a temporary, about twice
    as fast as ``isfinite``; huge values can overflow it, and the exact test decides."""
    if arr.dtype != np.float32 or not arr.flags.c_contiguous or arr.size < 4096:
        return False
    flat = arr.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.dot(flat, flat)))


def check_output(arr: np.ndarray, what: str) -> None:
    """Finite input can still overflow (a float32 sum past 3.4e38, x**p with a huge p):
    that is the request's doing, and JSON has no NaN; refuse it."""
    try:
        check_finite(arr)
    except CodecError:
        raise _bad(
            f"{what} overflows for this input (NaN or infinite values in the result); "
            "scale the input or change the params",
            ErrorCode.NON_FINITE_RESULT,
        ) from None


def flat_leaves(data: list[Any], shape: tuple[int, ...]) -> list[Any]:
    """The leaves of ``data``, flat (length = count) or nested exactly as ``shape``.

    Walks level by level with C-speed ``map``; each level's size is bounded by the
    already-checked element count, so a lying request costs at most its own size.
    """
    count = int(np.prod(shape, dtype=np.int64))  # checked: <= max_elements, >= 1
    if len(data) == count and not isinstance(data[0], list):
        return data  # flat (always the case for rank <= 1)
    level: list[Any] = data
    for depth, size in enumerate(shape):
        if depth > 0:
            if set(map(type, level)) != {list}:
                raise _bad("the data's nesting does not match the shape", ErrorCode.SHAPE_MISMATCH)
            if set(map(len, level)) != {size}:
                raise _bad(
                    "the data is ragged or does not match the shape", ErrorCode.SHAPE_MISMATCH
                )
            level = list(itertools.chain.from_iterable(level))
        elif len(level) != size:
            raise _bad(
                f"the data has {len(level)} entries; the shape needs {size} (nested) "
                f"or {count} (flat)",
                ErrorCode.SHAPE_MISMATCH,
            )
    if len(level) != count:  # rank 0: no level to walk
        raise _bad(f"the data must hold exactly {count} values", ErrorCode.SHAPE_MISMATCH)
    return level


def decode_json_tensor(
    shape: object,
    dtype: object,
    data: object,
    limits: TensorLimits,
    allowed: Sequence[str] = WIRE_DTYPES,
) -> NDArray[Any]:
    """A C-ordered array from JSON fields: ``data`` is a flat list or nested as ``shape``.

    Numbers must be JSON numbers: bools, strings and null are refused, and an int64 tensor
    takes integers only (a float is refused, never truncated). Float tensors take ints and
    floats. Raises ``CodecError``; NaN/Inf pass here, so call ``check_finite`` next.
    """
    if not isinstance(dtype, str):
        raise _bad("the dtype must be a string such as float32", ErrorCode.UNSUPPORTED_DTYPE)
    np_dtype = _check_dtype(dtype, allowed)
    dims = check_shape(shape, limits)
    if not isinstance(data, list):
        raise _bad("the data must be a list of numbers", ErrorCode.BAD_VALUE)
    leaves = flat_leaves(data, dims)
    kinds = set(map(type, leaves))
    numbers = {int} if np_dtype.kind in "iu" else {int, float}
    if not kinds <= numbers:
        wanted = "integers" if np_dtype.kind in "iu" else "numbers"
        raise _bad(
            f"every value of a {dtype} tensor must be one of the JSON {wanted}", ErrorCode.BAD_VALUE
        )
    try:
        with np.errstate(over="ignore"):  # a float16 overflow becomes inf: check_finite's job
            flat = np.array(leaves, dtype=np_dtype)
    except OverflowError:
        raise _bad(f"a value does not fit in {dtype}", ErrorCode.BAD_VALUE) from None
    return flat.reshape(dims)


def _npy_header(arr: NDArray[Any]) -> bytes:
    """A version 1.0 header padded with spaces to a multiple of 64 bytes, as numpy writes."""
    text = f"{{'descr': {arr.dtype.str!r}, 'fortran_order': False, 'shape': {arr.shape!r}, }}"
    pad = -(len(NPY_MAGIC) + 4 + len(text) + 1) % 64
    body = (text + " " * pad + "\n").encode("latin-1")
    return NPY_MAGIC + b"\x01\x00" + struct.pack("<H", len(body)) + body


def encode_npy(arr: NDArray[Any]) -> bytes:
    """``.npy`` bytes of a numeric array (C order), made with one copy of the data."""
    if arr.dtype.kind not in "biufc" or arr.dtype.fields is not None:
        raise TypeError(f"encode_npy writes plain numeric arrays, not {arr.dtype}")
    data = arr if arr.flags.c_contiguous else arr.copy(order="C")  # ascontiguousarray: 0-d -> 1-d
    return b"".join((_npy_header(data), data.reshape(-1).view(np.uint8).data))


def to_json_tensor(arr: NDArray[Any]) -> dict[str, Any]:
    """``{"shape", "dtype", "data"}`` with ``data`` flat in C order (cheaper than nested).

    Check finiteness first: strict JSON has no NaN or Infinity.
    """
    return {"shape": list(arr.shape), "dtype": arr.dtype.name, "data": arr.ravel().tolist()}
