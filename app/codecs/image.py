"""Uploaded image bytes to an 8-bit RGB Pillow image, with every rule stated.

1. Format: the magic bytes must be JPEG, PNG or WebP, and Pillow is asked for that one
   format only (``Image.open(formats=...)``), so no other decoder plugin ever parses the
   upload. GIF, BMP, TIFF and other known formats get 415 ``unsupported_media``; bytes that
   are no image at all, or that fail to decode, get 415 ``bad_image``.
2. Size: the pixel count is read from the header by ``Image.open`` and checked against
   ``max_pixels`` before decoding (413 ``image_too_large``). Pillow's global
   ``Image.MAX_IMAGE_PIXELS`` is left alone (no process-wide side effects); its own
   ``DecompressionBombError`` (above twice that global) is mapped to the same 413.
   Keep ``max_pixels`` at or below ``Image.MAX_IMAGE_PIXELS`` (89.5 M): larger images would
   make Pillow warn, and above twice that refuse, whatever ``max_pixels`` says.
3. Truncated or corrupt data is an error, never padded: decoding refuses to run if
   ``ImageFile.LOAD_TRUNCATED_IMAGES`` has been switched on anywhere in the process.
4. Animated images (APNG, animated WebP) and multi-picture JPEGs: the first frame only.
5. EXIF orientation is applied (``ImageOps.exif_transpose``), so the result is upright.
6. Modes, always ending in 8-bit RGB:
   - ``RGB``: as is. ``L`` and ``1``: grey replicated to R, G and B.
   - 16-bit grey (``I;16*``, ``I``): the high byte (``v >> 8``, values clipped to 0-65535
     first), then replicated; a 16-bit ``tRNS`` grey key is ignored. 16-bit RGB(A) PNGs
     already decode to their high bytes in Pillow.
   - ``CMYK``: Pillow's ``convert("RGB")``, i.e. ``R = (255 - C) * (255 - K) / 255`` and
     so on, with no ICC colour management (embedded profiles are ignored, as everywhere
     else in this service).
   - Any alpha (``RGBA``, ``LA``, ``PA``, palette or grey/RGB with a ``tRNS`` transparent
     colour): composited onto white, ``v = round((c * a + 255 * (255 - a)) / 255)``. White
     because the result must not depend on the colour hidden under fully transparent
     pixels (often black, sometimes garbage), and transparent uploads (logos, product
     shots, scans) are drawn to be seen on a white page; dropping alpha would show the
     hidden colour instead.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFile, ImageOps

from app.codecs.errors import CodecError
from app.core.errors import ErrorCode

ACCEPTED = ("JPEG", "PNG", "WEBP")
# Known formats we refuse, by signature, so the client hears "unsupported", not "corrupt".
_REFUSED_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"SIMPLE  =", "FITS"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"qoif", "QOI"),
    (b"%PDF", "PDF"),
)
_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
)  # fmt: skip
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_ORIENTATION = 0x0112  # EXIF tag
_QUARTER_TURNS = (5, 6, 7, 8)  # orientations that swap width and height
DraftTarget = Callable[[int, int], tuple[int, int]]


def _bad_image() -> CodecError:
    return CodecError(
        "the image is corrupt, truncated or not a JPEG, PNG or WebP file",
        code=ErrorCode.BAD_IMAGE,
    )


def sniff_format(data: bytes) -> str:
    """``JPEG``, ``PNG`` or ``WEBP`` from the magic bytes, else a 415 ``CodecError``."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in _REFUSED_SIGNATURES:
        if data.startswith(signature):
            raise CodecError(
                f"{name} images are not accepted; send JPEG, PNG or WebP",
                code=ErrorCode.UNSUPPORTED_MEDIA,
            )
    raise _bad_image()


def _open_checked(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    """Open lazily (header only) and refuse images over ``max_pixels`` before decoding."""
    fmt = sniff_format(data)
    try:
        image = Image.open(io.BytesIO(data), formats=(fmt,))
    except Image.DecompressionBombError:
        raise _too_large(max_pixels) from None
    except _DECODE_ERRORS:  # UnidentifiedImageError is an OSError
        raise _bad_image() from None
    width, height = image.size
    if width < 1 or height < 1:
        raise _bad_image()
    if width * height > max_pixels:
        raise _too_large(max_pixels)
    return image


def _too_large(max_pixels: int) -> CodecError:
    return CodecError(
        f"the image has more than the {max_pixels} pixels allowed",
        code=ErrorCode.IMAGE_TOO_LARGE,
    )


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) grey to 8-bit grey by the high byte."""
    values = np.asarray(image)
    if values.dtype != np.uint16:  # mode I: int32, clip to the 16-bit range it came from
        values = np.clip(values, 0, 65535).astype(np.uint16)
    return Image.fromarray((values >> 8).astype(np.uint8), mode="L")


def _on_white(image: Image.Image) -> Image.Image:
    """Composite any alpha onto white: round((c * a + 255 * (255 - a)) / 255)."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)  # one uint16 copy
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    rgb *= alpha  # c * a <= 65025; the sum below stays <= 65025 + 127 < 2**16
    rgb += 255 * (255 - alpha) + 127
    rgb //= 255
    return Image.fromarray(rgb.astype(np.uint8), mode="RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB by the rules in the module docstring."""
    if image.mode.startswith("I"):
        image = _sixteen_bit_to_l(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return _on_white(image)
    if image.mode == "RGB":
        return image
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr: Pillow's standard conversions


def _draft(image: ImageFile.ImageFile, target: DraftTarget) -> None:
    """Ask libjpeg to decode at 1/2, 1/4 or 1/8 scale where the result stays at least as
    large as ``target`` wants (Pillow picks the scale; below twice the size it is 1)."""
    width, height = image.size
    turned = image.getexif().get(_ORIENTATION, 1) in _QUARTER_TURNS  # upright = swapped
    want_w, want_h = target(height, width) if turned else target(width, height)
    image.draft(image.mode, (want_h, want_w) if turned else (want_w, want_h))


def decode_image(data: bytes, max_pixels: int, draft: DraftTarget | None = None) -> Image.Image:
    """Decode an uploaded JPEG, PNG or WebP into an upright 8-bit RGB image.

    ``draft`` (JPEG only) maps the upright (width, height) to the smallest (width, height)
    the caller needs; libjpeg then decodes at a reduced scale in the DCT domain, much faster
    for large photos but no longer the same pixels as a full decode and resize.

    Raises ``CodecError``: 415 ``unsupported_media`` / ``bad_image``, 413
    ``image_too_large``.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on: truncated uploads pass")
    image = _open_checked(data, max_pixels)
    try:
        if draft is not None and image.format == "JPEG":
            _draft(image, draft)
        image.load()  # the first frame only
        ImageOps.exif_transpose(image, in_place=True)
        return to_rgb(image)
    except Image.DecompressionBombError:
        raise _too_large(max_pixels) from None
    except _DECODE_ERRORS:
        raise _bad_image() from None
