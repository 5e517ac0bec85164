"""The one exception the codecs raise for bad client input."""

from __future__ import annotations


class CodecError(ValueError):
    """Bad client input, with what the route should answer.

    Attributes:
        status: the HTTP status: 413 too large, 415 unsupported or corrupt image, 422
            invalid tensor or value.
        code: a stable machine code for the error envelope (e.g. ``tensor_too_large``).

    The message is a sentence for a person. It never echoes the client's bytes or values.
    """

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
