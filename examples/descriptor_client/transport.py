"""One ``/descriptor`` request for a few images, and what its answer means.

Images go as multipart parts of the field ``images``; the reply is asked for as npy
(``Accept: application/x-npy``, one N x D float32 array) or as JSON (``descriptors``, one
row per image). Any error answer becomes a ``RefusedError`` carrying the status, the envelope's
``code`` and message, and ``Retry-After``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto

import httpx
import numpy as np
import numpy.typing as npt

from examples.descriptor_client.inputs import ImageFile
from examples.descriptor_client.retry import RETRY_STATUSES, retry_after_s

NPY = "application/x-npy"
JSON = "application/json"
FORMATS = {"npy": NPY, "json": JSON}
ABORT_STATUSES = frozenset({401, 403, 404, 406})
"""Answers every other request would get too: a wrong key, model, URL or format."""

Matrix = npt.NDArray[np.float32]


class Verdict(Enum):
    RETRY = auto()  # overloaded or unreachable: the same request may succeed later
    ABORT = auto()  # nothing in this run can succeed: stop it
    REJECT = auto()  # something in these images: one of them may be the culprit


@dataclass(frozen=True)
class Refusal:
    status: int
    """0 when no answer came (a connection error)."""
    code: str
    message: str
    retry_after: float | None = None

    @property
    def verdict(self) -> Verdict:
        if self.status == 0 or self.status in RETRY_STATUSES:
            return Verdict.RETRY
        if self.status in ABORT_STATUSES:
            return Verdict.ABORT
        return Verdict.REJECT

    def __str__(self) -> str:
        answer = f"{self.status} {self.code}" if self.status else self.code
        return f"{answer}: {self.message}"


class RefusedError(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


@dataclass(frozen=True)
class Upload:
    image: ImageFile
    data: bytes


async def describe(
    client: httpx.AsyncClient, uploads: Sequence[Upload], model: str | None, reply: str = NPY
) -> Matrix:
    """The descriptors of ``uploads`` (one row each, in order); ``RefusedError`` otherwise.
    Connection errors are raised as ``RefusedError`` with status 0."""
    files = [("images", (u.image.key, u.data, u.image.content_type)) for u in uploads]
    params = {"model": model} if model else {}
    try:
        response = await client.post(
            "/descriptor", params=params, files=files, headers={"Accept": reply}
        )
    except httpx.TransportError as exc:
        raise RefusedError(Refusal(0, "connection", str(exc) or type(exc).__name__)) from exc
    if response.is_error:
        raise RefusedError(refusal_of(response))
    return rows_of(response, len(uploads), reply)


def refusal_of(response: httpx.Response) -> Refusal:
    """The envelope's code and message when there is one, else the start of the body."""
    try:
        body = response.json()
        code, message = str(body["code"]), str(body["error"])
    except (ValueError, KeyError, TypeError):
        code, message = "no_envelope", response.text[:200]
    wait = retry_after_s(response.headers.get("retry-after"))
    return Refusal(response.status_code, code, message, wait)


def rows_of(response: httpx.Response, count: int, reply: str) -> Matrix:
    try:
        if reply == NPY:
            rows = np.load(io.BytesIO(response.content), allow_pickle=False)
        else:
            rows = np.asarray(response.json()["descriptors"], dtype=np.float32)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise RefusedError(Refusal(response.status_code, "bad_reply", str(exc))) from exc
    if rows.ndim != 2 or rows.shape[0] != count:
        message = f"expected {count} descriptors, got an array of {rows.shape}"
        raise RefusedError(Refusal(response.status_code, "bad_reply", message))
    matrix: Matrix = rows.astype(np.float32, copy=False)
    return matrix
