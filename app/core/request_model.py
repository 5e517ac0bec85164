"""Which model (or ``pool:<op>``) the current HTTP request is for, as the engines learn it.

The metrics middleware opens a note per request; the engines write the model's name into it
once they have resolved it, and the middleware reads it back when the reply has gone, to
count the request's outcome per model. The note is a mutable dict in a ContextVar, so a
name written on a worker thread or a child task (both copy the context, not the dict)
reaches the middleware. Outside an HTTP request (gRPC, tests of an engine) noting is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_note: ContextVar[dict[str, str] | None] = ContextVar("poolserve_request_model", default=None)


@contextmanager
def model_note() -> Iterator[dict[str, str]]:
    """A fresh note for the block; ``note.get("model")`` after it is the request's model."""
    note: dict[str, str] = {}
    token = _note.set(note)
    try:
        yield note
    finally:
        _note.reset(token)


def note_model(name: str) -> None:
    note = _note.get()
    if note is not None:
        note["model"] = name


def noted_model() -> str | None:
    """The current request's model so far (for log lines), if any."""
    note = _note.get()
    return None if note is None else note.get("model")
