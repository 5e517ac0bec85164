"""The registry of system shared-memory regions (Triton's shared-memory extension).

A client on this host creates a POSIX shared-memory object (a file ``/dev/shm/<key>``) and
registers it under a region name with an offset and a byte size; requests then name the
region, an offset within it and a byte size for each input or output. ``read`` hands out a
read-only view of the mapping (no copy) and ``write`` copies a result into it once.

Keys are single file names (an optional leading ``/``, no other slash, never ``.`` or ``..``)
opened under ``root`` with ``O_NOFOLLOW``, and only regular files big enough for the region
are mapped. Caps on the number of regions and their total bytes are checked before any file
is opened. Our descriptor is closed once the file is mapped; the mapping keeps its own (CPython's
mmap holds a duplicate), and ``mmap.size()`` is an ``fstat`` on it, so every ``read`` and
``write`` first re-checks the file's size: a file truncated since registration is a
``region_bounds`` error, not a SIGBUS.

Residual risk: a process on this host that shrinks the file *while* a run is touching the
mapping (between the size check and the last access) can still fault the server with SIGBUS,
and it can change input bytes during a run. That is why the extension is off by default and
loopback-only, and it is the same trust model as Triton's: regions are for cooperating
processes on one host.

The table is guarded by a lock: registration can come from the event loop and from gRPC
threads. Unregistering a region whose view an in-flight request still holds drops the
registry's reference; the mapping is unmapped when the last view goes.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import ApiError, ErrorCode

_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_KEY = re.compile(r"/?([A-Za-z0-9._-]{1,200})")
# O_NONBLOCK: opening a special file (a FIFO, a device) must never wait; mmap ignores it.
_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class RegionStatus:
    name: str
    key: str
    offset: int
    byte_size: int


@dataclass(frozen=True)
class _Region:
    """A registered region and its mapping, where the region's byte 0 lies at ``base`` (mmap
    offsets must be aligned, region offsets need not be)."""

    status: RegionStatus
    mapping: mmap.mmap
    base: int

    def release(self) -> None:
        # BufferError: a request still holds a view; the mapping is unmapped when it goes.
        with contextlib.suppress(BufferError):
            self.mapping.close()


def _unknown() -> ApiError:
    return ApiError(ErrorCode.UNKNOWN_REGION, "no shared-memory region of that name")


def _bad(message: str) -> ApiError:
    return ApiError(ErrorCode.BAD_REGION, message)


def _file_name(key: str) -> str:
    """The key as one file name under root, or BAD_REGION: it can never leave root."""
    match = _KEY.fullmatch(key)
    if match is None or match.group(1) in (".", ".."):
        raise _bad(
            "a region key is an optional leading '/' then 1 to 200 of A-Z a-z 0-9 . _ -, "
            "and not '.' or '..'"
        )
    return match.group(1)


def _check_numbers(offset: int, byte_size: int) -> None:
    if offset < 0 or byte_size < 1:
        raise _bad("a region needs offset >= 0 and byte_size >= 1")


def _map(fd: int, offset: int, byte_size: int) -> tuple[mmap.mmap, int]:
    """Map the bytes of [offset, offset + byte_size) of a regular file; return the mapping
    and where ``offset`` lies in it."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise _bad("a region key must name a regular file in shared memory")
    if info.st_size < offset + byte_size:
        raise _bad("the region's file holds fewer than offset + byte_size bytes")
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    try:
        mapping = mmap.mmap(fd, offset + byte_size - start, offset=start)
    except (OSError, ValueError, OverflowError) as exc:
        # e.g. the file shrank between fstat and mmap
        raise _bad("the region's file could not be mapped") from exc
    return mapping, offset - start


def _open_region(path: Path, offset: int, byte_size: int) -> tuple[mmap.mmap, int]:
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        # strerror only: str(exc) would echo the path
        raise _bad(f"the region key names no file this server can open ({exc.strerror})") from exc
    try:
        return _map(fd, offset, byte_size)
    finally:
        os.close(fd)


class SharedMemoryRegistry:
    """Registered system shared-memory regions, by name, within caps on count and bytes."""

    def __init__(self, max_regions: int, max_bytes: int, root: Path = Path("/dev/shm")) -> None:
        self.max_regions = max_regions
        self.max_bytes = max_bytes
        self.root = root
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if _NAME.fullmatch(name) is None:
            raise _bad("a region name is 1 to 128 of A-Z a-z 0-9 . _ -")
        path = self.root / _file_name(key)
        _check_numbers(offset, byte_size)
        # Held through open and mmap (both quick): no other registration slips past the caps.
        with self._lock:
            self._check_room(name, byte_size)
            mapping, base = _open_region(path, offset, byte_size)
            status = RegionStatus(name, key, offset, byte_size)
            self._regions[name] = _Region(status, mapping, base)

    def _check_room(self, name: str, byte_size: int) -> None:
        if name in self._regions:
            raise ApiError(ErrorCode.REGION_EXISTS, "a region of that name is registered")
        if len(self._regions) >= self.max_regions:
            raise ApiError(
                ErrorCode.TOO_MANY_REGIONS, f"at most {self.max_regions} regions (max_shm_regions)"
            )
        held = sum(region.status.byte_size for region in self._regions.values())
        if held + byte_size > self.max_bytes:
            raise ApiError(
                ErrorCode.TOO_MANY_REGIONS,
                f"regions may hold at most {self.max_bytes} bytes in all (max_shm_bytes)",
            )

    def unregister(self, name: str = "") -> None:
        """Unregister one region, or every region for ``""`` (as Triton does)."""
        with self._lock:
            if not name:
                gone = list(self._regions.values())
                self._regions.clear()
            elif name in self._regions:
                gone = [self._regions.pop(name)]
            else:
                raise _unknown()
            for region in gone:
                region.release()

    def status(self, name: str = "") -> list[RegionStatus]:
        """One region's status, or every region's for ``""``."""
        with self._lock:
            if not name:
                return [region.status for region in self._regions.values()]
            if name not in self._regions:
                raise _unknown()
            return [self._regions[name].status]

    def read(self, name: str, offset: int, byte_size: int) -> memoryview:
        """A read-only view of the region's bytes [offset, offset + byte_size): no copy."""
        return self._view(name, offset, byte_size).toreadonly()

    def write(self, name: str, offset: int, data: memoryview | bytes) -> None:
        """Copy ``data`` (C-contiguous) into the region from ``offset``."""
        source = memoryview(data).cast("B")
        # The view pins the mapping, so the copy runs outside the lock.
        with self._view(name, offset, source.nbytes) as target:
            target[:] = source

    def _view(self, name: str, offset: int, byte_size: int) -> memoryview:
        # Under the lock: an unregister could otherwise close the mapping between the lookup
        # and the view.
        with self._lock:
            region = self._regions.get(name)
            if region is None:
                raise _unknown()
            _check_bounds(region, offset, byte_size)
            start = region.base + offset
            return memoryview(region.mapping)[start : start + byte_size]

    def close(self) -> None:
        """Unregister every region."""
        self.unregister()


def _check_bounds(region: _Region, offset: int, byte_size: int) -> None:
    size = region.status.byte_size
    if offset < 0 or byte_size < 0 or offset + byte_size > size:
        raise ApiError(
            ErrorCode.REGION_BOUNDS,
            f"offset and byte_size must lie within the region's {size} bytes",
        )
    # Touching mapped pages past the end of the file would be a SIGBUS. size() is an fstat.
    if region.mapping.size() < region.status.offset + offset + byte_size:
        raise ApiError(ErrorCode.REGION_BOUNDS, "the region's file is smaller than at registration")
