"""Keeping the event loop free: work that scales with a payload runs on a worker thread once
the payload is large (decoding, finiteness scans, encoding), inline while it is small."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread

T = TypeVar("T")
OFF_LOOP_ELEMENTS = 65_536
"""Arrays of more elements than this are scanned or encoded off the event loop."""
OFF_LOOP_BYTES = 4 * OFF_LOOP_ELEMENTS
"""Bodies of more bytes than this are decoded off the event loop."""


async def off_loop_if(large: bool, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)``: on a worker thread when ``large``, else right here."""
    if large:
        return await anyio.to_thread.run_sync(fn, *args)
    return fn(*args)
