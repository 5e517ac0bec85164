"""Giving freed heap memory back to the system after a large /pool run.

glibc raises its mmap threshold after a large block is freed, so later large blocks come
from the heap, and the heap keeps its top and its free middle pages resident after they are
freed: RSS ratchets up after each expensive request. ``malloc_trim(0)`` returns those pages
(it also releases free pages inside the heap, glibc >= 2.8). Measured in docs/throughput.md;
a no-op where libc has no ``malloc_trim`` (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache

TRIM_AFTER_BYTES = 64 << 20
"""Runs whose estimated peak is below this leave too little to be worth a trim (~1 ms)."""


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    trim = getattr(libc, "malloc_trim", None)
    return trim if callable(trim) else None


def release_freed_memory() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
