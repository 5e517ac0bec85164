"""Stopping a request's runs when its client goes away while they run.

Once the body is read, the next ASGI message a request can receive is ``http.disconnect``;
a small task polls for it and stops the request's onnxruntime runs, so a client that hangs
up does not keep burning an inference slot for nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import Request

from app.core.errors import ErrorCode
from app.inference.deadline import RunControl

POLL_S = 0.05


@asynccontextmanager
async def stopped_when_gone(request: Request) -> AsyncIterator[RunControl]:
    """A ``RunControl`` for the block's runs, stopped if the client disconnects."""
    control = RunControl()

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(POLL_S)
        control.stop(ErrorCode.CANCELLED)

    watcher = asyncio.create_task(watch())
    try:
        yield control
    finally:
        watcher.cancel()
        with suppress(asyncio.CancelledError):
            await watcher
