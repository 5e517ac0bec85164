"""Fuzzing app.codecs.tensor.parse_npy: arbitrary bytes and near-miss .npy files.

The property, for every input: ``parse_npy`` returns an array, or raises ``CodecError`` with a
4xx status, and nothing else, within ``BUDGET_S``. A returned array must be what numpy's own
reader (``np.lib.format.read_array``) makes of the same bytes. Near-miss files are built
part by part (magic, version, header length, header dict text, body), each part either
well-formed or broken on purpose, so the test also knows the answer: a file with no broken
part must be read with the shape and dtype its header says, and a file with exactly one
broken part must be refused. Two broken parts can cancel out (a header length that lies by
as many bytes as the body is off), and random byte noise may or may not break a file; then
either answer passes, but an accepted file must still agree with numpy.

Example counts (3000 near-miss files, 1000 arbitrary inputs) keep the module near 8 s on 2
cores; tests/conftest.py derandomises, so every run tries the same inputs.
"""

from __future__ import annotations

import io
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.codecs.errors import CodecError
from app.codecs.tensor import TensorLimits, parse_npy

LIMITS = TensorLimits(max_elements=4096, max_rank=4)
BUDGET_S = 0.25  # per call; a well-behaved parse of these inputs takes well under 10 ms
MAGIC = b"\x93NUMPY"

# Parts a near-miss file can have broken; "noise" (a random byte anywhere) may or may not.
BREAKABLE = ("descr", "shape", "fortran", "keys", "version", "length", "body", "truncate")
GOOD_DESCRS = ("<f4", ">f4", "=f4", "<f2", ">f2", "<i8", ">i8")
ODD_DESCRS = (
    "<f1", "=f1", "<b2", "<b4", "<b8", "|b2", ">f1",  # match [<>|=][fiub][1248], no dtype
    "<f8", "|u1", "|b1", "<c8", "|O", "O", "<U3", "|S4", "<M8[ns]", "<V4",  # dtypes, refused
    "SECRET", "", "<f4 ", "f4", "float32", "\u00e94", 3, None, b"<f4", [("a", "<f4")],
)  # fmt: skip
ODD_FORTRAN = (0, 1, None, "False", 1.0)
HUGE_DIMS = (2**31, 2**32 + 1, 2**63, 2**64, 10**30, 10**400)


@dataclass(frozen=True)
class Case:
    data: bytes
    broken: frozenset[str]  # the parts broken on purpose
    shape: object
    descr: object


def good_shapes() -> st.SearchStrategy[tuple[int, ...]]:
    # at most 8**4 = 4096 elements: always within LIMITS
    return st.lists(st.integers(1, 8), max_size=4).map(tuple)


def odd_shapes() -> st.SearchStrategy[object]:
    dim = st.one_of(st.integers(1, 4), st.integers(-(2**63), 0), st.sampled_from(HUGE_DIMS))
    wrong = st.sampled_from([2.0, True, "3", None, (2,), [2]])
    return st.one_of(
        st.lists(dim, min_size=1, max_size=4).map(tuple).filter(lambda s: min(s) < 1 or max(s) > 8),
        st.lists(st.integers(1, 2), min_size=5, max_size=7).map(tuple),  # rank over the limit
        st.lists(st.one_of(st.integers(1, 4), wrong), min_size=1, max_size=4)
        .map(tuple)
        .filter(lambda s: any(type(d) is not int for d in s)),
        st.lists(st.integers(1, 4), max_size=3),  # a list, not a tuple
        st.sampled_from([3, None, "2,2", {"n": 2}]),
    )


def header_text(items: list[tuple[str, Any]], draw: st.DrawFn) -> str:
    """A dict literal as a client might write it: numpy's layout or a sloppier one."""
    body = ", ".join(f"{key!r}: {value!r}" for key, value in items)
    comma = draw(st.sampled_from(["", ", ", ","]))
    pad = " " * draw(st.integers(0, 70))
    newline = draw(st.sampled_from(["\n", ""]))
    return "{" + body + comma + "}" + pad + newline


def header_items(broken: frozenset[str], draw: st.DrawFn) -> tuple[list[tuple[str, Any]], Any, Any]:
    descr = draw(st.sampled_from(ODD_DESCRS if "descr" in broken else GOOD_DESCRS))
    shape = draw(odd_shapes() if "shape" in broken else good_shapes())
    fortran = draw(st.sampled_from(ODD_FORTRAN) if "fortran" in broken else st.booleans())
    items = [("descr", descr), ("fortran_order", fortran), ("shape", shape)]
    if "keys" in broken:
        if draw(st.booleans()):
            del items[draw(st.integers(0, 2))]
        else:
            items.append((draw(st.sampled_from(["extra", "descr2", "Shape"])), 1))
    return draw(st.permutations(items)), descr, shape


def body_length(descr: object, shape: object, broken: frozenset[str], draw: st.DrawFn) -> int:
    if not {"descr", "shape"} & broken:
        assert isinstance(descr, str)
        assert isinstance(shape, tuple)
        exact = int(np.prod(shape, dtype=np.int64)) * np.dtype(descr).itemsize
    else:  # no right answer: any small body
        exact = draw(st.integers(0, 64))
    if "body" not in broken:
        return exact
    delta = draw(st.integers(-9, 9).filter(bool))
    return exact + delta if exact + delta >= 0 else exact - delta


def length_field(version: int, true_length: int, lie: bool, draw: st.DrawFn) -> bytes:
    fmt, most = ("<H", 2**16 - 1) if version == 1 else ("<I", 2**32 - 1)
    length = true_length
    if lie:
        length = draw(st.one_of(st.integers(-12, 12).filter(bool).map(true_length.__add__),
                                st.integers(0, most)))  # fmt: skip
        length = min(max(length, 0), most)
        if length == true_length:
            length = true_length + 1 if true_length < most else true_length - 1
    return struct.pack(fmt, length)


@st.composite
def near_miss_npy(draw: st.DrawFn) -> Case:
    count = draw(st.sampled_from([0, 1, 1, 2]))  # mostly one broken part: each check is hit
    parts = st.lists(st.sampled_from(BREAKABLE), min_size=count, max_size=count, unique=True)
    broken = frozenset(draw(parts))
    items, descr, shape = header_items(broken, draw)
    version = draw(st.sampled_from([(0, 0), (4, 0), (1, 1), (2, 1)] if "version" in broken
                                   else [(1, 0), (2, 0), (3, 0)]))  # fmt: skip
    text = header_text(items, draw).encode("utf-8" if version[0] == 3 else "latin-1")
    length = length_field(1 if version[0] == 1 else 2, len(text), "length" in broken, draw)
    size = body_length(descr, shape, broken, draw)
    body = np.random.default_rng(draw(st.integers(0, 2**32))).bytes(size)
    data = MAGIC + bytes(version) + length + text + body
    if "truncate" in broken:
        data = data[: draw(st.integers(0, len(data) - 1))]
    if data and draw(st.integers(0, 3)) == 0:  # noise: one byte anywhere, harmful or not
        broken |= {"noise"}
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([draw(st.integers(0, 255))]) + data[position + 1 :]
    return Case(data, broken, shape, descr)


def parse(data: bytes) -> np.ndarray | CodecError:
    """``parse_npy``'s array or its ``CodecError`` (4xx); any other exception escapes."""
    try:
        result: np.ndarray | CodecError = parse_npy(data, LIMITS)
    except CodecError as exc:
        result = exc
    if isinstance(result, CodecError):
        assert 400 <= result.status < 500, result
    return result


def parse_within_budget(data: bytes) -> np.ndarray | CodecError:
    """``parse`` within ``BUDGET_S`` of CPU time (so other processes on the host do not
    count); a call over it runs once more, and only a second slow run fails."""
    for _ in range(2):
        start = time.process_time()
        result = parse(data)
        if time.process_time() - start < BUDGET_S:
            return result
    raise AssertionError(f"parse_npy took over {BUDGET_S} s of CPU twice")


def assert_agrees_with_numpy(data: bytes, arr: np.ndarray) -> None:
    """An accepted file reads the same with numpy's own reader."""
    expected = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    assert arr.shape == expected.shape
    assert arr.dtype == expected.dtype.newbyteorder("=")
    np.testing.assert_array_equal(arr, expected)


def check(data: bytes) -> None:
    """The property for input with no known answer (also atheris' target)."""
    result = parse_within_budget(data)
    if isinstance(result, np.ndarray):
        assert_agrees_with_numpy(data, result)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(near_miss_npy())
def test_near_miss_npy_files(case: Case) -> None:
    result = parse_within_budget(case.data)
    if not case.broken:  # every part well-formed: read as the header says
        assert isinstance(result, np.ndarray), result
        assert result.shape == case.shape
        assert isinstance(case.descr, str)
        assert result.dtype == np.dtype(case.descr).newbyteorder("=")
    elif len(case.broken) == 1 and "noise" not in case.broken:  # one part broken: refused
        assert isinstance(result, CodecError), case.broken
    if isinstance(result, np.ndarray):
        assert_agrees_with_numpy(case.data, result)


PREFIXES = (b"", MAGIC, MAGIC + b"\x01\x00", MAGIC + b"\x02\x00", MAGIC + b"\x03\x00")


@settings(max_examples=1000)
@given(st.sampled_from(PREFIXES), st.binary(max_size=300))
def test_arbitrary_bytes(prefix: bytes, tail: bytes) -> None:
    check(prefix + tail)


def test_generator_makes_every_kind_of_case() -> None:
    """The near-miss strategy reaches both answers: files read and files refused."""
    seen: dict[str, int] = {"read": 0, "refused": 0}

    @settings(max_examples=300, database=None)
    @given(near_miss_npy())
    def sample(case: Case) -> None:
        result = parse_within_budget(case.data)
        seen["read" if isinstance(result, np.ndarray) else "refused"] += 1

    sample()
    assert min(seen.values()) >= 30, seen
