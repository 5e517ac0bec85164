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
3. Truncated or corrupt data is an error, never padded. JPEG pixels are decoded by
   libjpeg-turbo through ``simplejpeg`` with ``strict=True``, which turns libjpeg's
   warnings (premature end of data, corrupt entropy data) into errors; Pillow's JPEG
   decoder only warns and pads with grey, so a truncated JPEG with an EOI marker, or a
   header claiming more rows than the data holds, would decode. The same strict header
   parse must agree with Pillow's on the frame size, and JPEGs whose sampling layout
   libjpeg-turbo's TurboJPEG API cannot name (a 4-channel JPEG with subsampled channels,
   say) are refused as well. PNG and WebP are decoded by Pillow, which refuses truncated
   data unless ``ImageFile.LOAD_TRUNCATED_IMAGES`` is on: decoding refuses to run if it
   has been switched on anywhere in the process.
4. Animated images (APNG, animated WebP) and multi-picture JPEGs: the first frame only.
5. EXIF (or XMP) orientation: ignored by default, as the reference pipelines ignore it
   (pytorch-NetVlad, Patch-NetVLAD and timm's eval transform open images with plain PIL),
   so the pixels are those stored. With ``exif=True`` (the ``exif_models`` setting) it is
   applied as ``ImageOps.exif_transpose`` does, so the result is upright; for JPEG it is
   then read from the header before decoding.
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
7. JPEG pixels are bit-identical to Pillow's decode of the same file: both are
   libjpeg-turbo with the accurate integer IDCT and smooth ("fancy") chroma upsampling;
   grey is replicated to R, G and B by libjpeg as by Pillow's ``convert``, and CMYK is
   read with Pillow's convention (Adobe's inverted CMYK) before the formula above.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import numpy as np
import simplejpeg  # type: ignore[import-untyped,unused-ignore]  # ships no py.typed
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin

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
# EXIF orientation -> the transposition that makes the image upright (ImageOps.exif_transpose)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# PNG chunks that may carry an orientation, and the text keywords Pillow's getexif reads
_PNG_EXIF_CHUNKS = (b"eXIf", b"tEXt", b"zTXt", b"iTXt")
_PNG_EXIF_KEYWORDS = (b"exif", b"Raw profile type exif", b"XML:com.adobe.xmp")
_DCT_SCALES = (8, 4, 2)  # libjpeg's power-of-two reductions, largest first
# simplejpeg picks the smallest libjpeg-turbo factor that meets the minimum size; below 8
# pixels a side 3/8 or 1/8 can round to the same size as 1/2 or 1/4 (other pixels than
# Pillow's draft), so tiny images, which gain nothing from it, are never reduced.
_MIN_REDUCED_SIDE = 8
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
    if fmt == "JPEG":
        _check_jpeg_header(data, image.size)
    return image


def _check_jpeg_header(data: bytes, size: tuple[int, int]) -> None:
    """libjpeg, which decodes the pixels, must parse the header without a warning and read
    the frame size Pillow read (and checked against the limit)."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data, strict=True)
    except ValueError:
        raise _bad_image() from None
    if (width, height) != size:
        raise _bad_image()


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


def _late_png_exif(data: bytes) -> bool:
    """Whether a chunk after the first IDAT may hold an orientation: ``eXIf``, or a text
    chunk under a keyword Pillow's ``getexif`` reads. Pillow reads such chunks only while
    decoding; walking the chunk headers finds them without decoding anything."""
    if not any(kind in data for kind in _PNG_EXIF_CHUNKS):  # C-speed: the usual answer
        return False
    pos, in_data = 8, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IEND":
            return False
        if kind == b"IDAT":
            in_data = True
        elif in_data and kind == b"eXIf":
            return True
        elif in_data and kind in _PNG_EXIF_CHUNKS:
            keyword = data[pos + 8 : pos + 8 + min(length, 80)].split(b"\0", 1)[0]  # <= 79
            if keyword in _PNG_EXIF_KEYWORDS:
                return True
        pos += 12 + length  # length, type, data, CRC
    return False


def _orientation(image: ImageFile.ImageFile, data: bytes) -> int:
    """The EXIF (or XMP) orientation ``ImageOps.exif_transpose`` would apply, 1 if none,
    from the metadata read with the header. Only a PNG with orientation metadata after its
    pixel data needs a decode first, as in Pillow (``PngImageFile.getexif`` would decode
    every PNG without early EXIF, hence the base method otherwise)."""
    if isinstance(image, PngImagePlugin.PngImageFile) and _late_png_exif(data):
        image.load()
        exif = image.getexif()
    else:
        exif = Image.Image.getexif(image)
    value = exif.get(_ORIENTATION, 1)
    return value if type(value) is int else 1  # exif_transpose ignores odd values too


def _dct_scale(size: tuple[int, int], orientation: int, draft: DraftTarget) -> int:
    """Pillow's draft rule: the largest of 8, 4 and 2 such that each stored side is at least
    that many times what ``draft`` needs of it, else 1 (never below the needed size)."""
    width, height = size
    if max(width, height) < _MIN_REDUCED_SIDE:
        return 1
    turned = orientation in _QUARTER_TURNS  # draft speaks of the upright image
    want_w, want_h = draft(height, width) if turned else draft(width, height)
    if turned:
        want_w, want_h = want_h, want_w
    fits = min(width // max(want_w, 1), height // max(want_h, 1))
    return next((scale for scale in _DCT_SCALES if fits >= scale), 1)


def _decode_jpeg(
    data: bytes, image: ImageFile.ImageFile, draft: DraftTarget | None, exif: bool
) -> Image.Image:
    """Strict libjpeg decode (see the module doc), at 1/scale in the DCT domain, upright
    when ``exif``."""
    orientation = _orientation(image, data) if exif else 1
    scale = 1 if draft is None else _dct_scale(image.size, orientation, draft)
    width, height = (-(-side // scale) for side in image.size)  # libjpeg rounds up
    cmyk = image.mode == "CMYK"
    try:
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="CMYK" if cmyk else "RGB",  # simplejpeg's own CMYK->RGB is not Pillow's
            strict=True,
            min_width=width,
            min_height=height,
        )
    except ValueError:
        raise _bad_image() from None
    if pixels.shape[:2] != (height, width):  # the header check rules this out; stay safe
        raise _bad_image()
    if cmyk:  # Pillow reads JPEG CMYK as Adobe's inverted CMYK ("CMYK;I")
        rgb = Image.fromarray(255 - pixels, mode="CMYK").convert("RGB")
    else:  # RGB, or grey that libjpeg replicated into R, G and B
        rgb = Image.fromarray(pixels, mode="RGB")
    method = _UPRIGHT.get(orientation)
    return rgb if method is None else rgb.transpose(method)


def decode_image(
    data: bytes, max_pixels: int, draft: DraftTarget | None = None, *, exif: bool = False
) -> Image.Image:
    """Decode an uploaded JPEG, PNG or WebP into an 8-bit RGB image, as stored, or upright
    by its EXIF orientation when ``exif``.

    ``draft`` (JPEG only) maps the returned (width, height) to the smallest (width, height)
    the caller needs; libjpeg then decodes at 1/2, 1/4 or 1/8 scale in the DCT domain when
    the image is at least twice, four or eight times that size on both sides (never below
    it): much faster for large photos, but no longer the same pixels as a full decode and
    resize.

    Raises ``CodecError``: 415 ``unsupported_media`` / ``bad_image``, 413
    ``image_too_large``.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on: truncated uploads pass")
    image = _open_checked(data, max_pixels)
    try:
        if isinstance(image, JpegImagePlugin.JpegImageFile):  # multi-picture (MPO) too
            return _decode_jpeg(data, image, draft, exif)
        image.load()  # the first frame only
        if exif:
            ImageOps.exif_transpose(image, in_place=True)
        return to_rgb(image)
    except Image.DecompressionBombError:
        raise _too_large(max_pixels) from None
    except _DECODE_ERRORS:
        raise _bad_image() from None


def image_size(data: bytes, max_pixels: int, *, exif: bool = False) -> tuple[int, int]:
    """The (width, height) ``decode_image(data, max_pixels, exif=exif)`` returns (no
    draft), read from the header without decoding pixels: for admission control.

    Same format sniffing, header checks and errors as ``decode_image``: 415
    ``unsupported_media`` / ``bad_image``, 413 ``image_too_large``. Damage past the header
    (truncated pixel data) shows only when decoding. A PNG whose orientation metadata
    follows its pixel data is the one case decoded here (with ``exif``), as Pillow only
    reads it so.
    """
    image = _open_checked(data, max_pixels)
    if not exif:
        return image.size
    try:
        turned = _orientation(image, data) in _QUARTER_TURNS
    except Image.DecompressionBombError:
        raise _too_large(max_pixels) from None
    except _DECODE_ERRORS:
        raise _bad_image() from None
    width, height = image.size
    return (height, width) if turned else (width, height)
