"""app.codecs.image: formats, limits, corruption, modes, alpha and EXIF, with closed forms.

Every fixture is made here with Pillow, or byte by byte for what Pillow will not write
(decompression bombs, 16-bit RGB PNG).
"""

import io
import struct
import time
import tracemalloc
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps

from app.codecs.errors import CodecError
from app.codecs.image import decode_image, image_size

MAX = 1_000_000
RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)  # H=20, W=30, non-symmetric


@contextmanager
def refused(code: str, status: int = 415):
    with pytest.raises(CodecError) as info:
        yield info
    assert (info.value.code, info.value.status) == (code, status), info.value


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def pixels_of(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, depth: int, color: int, rows: bytes = b"") -> bytes:
    """A PNG written by hand: any IHDR we like, with ``rows`` (already filtered) as IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    idat = png_chunk(b"IDAT", zlib.compress(rows)) if rows else b""
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + idat + png_chunk(b"IEND", b"")


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The documented rule, in floating point: round((c * a + 255 * (255 - a)) / 255)."""
    a = alpha.astype(np.float64)[..., None]
    return np.rint((rgb * a + 255.0 * (255.0 - a)) / 255.0).astype(np.uint8)


# --- formats ----------------------------------------------------------------------------


def test_png_and_lossless_webp_decode_exactly():
    source = Image.fromarray(PIXELS)
    for data in (encode(source, "PNG"), encode(source, "WEBP", lossless=True)):
        np.testing.assert_array_equal(pixels_of(decode_image(data, MAX)), PIXELS)


def test_jpeg_and_lossy_webp_decode_close_to_the_source():
    smooth = np.repeat(np.linspace(0, 255, 30, dtype=np.uint8)[None, :, None], 20, 0)
    source = Image.fromarray(np.repeat(smooth, 3, 2))
    for fmt in ("JPEG", "WEBP"):
        got = pixels_of(decode_image(encode(source, fmt, quality=95), MAX))
        assert got.shape == (20, 30, 3)
        assert np.abs(got.astype(int) - np.asarray(source)).mean() < 3


@pytest.mark.parametrize(
    ("fmt", "kw"),
    [("GIF", {}), ("BMP", {}), ("TIFF", {}), ("ICO", {}), ("PPM", {}), ("JPEG2000", {})],
)
def test_other_formats_are_refused(fmt, kw):
    data = encode(Image.fromarray(PIXELS), fmt, **kw)
    with pytest.raises(CodecError) as info:
        decode_image(data, MAX)
    assert info.value.status == 415
    # formats we recognise are named as unsupported; the rest are "not an image"
    assert info.value.code in ("unsupported_media", "bad_image")
    if fmt in ("GIF", "BMP", "TIFF"):
        assert info.value.code == "unsupported_media"
        assert fmt in str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, world",
        b"\x89PNG\r\n\x1a\n",  # a signature and nothing else
        b"\xff\xd8\xff",
        b"RIFF\x00\x00\x00\x00WEBP",
        raw_png(4, 4, 8, 2),  # header only, no pixel data
        raw_png(0, 4, 8, 2),  # zero width
        raw_png(4, 4, 7, 2),  # impossible bit depth
    ],
)
def test_garbage_and_header_only_images_are_bad(data):
    with refused("bad_image"):
        decode_image(data, MAX)


def test_polyglot_trailer_is_ignored():
    data = encode(Image.fromarray(PIXELS), "PNG") + b"PK\x03\x04" + bytes(100)
    np.testing.assert_array_equal(pixels_of(decode_image(data, MAX)), PIXELS)


# --- size limits ------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(5000, 5000), (20000, 20000), (100000, 100000)])
def test_decompression_bomb_header_is_refused_before_decoding(width, height):
    data = raw_png(width, height, 8, 2, rows=bytes(64))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with refused("image_too_large", 413):
            decode_image(data, MAX)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 0.5
    assert peak < 1_000_000  # bytes, against 75 MB to 30 GB if it were decoded


def test_real_image_over_the_limit_is_refused_and_at_the_limit_accepted():
    data = encode(Image.fromarray(PIXELS), "PNG")
    with refused("image_too_large", 413):
        decode_image(data, 20 * 30 - 1)
    assert decode_image(data, 20 * 30).size == (30, 20)


def test_limits_do_not_leak_between_calls_or_into_pillow():
    before = Image.MAX_IMAGE_PIXELS
    data = encode(Image.fromarray(PIXELS), "PNG")
    with refused("image_too_large", 413):
        decode_image(raw_png(100000, 100000, 8, 2), MAX)
    with refused("image_too_large", 413):
        decode_image(data, 10)
    assert decode_image(data, MAX).size == (30, 20)
    assert before == Image.MAX_IMAGE_PIXELS


# --- corruption -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_images_are_errors_not_padding(fmt):
    noisy = Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    for cut in (len(data) // 2, len(data) * 3 // 4):
        with refused("bad_image"):
            decode_image(data[:cut], MAX)


def test_truncation_guard_refuses_to_run_with_load_truncated_images(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(encode(Image.fromarray(PIXELS), "PNG"), MAX)


@pytest.fixture(scope="module")
def samples() -> list[bytes]:
    source = Image.fromarray(PIXELS)
    return [encode(source, "PNG"), encode(source, "JPEG"), encode(source, "WEBP")]


@given(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255))
def test_corrupted_bytes_only_ever_raise_codec_errors(samples, which, position, value):
    data = bytearray(samples[which])
    data[position % len(data)] = value
    try:
        image = decode_image(bytes(data), MAX)
    except CodecError:  # 413 or 415: the only exception allowed out
        return
    assert image.mode == "RGB"


# --- modes ------------------------------------------------------------------------------


def test_grey_and_bilevel_are_replicated():
    grey = PIXELS[..., 0]
    got = pixels_of(decode_image(encode(Image.fromarray(grey), "PNG"), MAX))
    np.testing.assert_array_equal(got, np.repeat(grey[..., None], 3, 2))
    bits = grey > 127
    got = pixels_of(decode_image(encode(Image.fromarray(bits), "PNG"), MAX))
    np.testing.assert_array_equal(got, np.repeat(np.where(bits, 255, 0)[..., None], 3, 2))


def test_16_bit_grey_png_keeps_the_high_byte():
    values = np.array([[0, 255, 256, 1000, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    got = pixels_of(decode_image(data, MAX))
    expected = np.array([0, 0, 1, 3, 128, 255], dtype=np.uint8)  # v >> 8, not clipped to 255
    np.testing.assert_array_equal(got, np.repeat(expected[None, :, None], 3, 2))


def test_16_bit_rgb_png_keeps_the_high_byte():
    values = RNG.integers(0, 65536, (3, 4, 3), dtype=np.uint16)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)  # filter 0
    got = pixels_of(decode_image(raw_png(4, 3, 16, 2, rows), MAX))
    np.testing.assert_array_equal(got, (values >> 8).astype(np.uint8))


def test_cmyk_jpeg_uses_the_naive_formula():
    cmyk = RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    data = encode(Image.fromarray(cmyk, mode="CMYK"), "JPEG", quality=100)
    decoded = np.asarray(Image.open(io.BytesIO(data))).astype(np.int64)  # CMYK as stored
    assert decoded.shape == (16, 16, 4)
    c, k = decoded[..., :3], decoded[..., 3:]
    expected = (255 - c) * (255 - k) / 255.0  # R = (255 - C)(255 - K) / 255, per channel
    got = pixels_of(decode_image(data, MAX)).astype(np.float64)
    assert np.abs(got - expected).max() <= 0.5 + 1e-9  # rounded to the nearest integer


def test_rgba_is_composited_on_white():
    alpha = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    rgba = np.dstack([PIXELS, alpha])
    for fmt, kw in (("PNG", {}), ("WEBP", {"lossless": True, "exact": True})):
        got = pixels_of(decode_image(encode(Image.fromarray(rgba), fmt, **kw), MAX))
        np.testing.assert_array_equal(got, on_white(PIXELS, alpha))
        np.testing.assert_array_equal(got[0, 0], [255, 255, 255])  # hidden colour never shows
        np.testing.assert_array_equal(got[0, 1], PIXELS[0, 1])


def test_la_is_composited_on_white():
    grey, alpha = PIXELS[..., 0], PIXELS[..., 1]
    got = pixels_of(decode_image(encode(Image.fromarray(np.dstack([grey, alpha])), "PNG"), MAX))
    np.testing.assert_array_equal(got, on_white(np.repeat(grey[..., None], 3, 2), alpha))


def test_palette_png_with_transparency_is_composited_on_white():
    palette = RNG.integers(0, 256, (16, 3), dtype=np.uint8)
    alphas = RNG.integers(0, 256, 16, dtype=np.uint8)
    alphas[3] = 0
    index = RNG.integers(0, 16, (20, 30), dtype=np.uint8)
    index[5, 5] = 3
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.ravel().tolist())
    data = encode(image, "PNG", transparency=alphas.tobytes())
    assert Image.open(io.BytesIO(data)).mode == "P"
    got = pixels_of(decode_image(data, MAX))
    np.testing.assert_array_equal(got, on_white(palette[index], alphas[index]))
    np.testing.assert_array_equal(got[5, 5], [255, 255, 255])


def test_palette_png_without_transparency_looks_up_the_palette():
    palette = RNG.integers(0, 256, (8, 3), dtype=np.uint8)
    index = RNG.integers(0, 8, (20, 30), dtype=np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.ravel().tolist())
    got = pixels_of(decode_image(encode(image, "PNG"), MAX))
    np.testing.assert_array_equal(got, palette[index])


def test_grey_png_with_a_transparent_key_turns_that_grey_white():
    grey = np.full((4, 4), 10, dtype=np.uint8)
    grey[1, 2] = 77
    got = pixels_of(decode_image(encode(Image.fromarray(grey), "PNG", transparency=77), MAX))
    assert (got[1, 2] == 255).all()
    assert (np.delete(got.reshape(16, 3), 6, axis=0) == 10).all()


# --- EXIF orientation and frames --------------------------------------------------------


def with_orientation(image: Image.Image, fmt: str, orientation: int, **kw) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, fmt, exif=exif, **kw)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_exif_orientation_6_and_8_match_the_closed_form(fmt):
    data6 = with_orientation(Image.fromarray(PIXELS), fmt, 6, lossless=True)
    data8 = with_orientation(Image.fromarray(PIXELS), fmt, 8, lossless=True)
    got6 = pixels_of(decode_image(data6, MAX, exif=True))
    got8 = pixels_of(decode_image(data8, MAX, exif=True))
    h, w = PIXELS.shape[:2]
    assert got6.shape == got8.shape == (w, h, 3)
    i, j = np.meshgrid(np.arange(w), np.arange(h), indexing="ij")
    # 6: the stored image must turn 90 degrees clockwise: out[i, j] = in[h - 1 - j, i]
    np.testing.assert_array_equal(got6, PIXELS[h - 1 - j, i])
    # 8: 90 degrees counter-clockwise: out[i, j] = in[j, w - 1 - i]
    np.testing.assert_array_equal(got8, PIXELS[j, w - 1 - i])
    np.testing.assert_array_equal(got6[0, 0], PIXELS[h - 1, 0])  # bottom-left comes to the top
    np.testing.assert_array_equal(got8[0, 0], PIXELS[0, w - 1])  # top-right comes to the top


def test_exif_orientation_6_on_jpeg():
    stored = Image.fromarray(PIXELS)
    plain = pixels_of(decode_image(encode(stored, "JPEG", quality=95), MAX))
    turned = with_orientation(stored, "JPEG", 6, quality=95)
    rotated = pixels_of(decode_image(turned, MAX, exif=True))
    np.testing.assert_array_equal(rotated, np.rot90(plain, k=-1))  # same scan data, turned


def test_animated_images_give_the_first_frame():
    first = Image.fromarray(PIXELS)
    second = Image.fromarray(255 - PIXELS)
    for fmt, kw in (("PNG", {}), ("WEBP", {"lossless": True})):
        data = encode(first, fmt, save_all=True, append_images=[second], duration=100, **kw)
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
        np.testing.assert_array_equal(pixels_of(decode_image(data, MAX)), PIXELS)


def test_message_never_echoes_the_bytes():
    with pytest.raises(CodecError) as info:
        decode_image(b"SECRET" * 100, MAX)
    assert "SECRET" not in str(info.value)


# --- strict JPEG decoding ---------------------------------------------------------------


def photo(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour fields with grain: what JPEG is made for, and every DCT term busy."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=int)
    grain = rng.integers(-12, 13, smooth.shape)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def pillow_decode(data: bytes) -> np.ndarray:
    """The reference: Pillow's own decode, turned upright, as RGB."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


def with_frame_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its baseline frame header (SOF0) claiming another size."""
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def test_truncated_jpeg_with_an_eoi_marker_is_bad_not_grey():
    data = encode(photo(64, 48, 0), "JPEG", quality=90)
    lying = data[: len(data) // 2] + b"\xff\xd9"
    Image.open(io.BytesIO(lying)).load()  # the premise: Pillow alone pads it with grey
    with refused("bad_image"):
        decode_image(lying, MAX)


def test_jpeg_header_claiming_more_pixels_than_its_data_is_refused():
    data = with_frame_size(encode(photo(200, 150, 1), "JPEG", quality=90), 6000, 6000)
    assert Image.open(io.BytesIO(data)).size == (6000, 6000)
    with refused("bad_image"):  # under the limit: libjpeg runs out of data, never padded
        decode_image(data, 40_000_000)
    with refused("image_too_large", 413):  # over it: refused from the header
        decode_image(data, MAX)


@pytest.mark.parametrize(
    "kw",
    [
        {"quality": 95, "subsampling": 0},  # 4:4:4
        {"quality": 75, "subsampling": 1},  # 4:2:2
        {"quality": 50, "subsampling": 2},  # 4:2:0
        {"quality": 85, "progressive": True},
        {"quality": 85, "optimize": True},
    ],
)
@pytest.mark.parametrize(("width", "height"), [(1, 1), (31, 17), (64, 48), (257, 130)])
def test_jpeg_pixels_are_bit_identical_to_pillows_decode(kw, width, height):
    for image in (photo(width, height, width), photo(width, height, height).convert("L")):
        data = encode(image, "JPEG", **kw)
        np.testing.assert_array_equal(pixels_of(decode_image(data, MAX)), pillow_decode(data))


def test_grayscale_and_progressive_jpegs_decode():
    grey = encode(photo(40, 30, 2).convert("L"), "JPEG", quality=95, progressive=True)
    got = pixels_of(decode_image(grey, MAX))
    assert got.shape == (30, 40, 3)
    assert (got == got[..., :1]).all()  # R = G = B
    np.testing.assert_array_equal(got[..., 0], np.asarray(Image.open(io.BytesIO(grey))))


def test_cmyk_jpeg_is_bit_identical_to_pillows_decode():
    cmyk = Image.fromarray(RNG.integers(0, 256, (21, 34, 4), dtype=np.uint8), mode="CMYK")
    data = encode(cmyk, "JPEG", quality=90)
    np.testing.assert_array_equal(pixels_of(decode_image(data, MAX)), pillow_decode(data))


def test_jpeg_layout_libjpeg_turbo_cannot_name_is_refused_not_a_crash():
    # CMYK with its first channel subsampled: Pillow decodes it, TurboJPEG's API refuses it
    cmyk = Image.fromarray(RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8), mode="CMYK")
    data = encode(cmyk, "JPEG", subsampling=2)
    Image.open(io.BytesIO(data)).load()
    with refused("bad_image"):
        decode_image(data, MAX)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_on_jpeg_matches_pillows_exif_transpose(orientation):
    data = with_orientation(photo(30, 20, 3), "JPEG", orientation, quality=90)
    got = pixels_of(decode_image(data, MAX, exif=True))
    np.testing.assert_array_equal(got, pillow_decode(data))


@pytest.mark.parametrize(
    ("fmt", "kw"), [("JPEG", {"quality": 90}), ("PNG", {}), ("WEBP", {"lossless": True})]
)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_ignored_by_default_as_plain_pillow_does(fmt, kw, orientation):
    """The reference pipelines' decode: ``Image.open(f).convert("RGB")``, no transpose."""
    data = with_orientation(photo(30, 20, 3), fmt, orientation, **kw)
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(pixels_of(decode_image(data, MAX)), stored)
    assert image_size(data, MAX) == (30, 20)


def pillow_draft(data: bytes, need: tuple[int, int]) -> np.ndarray:
    """Pillow's draft decode (``need`` in stored axes), then turned upright."""
    image = Image.open(io.BytesIO(data))
    image.draft(image.mode, need)
    return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("divisor", [1.5, 2, 3, 5, 9])
@pytest.mark.parametrize(("width", "height"), [(8, 8), (23, 9), (161, 97)])
def test_jpeg_draft_is_bit_identical_to_pillows_draft(orientation, divisor, width, height):
    """Stored width x height; with orientation 6 the upright image is height x width."""
    data = with_orientation(photo(width, height, 4), "JPEG", orientation, quality=90)

    def need(w, h):  # what the caller needs of the upright w x h image
        return max(1, int(w / divisor)), max(1, int(h / divisor))

    upright = (height, width) if orientation == 6 else (width, height)
    need_w, need_h = need(*upright)
    stored_need = (need_h, need_w) if orientation == 6 else (need_w, need_h)
    got = pixels_of(decode_image(data, MAX, draft=need, exif=True))
    np.testing.assert_array_equal(got, pillow_draft(data, stored_need))
    assert got.shape[0] >= need_h  # never below what was asked
    assert got.shape[1] >= need_w


def test_tiny_jpeg_is_never_reduced():
    data = encode(photo(6, 6, 5), "JPEG", quality=90)
    np.testing.assert_array_equal(
        pixels_of(decode_image(data, MAX, draft=lambda w, h: (1, 1))), pillow_decode(data)
    )


def test_multi_picture_jpeg_gives_the_first_picture():
    first, second = photo(24, 16, 6), photo(24, 16, 7)
    data = encode(first, "MPO", save_all=True, append_images=[second], quality=90)
    np.testing.assert_array_equal(pixels_of(decode_image(data, MAX)), pillow_decode(data))


# --- image_size -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "kw"), [("JPEG", {"quality": 90}), ("PNG", {}), ("WEBP", {"lossless": True})]
)
@pytest.mark.parametrize("orientation", [1, 6, 3, 8])
def test_image_size_is_the_decoded_size(fmt, kw, orientation):
    data = with_orientation(Image.fromarray(PIXELS), fmt, orientation, **kw)
    turned = orientation in (6, 8)
    assert image_size(data, MAX, exif=True) == ((20, 30) if turned else (30, 20))  # 30 x 20
    assert image_size(data, MAX, exif=True) == decode_image(data, MAX, exif=True).size


def png_with_chunk_before_iend(png: bytes, kind: bytes, payload: bytes) -> bytes:
    assert png.endswith(png_chunk(b"IEND", b""))
    return png[:-12] + png_chunk(kind, payload) + png[-12:]


def exif_payload(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()[len(b"Exif\x00\x00") :]  # the eXIf chunk holds the TIFF part only


XMP_6 = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        (b"eXIf", exif_payload(6)),
        (b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + XMP_6),  # uncompressed, no lang
    ],
)
def test_image_size_reads_png_orientation_written_after_the_pixels(kind, payload):
    data = png_with_chunk_before_iend(encode(Image.fromarray(PIXELS), "PNG"), kind, payload)
    assert decode_image(data, MAX, exif=True).size == (20, 30)  # Pillow honours it late
    assert image_size(data, MAX, exif=True) == (20, 30)
    assert image_size(data, MAX) == decode_image(data, MAX).size == (30, 20)  # as stored


def test_image_size_reads_the_header_only():
    # pixel data that cannot decode: only a decode would notice
    broken = raw_png(4000, 3000, 8, 2, rows=bytes(64))
    with refused("bad_image"):
        decode_image(broken, 20_000_000)
    tracemalloc.start()
    try:
        assert image_size(broken, 20_000_000) == (4000, 3000)
        late_text = png_with_chunk_before_iend(broken, b"tEXt", b"Comment\x00hello")
        assert image_size(late_text, 20_000_000) == (4000, 3000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # bytes, against 36 MB of pixels
    # the one exception: orientation metadata after the pixels is read the way Pillow
    # reads it, by decoding, so this one fails as its decode does
    late_exif = png_with_chunk_before_iend(broken, b"eXIf", exif_payload(6))
    with refused("bad_image"):
        image_size(late_exif, 20_000_000, exif=True)
    assert image_size(late_exif, 20_000_000) == (4000, 3000)  # ignored: no decode


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        (encode(Image.fromarray(PIXELS), "GIF"), "unsupported_media", 415),
        (b"hello, world", "bad_image", 415),
        (b"\xff\xd8\xff", "bad_image", 415),
        (raw_png(0, 4, 8, 2), "bad_image", 415),
        (raw_png(100000, 100000, 8, 2), "image_too_large", 413),
        (encode(Image.fromarray(PIXELS), "PNG"), "image_too_large", 413),  # 600 > 599
    ],
)
def test_image_size_errors_are_decode_images(data, code, status):
    with refused(code, status):
        decode_image(data, 599)
    with refused(code, status):
        image_size(data, 599)
