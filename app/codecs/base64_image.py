"""An image sent as text in a JSON body, to its bytes: standard base64 (RFC 4648, padded,
no line breaks) or a base64 data URI (RFC 2397, ``data:image/png;base64,...``).

The decoded length follows from the text's length, so an image over ``max_bytes`` is refused
before anything is decoded. A data URI must declare JPEG, PNG or WebP (which of the three
is then read from the bytes, as for any upload). A URL is refused with its own code: the
service fetches nothing. Messages never echo the client's text.
"""

from __future__ import annotations

import base64
import binascii
import re

from app.codecs.errors import CodecError
from app.core.errors import ErrorCode

DATA_URI_TYPES = ("image/jpeg", "image/jpg", "image/png", "image/webp")
"""Media types a data URI may declare (``image/jpg`` is a common misspelling of JPEG)."""
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # RFC 3986; ':' is never base64
_DATA = "data:"
_BASE64_MARK = ";base64"


def _bad_base64(why: str) -> CodecError:
    return CodecError(f"an image is not valid base64: {why}", code=ErrorCode.BAD_BASE64)


def _data_uri_payload(text: str) -> str:
    """The base64 part of a data URI, once its media type is one we decode."""
    header, comma, payload = text.partition(",")
    if not comma or not header.lower().endswith(_BASE64_MARK):
        raise _bad_base64("a data URI must be base64 (data:image/png;base64,...)")
    media = header[len(_DATA) :].split(";")[0].strip().lower()
    if media not in DATA_URI_TYPES:
        raise CodecError(
            "a data URI's media type must be image/jpeg, image/png or image/webp",
            code=ErrorCode.UNSUPPORTED_MEDIA,
        )
    return payload


def decoded_length(payload: str) -> int:
    """The bytes a padded base64 text decodes to; 422 when its length cannot be base64."""
    if len(payload) % 4:
        raise _bad_base64("its length is not a multiple of 4 (padding missing?)")
    padding = len(payload) - len(payload.rstrip("="))
    return len(payload) // 4 * 3 - min(padding, 2)


def base64_payload(text: str, max_bytes: int) -> str:
    """The base64 part of ``text``, checked to decode to at most ``max_bytes`` bytes.

    Raises ``CodecError``: 422 ``image_url`` for a URL, 415 ``unsupported_media`` for a data
    URI of another media type, 422 ``bad_base64``, 413 ``image_too_large``.
    """
    if text[: len(_DATA)].lower() == _DATA:
        payload = _data_uri_payload(text)
    elif _SCHEME.match(text):
        raise CodecError(
            "images are sent as base64 or data URIs; the service fetches no URLs",
            code=ErrorCode.IMAGE_URL,
        )
    else:
        payload = text
    if decoded_length(payload) > max_bytes:
        raise CodecError(
            f"an image is larger than the {max_bytes} bytes allowed (max_image_bytes)",
            code=ErrorCode.IMAGE_TOO_LARGE,
        )
    return payload


def decode_base64(payload: str) -> bytes:
    """Strict decoding: only the base64 alphabet, with correct padding."""
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):  # ValueError: characters beyond ASCII
        raise _bad_base64("characters outside the base64 alphabet, or wrong padding") from None
