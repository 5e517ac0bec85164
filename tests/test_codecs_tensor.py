"""app.codecs.tensor: .npy and JSON tensors, against numpy's own reader and hostile inputs.

numpy writes the fixtures (np.save, np.lib.format.write_array, including a pickled object
array: writing is harmless, only loading unpickles) and np.load reads our encoder's output.
"""

import io
import json
import struct
import time
import tracemalloc
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.codecs.errors import CodecError
from app.codecs.tensor import (
    TensorLimits,
    check_finite,
    decode_json_tensor,
    encode_npy,
    parse_npy,
    to_json_tensor,
)

LIMITS = TensorLimits(max_elements=1 << 20, max_rank=4)


def npy(arr: np.ndarray, version: tuple[int, int] | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, arr, **kw)
    else:
        np.lib.format.write_array(buf, arr, version=version, **kw)
    return buf.getvalue()


def forged(header: str, body: bytes = b"", version: int = 1) -> bytes:
    """A .npy file with this header text, verbatim: what a hostile client can send."""
    text = header.encode("latin-1") + b"\n"
    size = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + size + text + body


@contextmanager
def refused(code: str, status: int = 422):
    """pytest.raises for a CodecError with this code and status."""
    with pytest.raises(CodecError) as info:
        yield info
    assert (info.value.code, info.value.status) == (code, status), info.value


# --- parse_npy: valid files -------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16", "int64"])
@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (1, 2, 3, 4)])
def test_parse_npy_matches_np_load(dtype, shape):
    arr = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) * 3 - 7
    data = npy(arr)
    got = parse_npy(data, LIMITS)
    expected = np.load(io.BytesIO(data))
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_parse_npy_all_format_versions(version):
    arr = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_npy(npy(arr, version), LIMITS), arr)


def test_parse_npy_is_zero_copy_and_read_only_for_bytes():
    data = npy(np.ones((4, 4), np.float32))
    got = parse_npy(data, LIMITS)
    assert not got.flags.writeable
    mutable = bytearray(data)
    view = parse_npy(mutable, LIMITS)
    assert np.shares_memory(view, np.frombuffer(mutable, np.uint8))
    np.testing.assert_array_equal(parse_npy(memoryview(mutable), LIMITS), view)


def test_parse_npy_fortran_order_gives_the_same_values():
    arr = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    data = npy(arr)
    assert b"'fortran_order': True" in data
    got = parse_npy(data, LIMITS)
    np.testing.assert_array_equal(got, np.load(io.BytesIO(data)))
    np.testing.assert_array_equal(got, np.arange(12, dtype=np.float32).reshape(3, 4))


@pytest.mark.parametrize("dtype", [">f4", ">f2", ">i8"])
def test_parse_npy_big_endian_becomes_native(dtype):
    arr = (np.arange(6) - 2).astype(dtype).reshape(2, 3)
    got = parse_npy(npy(arr), LIMITS)
    assert got.dtype.isnative
    assert got.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(got, arr)


def test_parse_npy_dtype_allow_list_is_configurable():
    data = npy(np.zeros(3, np.uint8))
    with refused("unsupported_dtype"):
        parse_npy(data, LIMITS)
    assert parse_npy(data, LIMITS, allowed=("uint8",)).dtype == np.uint8


# --- parse_npy: hostile files -----------------------------------------------------------


def test_pickled_object_array_is_refused_from_the_header():
    data = npy(np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with refused("pickle_refused"):
        parse_npy(data, LIMITS)


@pytest.mark.parametrize(
    "dtype", [np.float64, np.uint8, np.complex64, np.dtype([("a", "<f4"), ("b", "<i8")]), "U3"]
)
def test_other_dtypes_are_refused(dtype):
    with refused("unsupported_dtype"):
        parse_npy(npy(np.zeros(2, dtype=dtype)), LIMITS)


@pytest.mark.parametrize("descr", ["<f1", "=f1", "<b2", "<b4", "<b8", "|b2", ">f1", "|f1", ">b8"])
def test_descr_that_numpy_has_no_dtype_for_is_bad_npy(descr):
    with pytest.raises(TypeError):  # the premise: np.dtype itself cannot take it
        np.dtype(descr)
    every = ("float16", "float32", "float64", "int8", "uint8", "bool")  # nothing refused by name
    data = forged(f"{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,)}}", bytes(16))
    with refused("bad_npy"):
        parse_npy(data, LIMITS, allowed=every)


@pytest.mark.parametrize("descr", ["|b1", "<u2", ">i4", "=f8", "|i1", ">u8"])
def test_every_other_kind_and_size_reads_as_np_load_does(descr):
    arr = (np.arange(6) % 2).astype(descr).reshape(2, 3)
    data = npy(arr)
    got = parse_npy(data, LIMITS, allowed=(arr.dtype.name,))
    np.testing.assert_array_equal(got, np.load(io.BytesIO(data)))
    assert got.dtype == np.load(io.BytesIO(data)).dtype.newbyteorder("=")


def test_truncated_and_padded_bodies_are_refused():
    data = npy(np.ones((3, 4), np.float32))
    for bad in (data[:-1], data[:-48], data + b"\x00", data + bytes(48)):
        with refused("shape_mismatch"):
            parse_npy(bad, LIMITS)


def test_header_lying_about_the_shape_is_refused():
    body = np.ones(4, np.float32).tobytes()
    with refused("shape_mismatch"):
        parse_npy(forged("{'descr': '<f4', 'fortran_order': False, 'shape': (100,)}", body), LIMITS)
    with refused("shape_mismatch"):
        parse_npy(forged("{'descr': '<f8', 'fortran_order': False, 'shape': (4,)}", body),
                  LIMITS, allowed=("float64",))  # fmt: skip


@pytest.mark.parametrize("shape", ["(2**40,)", "(1099511627776,)", "(1048576, 1048576)"])
def test_giant_declared_shape_fails_fast_without_allocating(shape):
    shape = str(eval(shape))  # the header holds plain integers
    data = forged(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}}}", bytes(64))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with refused("tensor_too_large", 413):
            parse_npy(data, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 0.5
    assert peak < 100_000  # bytes: the header's parse, nothing of the declared size


def test_huge_integer_dims_do_not_blow_up():
    with refused("tensor_too_large", 413):
        parse_npy(forged(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({10**4000}, 7)}}"),
                  LIMITS)  # fmt: skip
    with refused("bad_npy"):  # over Python's 4300-digit int limit: not even parsed
        parse_npy(forged(f"{{'descr': '<f4', 'fortran_order': False, 'shape': (1{'0' * 4400},)}}"),
                  LIMITS)  # fmt: skip


@pytest.mark.parametrize(
    ("shape", "code"),
    [
        ("(-1, 4)", "bad_shape"),
        ("(4, -4)", "bad_shape"),
        ("(2, 0, 3)", "empty_tensor"),
        ("(0,)", "empty_tensor"),
        ("(1, 1, 1, 1, 1)", "bad_shape"),  # rank 5 > max_rank 4
        ("(True, 2)", "bad_shape"),
        ("(2.0, 2)", "bad_shape"),
        ("[2, 2]", "bad_shape"),
        ("'2,2'", "bad_shape"),
    ],
)
def test_bad_shapes_are_refused(shape, code):
    data = forged(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}}}", bytes(16))
    with refused(code):
        parse_npy(data, LIMITS)


def test_zero_size_array_written_by_numpy_is_refused():
    with refused("empty_tensor"):
        parse_npy(npy(np.zeros((1, 0, 3), np.float32)), LIMITS)


def test_rank_limit():
    arr = np.zeros((1, 1, 1, 1), np.float32)
    assert parse_npy(npy(arr), LIMITS).ndim == 4
    with refused("bad_shape"):
        parse_npy(npy(arr[None]), LIMITS)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x93NUMPY",
        b"\x93NUMP\x01\x00" + bytes(60),
        b"PK\x03\x04" + bytes(60),  # an .npz (zip) is not an .npy
        b"\x93NUMPY\x04\x00" + bytes(60),  # version 4.0
        b"\x93NUMPY\x01\x01" + bytes(60),  # version 1.1
        b"\x93NUMPY\x02\x00\x10",  # v2 length field cut short
        b"\x93NUMPY\x01\x00\xff\x00{'descr'",  # header longer than the file
    ],
)
def test_bad_magic_version_and_lengths_are_refused(data):
    with refused("bad_npy"):
        parse_npy(data, LIMITS)


def test_header_too_long_is_refused_before_parsing():
    pad = " " * 20_000
    with refused("bad_npy"):
        parse_npy(forged("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}" + pad,
                         bytes(4), version=2), LIMITS)  # fmt: skip


@pytest.mark.parametrize(
    "header",
    [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,",  # numpy: tokenize.TokenError
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'extra': 1}",
        "{'descr': '<f4', 'shape': (3,)}",
        "{'descr': '<f4', 'fortran_order': 1, 'shape': (3,)}",
        "['descr', 'fortran_order', 'shape']",
        "__import__('os').system('true')",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}\x00",
        "(" * 4000 + ")" * 4000,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "(" * 300 + ")" * 300 + ",)}",
        "",
    ],
)
def test_malformed_headers_are_refused(header):
    with refused("bad_npy"):
        parse_npy(forged(header, bytes(12)), LIMITS)


def test_non_utf8_v3_header_is_refused():
    bad = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}" + b"\xff\n"
    data = b"\x93NUMPY\x03\x00" + struct.pack("<I", len(bad)) + bad + bytes(4)
    with refused("bad_npy"):
        parse_npy(data, LIMITS)


def test_messages_do_not_echo_the_input():
    marker = "SECRET" * 50
    for header in (
        f"{{'descr': '{marker}', 'fortran_order': False, 'shape': (1,)}}",
        f"{{'descr': '<f4', 'fortran_order': False, 'shape': ('{marker}',)}}",
        f"{{'{marker}': 1}}",
    ):
        with pytest.raises(CodecError) as info:
            parse_npy(forged(header, bytes(4)), LIMITS)
        assert "SECRET" not in str(info.value)


@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_codec_errors(data):
    with pytest.raises(CodecError):
        parse_npy(b"\x93NUMPY" + data, LIMITS)


@given(st.integers(0, 200), st.integers(0, 255))
def test_single_byte_corruptions_only_ever_raise_codec_errors(position, value):
    data = bytearray(npy(np.arange(6, dtype=np.float32).reshape(2, 3)))
    data[position % len(data)] = value
    try:
        arr = parse_npy(bytes(data), LIMITS)
    except CodecError:
        return
    assert arr.size * arr.itemsize == 24  # what passes is consistent: 6 float32 or the like


# --- JSON tensors -----------------------------------------------------------------------


def test_json_flat_and_nested_match_numpy():
    nested = [[[1, 2.5], [3, -4]], [[5, 6], [7, 8e-3]]]
    expected = np.array(nested, dtype=np.float32)
    flat = expected.ravel().tolist()
    for data in (nested, flat):
        got = decode_json_tensor([2, 2, 2], "float32", data, LIMITS)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    ints = decode_json_tensor([2, 2], "int64", [[1, -2], [3, 2**62]], LIMITS)
    assert ints.dtype == np.int64
    assert ints[1, 1] == 2**62


def test_json_rank0_and_rank1():
    assert decode_json_tensor([], "float32", [2.5], LIMITS).shape == ()
    np.testing.assert_array_equal(decode_json_tensor([3], "float16", [1, 2, 3], LIMITS), [1, 2, 3])
    with refused("shape_mismatch"):
        decode_json_tensor([], "float32", [], LIMITS)


@pytest.mark.parametrize(
    "data",
    [
        [[1, 2], [3]],  # ragged
        [[1, 2, 3], [4, 5]],
        [[1, 2], 3],  # mixed nesting
        [1, 2, 3],  # flat but short
        [[1, 2], [3, 4], [5, 6]],  # one row too many
        [[[1], [2]], [[3], [4]]],  # too deep
    ],
)
def test_json_ragged_or_mismatched_data_is_refused(data):
    with pytest.raises(CodecError) as info:
        decode_json_tensor([2, 2], "float32", data, LIMITS)
    assert info.value.status == 422
    assert info.value.code in ("shape_mismatch", "bad_value")


@pytest.mark.parametrize(
    ("dtype", "data"),
    [
        ("float32", [True, 1.0]),
        ("float32", [1.0, "2"]),
        ("float32", [1.0, None]),
        ("float32", [1.0, {"a": 1}]),
        ("int64", [1, 2.0]),  # floats are never truncated into an int tensor
        ("int64", [1, False]),
        ("int64", [1, 2**63]),  # int64 overflow
        ("float32", [1.0, 10**400]),  # too big for any float
    ],
)
def test_json_non_numbers_and_dtype_mismatches_are_refused(dtype, data):
    with refused("bad_value"):
        decode_json_tensor([2], dtype, data, LIMITS)


def test_json_nan_and_inf_are_caught_by_check_finite():
    for text in ("[1.0, NaN]", "[1.0, Infinity]", "[-Infinity, 1]", "[1e400, 1]"):
        arr = decode_json_tensor([2], "float32", json.loads(text), LIMITS)
        with refused("non_finite"):
            check_finite(arr)
    with refused("non_finite"):  # finite in JSON, overflows float16
        check_finite(decode_json_tensor([2], "float16", [1.0, 1e6], LIMITS))


def test_json_count_is_checked_from_the_shape_first():
    start = time.perf_counter()
    with refused("tensor_too_large", 413):
        decode_json_tensor([2**40], "float32", [1.0], LIMITS)
    with refused("tensor_too_large", 413):
        decode_json_tensor([1024, 1024, 2], "float32", [1.0], LIMITS)
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize(
    ("shape", "dtype", "code"),
    [
        ([True, 2], "float32", "bad_shape"),
        ([2.0, 2], "float32", "bad_shape"),
        ("2,2", "float32", "bad_shape"),
        ([-2, -2], "float32", "bad_shape"),
        ([1, 1, 1, 1, 1], "float32", "bad_shape"),
        ([2, 0], "float32", "empty_tensor"),
        ([2, 2], "float64", "unsupported_dtype"),
        ([2, 2], "object", "unsupported_dtype"),
        ([2, 2], 32, "unsupported_dtype"),
    ],
)
def test_json_bad_shape_or_dtype(shape, dtype, code):
    with refused(code):
        decode_json_tensor(shape, dtype, [[1.0, 2.0], [3.0, 4.0]], LIMITS)


def test_json_data_must_be_a_list():
    with refused("bad_value"):
        decode_json_tensor([1], "float32", 1.0, LIMITS)


def test_json_decode_of_a_large_flat_list_is_fast():
    data = np.random.default_rng(0).standard_normal(1 << 20).tolist()
    start = time.perf_counter()
    arr = decode_json_tensor([1, 16, 256, 256], "float32", data, LIMITS)
    assert time.perf_counter() - start < 2.0  # about 0.1 s here; generous for a shared CPU
    np.testing.assert_array_equal(arr.ravel(), np.array(data, dtype=np.float32))


# --- check_finite -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_check_finite_refuses_nan_and_inf(bad, dtype):
    arr = np.zeros((2, 3), dtype)
    check_finite(arr)
    arr[1, 2] = bad
    with refused("non_finite"):
        check_finite(arr)


def test_check_finite_passes_integers():
    check_finite(np.array([np.iinfo(np.int64).max, 0]))


# --- encode_npy and to_json_tensor ------------------------------------------------------


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array(3.5, dtype=np.float32),
        np.arange(24, dtype=np.int64).reshape(2, 3, 4)[:, ::2, 1:],  # not contiguous
        np.asfortranarray(np.arange(12, dtype=np.float16).reshape(3, 4)),
        np.arange(5, dtype=">f4"),
        np.array([True, False]),
        np.zeros((0, 3), np.float32),
    ],
)
def test_encode_npy_is_read_back_by_np_load(arr):
    data = encode_npy(arr)
    assert data[:8] == b"\x93NUMPY\x01\x00"
    header = 10 + struct.unpack("<H", data[8:10])[0]
    assert header % 64 == 0
    assert data[header - 1 : header] == b"\n"
    assert len(data) == header + arr.nbytes
    back = np.load(io.BytesIO(data), allow_pickle=False)
    assert back.dtype == arr.dtype
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_encode_npy_refuses_object_arrays():
    with pytest.raises(TypeError):
        encode_npy(np.array([None, 1], dtype=object))


def test_to_json_tensor_is_strict_json_and_flat_c_order():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3).T  # F-ordered view
    doc = json.loads(json.dumps(to_json_tensor(arr), allow_nan=False))
    assert doc["shape"] == [3, 2]
    assert doc["dtype"] == "float32"
    np.testing.assert_array_equal(np.array(doc["data"], np.float32).reshape(3, 2), arr)
    back = decode_json_tensor(doc["shape"], doc["dtype"], doc["data"], LIMITS)
    np.testing.assert_array_equal(back, arr)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_elements"):
        TensorLimits(max_elements=0, max_rank=4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 4095, 70_000, -1])
def test_check_finite_large_float32_finds_every_non_finite(bad: float, where: int) -> None:
    arr = np.random.default_rng(0).standard_normal(80_000).astype(np.float32)
    arr[where] = bad
    with pytest.raises(CodecError) as info:
        check_finite(arr.reshape(8, 10_000))
    assert info.value.code == "non_finite"


def test_check_finite_large_values_whose_squares_overflow_pass() -> None:
    arr = np.full(10_000, 3e38, np.float32)  # finite, though its sum of squares is not
    assert np.isfinite(arr).all()
    check_finite(arr)
    check_finite(np.asfortranarray(np.ones((100, 100), np.float32)))
