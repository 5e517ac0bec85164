"""The one exception the codecs raise for bad client input."""

from __future__ import annotations

from app.core.errors import ApiError, ErrorCode


class CodecError(ApiError, ValueError):
    """Bad client input: a code from the catalogue (which gives the status) and a sentence
    for a person that never echoes the client's bytes or values."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_NPY) -> None:
        super().__init__(code, message)
