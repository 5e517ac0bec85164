"""Bounded shutdown: after SIGTERM the process exits within ``drain_timeout_s``.

uvicorn stops accepting at once, closes idle keep-alive connections, and gives in-flight
requests ``graceful_timeout_s`` before it cancels them (they are answered 503
``shutting_down`` here, not uvicorn's plain 500) and starts the lifespan shutdown.
That shutdown (batchers, the /pool graph builder's child) and the interpreter's exit (it
joins the worker threads of runs still going) then get ``close_budget_s``; past it a
watchdog ends the process, its child processes first. ``python -m app`` serves
``served_app``; in-process tests build ``create_app`` and never arm the watchdog.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import FastAPI

from app.core.config import Settings
from app.core.errors import ErrorCode

log = logging.getLogger("poolserve")

CLOSE_BUDGET_S = 2.0
FORCED_EXIT_CODE = 1

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def close_budget_s(drain_timeout_s: float) -> float:
    """What the drain leaves for closing: 2 s, or a quarter of a short drain."""
    return min(CLOSE_BUDGET_S, drain_timeout_s / 4)


def graceful_timeout_s(drain_timeout_s: float) -> float:
    """How long in-flight requests may run after SIGTERM (uvicorn's graceful timeout)."""
    return drain_timeout_s - close_budget_s(drain_timeout_s)


def _force_exit(budget_s: float) -> None:
    log.error(
        "shutdown took over %.1f s more than the drain: exiting with work unfinished", budget_s
    )
    for child in multiprocessing.active_children():  # the /pool graph builder
        child.kill()
    sys.stderr.flush()
    os._exit(FORCED_EXIT_CODE)


def arm_exit_watchdog(budget_s: float) -> threading.Timer:
    timer = threading.Timer(budget_s, _force_exit, args=(budget_s,))
    timer.daemon = True
    timer.start()
    return timer


async def _send_shutting_down(send: Send) -> None:
    body = orjson.dumps(
        {"error": "the server shut down before this request finished; retry",
         "code": ErrorCode.SHUTTING_DOWN.value}
    )  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DrainGuard:
    """ASGI wrapper for the drain: a request cut by it gets 503 ``shutting_down``, and once
    the lifespan shutdown begins the process has ``budget_s`` to exit."""

    def __init__(self, app: FastAPI, budget_s: float) -> None:
        self.app = app
        self.budget_s = budget_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:  # only uvicorn cancels a request: its drain ran out
            if started:
                raise
            await _send_shutting_down(send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watched() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                arm_exit_watchdog(self.budget_s)
            return message

        await self.app(scope, watched, send)


def served_app() -> DrainGuard:
    """The app ``python -m app`` serves (uvicorn's factory, in every worker process)."""
    from app.main import create_app  # the factory's import: app.server stays light

    app = create_app()  # its settings from the environment, as python -m app exported them
    settings: Settings = app.state.settings
    return DrainGuard(app, close_budget_s(settings.drain_timeout_s))
