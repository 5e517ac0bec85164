"""The system shared-memory registry: registration, zero-copy reads and writes, caps, hostile
keys and sizes, truncated files, and views held across unregistration. tritonclient's
shared-memory helpers are the independent client on the real /dev/shm."""

from __future__ import annotations

import gc
import mmap
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.core.errors import ApiError, ErrorCode
from app.oip.shm import RegionStatus, SharedMemoryRegistry

PATTERN = bytes(range(256)) * 64  # 16 KiB, every byte telling its position mod 256


def raises(code: ErrorCode, call: Callable[..., object], *args: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args)
    assert caught.value.code is code, caught.value.message
    return caught.value


def open_fds(path: Path) -> list[str]:
    """This process's descriptors open on ``path``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except OSError:
            continue  # the listing's own descriptor, gone already
    return found


def mapped(path: Path) -> bool:
    """Whether ``path`` is mapped into this process."""
    return str(path) in Path("/proc/self/maps").read_text()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SharedMemoryRegistry]:
    reg = SharedMemoryRegistry(max_regions=4, max_bytes=1 << 20, root=tmp_path)
    yield reg
    reg.close()


@pytest.fixture
def shm_file(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.write_bytes(PATTERN)
    return path


# --- round trips ------------------------------------------------------------------------


@pytest.fixture
def triton_region() -> Iterator[tuple[Any, str]]:
    if not Path("/dev/shm").is_dir():
        pytest.skip(
            reason="tritonclient's system shared memory creates its regions under /dev/shm, "
            "which this host does not mount"
        )
    import tritonclient.utils.shared_memory as shm  # a dev dependency: never skipped for it

    key = f"/poolserve_test_{uuid.uuid4().hex}"
    handle = shm.create_shared_memory_region("unused", key, 3 * mmap.ALLOCATIONGRANULARITY)
    yield handle, key
    shm.destroy_shared_memory_region(handle)


def test_tritonclient_round_trip_on_dev_shm(triton_region: tuple[Any, str]) -> None:
    from tritonclient.utils import shared_memory as shm

    handle, key = triton_region
    region_offset, tensor_offset = mmap.ALLOCATIONGRANULARITY + 8, 16  # unaligned region
    sent = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    shm.set_shared_memory_region(handle, [sent], offset=region_offset + tensor_offset)
    reg = SharedMemoryRegistry(max_regions=2, max_bytes=1 << 20)
    try:
        reg.register("in", key, region_offset, 1024)
        view = reg.read("in", tensor_offset, sent.nbytes)
        got = np.frombuffer(view, dtype=np.float32).reshape(2, 3, 4)
        np.testing.assert_array_equal(got, sent)
        del got
        view.release()

        result = np.linspace(-1, 1, 10, dtype=np.float64)
        reg.write("in", 200, result.data)
        back = shm.get_contents_as_numpy(handle, np.float64, [10], offset=region_offset + 200)
        np.testing.assert_array_equal(back, result)
    finally:
        reg.close()


@pytest.mark.parametrize("region_offset", [0, 1, 4095, 4096, 4097, 3 * 4096 + 5])
@pytest.mark.parametrize(("offset", "size"), [(0, 1), (7, 300), (0, 512)])
def test_offsets_are_region_plus_tensor(
    registry: SharedMemoryRegistry, shm_file: Path, region_offset: int, offset: int, size: int
) -> None:
    registry.register("r", "data", region_offset, 512)
    at = region_offset + offset
    assert bytes(registry.read("r", offset, size)) == PATTERN[at : at + size]

    payload = bytes((7 * i + 3) % 256 for i in range(size))
    registry.write("r", offset, payload)
    written = shm_file.read_bytes()
    assert written[at : at + size] == payload
    assert written[:at] == PATTERN[:at]
    assert written[at + size :] == PATTERN[at + size :]


def test_read_is_a_read_only_view_of_the_file(
    registry: SharedMemoryRegistry, shm_file: Path
) -> None:
    registry.register("r", "/data", 100, 50)
    view = registry.read("r", 10, 4)
    assert view.readonly
    with pytest.raises(TypeError):
        view[0] = 1
    fd = os.open(shm_file, os.O_WRONLY)
    try:
        os.pwrite(fd, b"WXYZ", 110)
    finally:
        os.close(fd)
    assert bytes(view) == b"WXYZ"  # the mapping itself, not a copy taken at read


def test_write_takes_bytes_and_typed_memoryviews(
    registry: SharedMemoryRegistry, shm_file: Path
) -> None:
    registry.register("r", "data", 0, 64)
    values = np.array([[1.5, -2.0], [3.25, 4.0]], dtype=np.float32)
    registry.write("r", 0, values.data)
    registry.write("r", 16, b"tail")
    assert np.frombuffer(bytes(registry.read("r", 0, 16)), np.float32).tolist() == [
        1.5,
        -2.0,
        3.25,
        4.0,
    ]
    assert shm_file.read_bytes()[16:20] == b"tail"


# --- status and unregister ----------------------------------------------------------------


def test_status_and_unregister(registry: SharedMemoryRegistry, tmp_path: Path) -> None:
    for key in ("a", "b"):
        (tmp_path / key).write_bytes(bytes(100))
    registry.register("one", "/a", 0, 100)
    registry.register("two", "b", 10, 20)
    assert registry.status() == [
        RegionStatus("one", "/a", 0, 100),
        RegionStatus("two", "b", 10, 20),
    ]
    assert registry.status("two") == [RegionStatus("two", "b", 10, 20)]

    registry.unregister("one")
    assert [s.name for s in registry.status()] == ["two"]
    assert not open_fds(tmp_path / "a")
    assert open_fds(tmp_path / "b")
    registry.register("three", "a", 0, 1)
    registry.unregister()
    assert registry.status() == []
    assert not open_fds(tmp_path / "a")
    assert not open_fds(tmp_path / "b")
    assert not mapped(tmp_path / "b")


@pytest.mark.parametrize("call", ["status", "unregister", "read", "write"])
def test_unknown_region_is_404(registry: SharedMemoryRegistry, shm_file: Path, call: str) -> None:
    registry.register("known", "data", 0, 10)
    calls: dict[str, Callable[[], object]] = {
        "status": lambda: registry.status("other"),
        "unregister": lambda: registry.unregister("other"),
        "read": lambda: registry.read("other", 0, 1),
        "write": lambda: registry.write("other", 0, b"x"),
    }
    error = raises(ErrorCode.UNKNOWN_REGION, calls[call])
    assert error.status == 404
    assert "other" not in error.message
    assert [s.name for s in registry.status()] == ["known"]


def test_close_unregisters_everything(tmp_path: Path, shm_file: Path) -> None:
    reg = SharedMemoryRegistry(max_regions=4, max_bytes=1 << 20, root=tmp_path)
    reg.register("a", "data", 0, 10)
    reg.register("b", "data", 5, 10)
    reg.close()
    assert reg.status() == []
    assert not open_fds(shm_file)
    assert not mapped(shm_file)


# --- conflicts and caps -------------------------------------------------------------------


def test_reregistering_a_name_is_409(registry: SharedMemoryRegistry, shm_file: Path) -> None:
    registry.register("r", "data", 0, 10)
    error = raises(ErrorCode.REGION_EXISTS, registry.register, "r", "data", 100, 20)
    assert error.status == 409
    assert registry.status() == [RegionStatus("r", "data", 0, 10)]
    assert len(open_fds(shm_file)) == 1
    assert bytes(registry.read("r", 0, 10)) == PATTERN[:10]


def test_region_count_cap(tmp_path: Path, shm_file: Path) -> None:
    reg = SharedMemoryRegistry(max_regions=2, max_bytes=1 << 20, root=tmp_path)
    reg.register("a", "data", 0, 1)
    reg.register("b", "data", 0, 1)
    error = raises(ErrorCode.TOO_MANY_REGIONS, reg.register, "c", "data", 0, 1)
    assert error.status == 413
    assert len(open_fds(shm_file)) == 2  # the refused one left nothing open
    # the cap comes before the file: a missing one is not even looked at
    raises(ErrorCode.TOO_MANY_REGIONS, reg.register, "c", "missing", 0, 1)
    reg.unregister("a")
    reg.register("c", "data", 0, 1)
    reg.close()


def test_total_bytes_cap(tmp_path: Path, shm_file: Path) -> None:
    reg = SharedMemoryRegistry(max_regions=8, max_bytes=1000, root=tmp_path)
    reg.register("a", "data", 0, 600)
    raises(ErrorCode.TOO_MANY_REGIONS, reg.register, "b", "data", 0, 401)
    raises(ErrorCode.TOO_MANY_REGIONS, reg.register, "b", "missing", 0, 401)
    assert len(open_fds(shm_file)) == 1
    reg.register("b", "data", 0, 400)  # exactly max_bytes in all
    assert [s.name for s in reg.status()] == ["a", "b"]
    reg.close()


def test_caps_hold_under_concurrent_registration(tmp_path: Path, shm_file: Path) -> None:
    reg = SharedMemoryRegistry(max_regions=5, max_bytes=1 << 20, root=tmp_path)
    start = threading.Barrier(24)
    codes: list[ErrorCode | None] = []

    def register(name: str) -> None:
        start.wait()
        try:
            reg.register(name, "data", 0, 8)
        except ApiError as exc:
            codes.append(exc.code)
        else:
            codes.append(None)

    names = [f"r{i}" for i in range(20)] + ["same"] * 4
    threads = [threading.Thread(target=register, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes.count(None) == 5
    assert len(reg.status()) == 5
    assert len(open_fds(shm_file)) == 5
    assert set(codes) <= {None, ErrorCode.TOO_MANY_REGIONS, ErrorCode.REGION_EXISTS}
    reg.close()


# --- hostile registrations ----------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/",
        ".",
        "..",
        "/..",
        "/.",
        "../data",
        "a/b",
        "//data",
        "/etc/passwd",
        "data/",
        "x" * 201,
        "/" + "x" * 201,
        "data\n",
        "da\x00ta",
        "dáta",
        "da ta",
    ],
)
def test_hostile_keys_are_bad_region(tmp_path: Path, key: str) -> None:
    # Files are there for every key that names one, so only the key's form can refuse it.
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    for name in ("data", "a/b", "x" * 201, "data\n", "dáta", "da ta"):
        (root / name).write_bytes(PATTERN)
    (tmp_path / "data").write_bytes(PATTERN)  # what "../data" would reach
    registry = SharedMemoryRegistry(max_regions=2, max_bytes=1 << 20, root=root)
    error = raises(ErrorCode.BAD_REGION, registry.register, "r", key, 0, 1)
    assert error.status == 422
    assert registry.status() == []


def test_longest_key_and_name_are_accepted(registry: SharedMemoryRegistry, tmp_path: Path) -> None:
    (tmp_path / ("k" * 200)).write_bytes(b"x")
    registry.register("n" * 128, "/" + "k" * 200, 0, 1)
    raises(ErrorCode.BAD_REGION, registry.register, "n" * 129, "k" * 200, 0, 1)


@pytest.mark.parametrize("name", ["", "a/b", "a b", "é", "r\n", "../r"])
def test_hostile_names_are_bad_region(
    registry: SharedMemoryRegistry, shm_file: Path, name: str
) -> None:
    raises(ErrorCode.BAD_REGION, registry.register, name, "data", 0, 1)
    assert not open_fds(shm_file)


def test_absolute_path_outside_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(PATTERN)
    reg = SharedMemoryRegistry(max_regions=2, max_bytes=1 << 20, root=root)
    raises(ErrorCode.BAD_REGION, reg.register, "r", str(outside), 0, 1)
    raises(ErrorCode.BAD_REGION, reg.register, "r", "../outside", 0, 1)
    assert not open_fds(outside)


def test_symlink_in_root_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    target = tmp_path / "secret"
    target.write_bytes(PATTERN)
    (root / "link").symlink_to(target)
    reg = SharedMemoryRegistry(max_regions=2, max_bytes=1 << 20, root=root)
    raises(ErrorCode.BAD_REGION, reg.register, "r", "link", 0, 1)
    assert not open_fds(target)
    assert reg.status() == []


def test_missing_file_and_directory_are_refused(
    registry: SharedMemoryRegistry, tmp_path: Path
) -> None:
    (tmp_path / "dir").mkdir()
    raises(ErrorCode.BAD_REGION, registry.register, "r", "missing", 0, 1)
    raises(ErrorCode.BAD_REGION, registry.register, "r", "dir", 0, 1)
    assert not open_fds(tmp_path / "dir")


def test_fifo_is_refused_without_blocking(registry: SharedMemoryRegistry, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            registry.register("r", "fifo", 0, 1)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "registering a FIFO blocked"
    assert isinstance(outcome[0], ApiError)
    assert outcome[0].code is ErrorCode.BAD_REGION
    assert not open_fds(fifo)


@pytest.mark.parametrize(
    ("offset", "size"),
    [
        (0, len(PATTERN) + 1),
        (len(PATTERN), 1),
        (len(PATTERN) - 1, 2),
        (1, len(PATTERN)),
        (2**63, 1),
        (0, 2**64),
        (2**64 - 1, 2),
        (-1, 1),
        (-(2**63), 10),
        (0, -1),
        (0, 0),
    ],
)
def test_registration_beyond_the_file_or_negative_is_bad_region(
    tmp_path: Path, shm_file: Path, offset: int, size: int
) -> None:
    # a byte cap that huge sizes pass, so the file's own size is what refuses them
    registry = SharedMemoryRegistry(max_regions=2, max_bytes=2**80, root=tmp_path)
    raises(ErrorCode.BAD_REGION, registry.register, "r", "data", offset, size)
    assert registry.status() == []
    assert not open_fds(shm_file)
    assert not mapped(shm_file)


@pytest.mark.parametrize(("offset", "size"), [(0, len(PATTERN)), (len(PATTERN) - 1, 1)])
def test_registration_up_to_the_file_end(
    registry: SharedMemoryRegistry, shm_file: Path, offset: int, size: int
) -> None:
    registry.register("r", "data", offset, size)
    assert bytes(registry.read("r", size - 1, 1)) == PATTERN[-1:]


# --- reads and writes beyond the region ---------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "size"),
    [(0, 65), (64, 1), (1, 64), (63, 2), (-1, 1), (0, -1), (2**64, 1), (1, 2**64 - 1)],
)
def test_read_beyond_the_region_is_region_bounds(
    registry: SharedMemoryRegistry, shm_file: Path, offset: int, size: int
) -> None:
    registry.register("r", "data", 100, 64)  # the file goes on well past the region
    error = raises(ErrorCode.REGION_BOUNDS, registry.read, "r", offset, size)
    assert error.status == 422


@pytest.mark.parametrize(("offset", "size"), [(60, 5), (64, 1), (0, 65), (-1, 1)])
def test_write_beyond_the_region_is_refused_and_writes_nothing(
    registry: SharedMemoryRegistry, shm_file: Path, offset: int, size: int
) -> None:
    registry.register("r", "data", 100, 64)
    raises(ErrorCode.REGION_BOUNDS, registry.write, "r", offset, b"\xff" * size)
    assert shm_file.read_bytes() == PATTERN


def test_reads_and_writes_reaching_the_region_end(
    registry: SharedMemoryRegistry, shm_file: Path
) -> None:
    registry.register("r", "data", 100, 64)
    assert bytes(registry.read("r", 0, 64)) == PATTERN[100:164]
    assert bytes(registry.read("r", 64, 0)) == b""
    registry.write("r", 59, b"12345")
    assert shm_file.read_bytes()[159:164] == b"12345"


@pytest.mark.parametrize("region_offset", [0, 4096, 4100])
def test_truncated_file_is_region_bounds_not_sigbus(
    registry: SharedMemoryRegistry, shm_file: Path, region_offset: int
) -> None:
    registry.register("r", "data", region_offset, 2 * 4096)
    os.truncate(shm_file, region_offset + 10)
    assert bytes(registry.read("r", 0, 10)) == PATTERN[region_offset : region_offset + 10]
    raises(ErrorCode.REGION_BOUNDS, registry.read, "r", 0, 11)
    raises(ErrorCode.REGION_BOUNDS, registry.read, "r", 9, 2)
    raises(ErrorCode.REGION_BOUNDS, registry.read, "r", 8191, 1)
    raises(ErrorCode.REGION_BOUNDS, registry.write, "r", 4096, b"x")
    raises(ErrorCode.REGION_BOUNDS, registry.write, "r", 5, b"123456")
    registry.write("r", 5, b"12345")
    assert shm_file.read_bytes()[region_offset + 5 :] == b"12345"


# --- views held across unregistration -----------------------------------------------------


@pytest.mark.parametrize("unregister_all", [False, True])
def test_unregister_while_a_view_is_held(
    registry: SharedMemoryRegistry, shm_file: Path, unregister_all: bool
) -> None:
    registry.register("r", "data", 4100, 100)
    view = registry.read("r", 10, 20)
    as_array = np.frombuffer(view, dtype=np.uint8)
    registry.unregister("" if unregister_all else "r")  # must not raise
    assert registry.status() == []
    assert bytes(view) == PATTERN[4110:4130]
    assert as_array.tobytes() == PATTERN[4110:4130]
    assert mapped(shm_file)  # still mapped for the view's holders

    del as_array
    view.release()
    gc.collect()
    assert not mapped(shm_file)  # unmapped once the last view went
    assert not open_fds(shm_file)
    registry.register("r", "data", 0, 10)  # the name is free again
    assert bytes(registry.read("r", 0, 10)) == PATTERN[:10]


def test_close_while_a_view_is_held(tmp_path: Path, shm_file: Path) -> None:
    reg = SharedMemoryRegistry(max_regions=2, max_bytes=1 << 20, root=tmp_path)
    reg.register("r", "data", 0, 50)
    view = reg.read("r", 0, 50)
    reg.close()
    assert bytes(view) == PATTERN[:50]
    view.release()
    gc.collect()
    assert not mapped(shm_file)
    assert not open_fds(shm_file)
