"""The /descriptor engine's batch assembly: images decoded straight into model batches, rows
back in request order, with and without JPEG draft decoding. The reference for every pixel is
the library's torch ``models.transforms.image_to_tensor`` on a Pillow full decode; the runner
here echoes each batch's pixels back as its descriptors, so the rows can be compared."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.codecs.image import decode_image
from app.codecs.preprocess import Preprocessor
from app.core.config import Settings
from app.inference.descriptor import DescriptorEngine
from models.input_policy import InputPolicy
from models.transforms import image_to_tensor

MAX_PIXELS = 40_000_000


def jpeg(width: int, height: int, seed: int, quality: int = 95) -> bytes:
    """A smooth photo-like JPEG (colour fields, little grain)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    buf = io.BytesIO()
    coarse.resize((width, height), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def loaded_model(policy: InputPolicy) -> Any:
    """What the engine reads from a LoadedModel: name, preprocessor and min_hw."""
    as_dict = json.loads(json.dumps(dataclasses.asdict(policy)))
    entry = SimpleNamespace(min_hw=8)
    preprocess = Preprocessor.from_dict(as_dict)
    return SimpleNamespace(name="m", entry=entry, preprocess=preprocess, cost=None)


def reference(policy: InputPolicy, blob: bytes) -> np.ndarray:
    return image_to_tensor(policy, Image.open(io.BytesIO(blob))).numpy()


class RecordingRunner:
    """Runs the preparation inline, keeps every batch the model gets, and answers each
    image's pixel sum as its descriptor (so the rows' order can be checked)."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    async def on_worker(self, fn: Any, model: str | None = None) -> Any:
        return fn()

    async def run_model(self, model: str, rows: np.ndarray, *args: Any, **kw: Any) -> np.ndarray:
        self.batches.append(rows.copy())
        return np.asarray(rows.reshape(len(rows), -1).sum(axis=1, keepdims=True))


def describe(
    policy: InputPolicy, blobs: list[bytes], settings: Settings | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The engine's descriptors for ``blobs`` (pixel sums) and every batch it ran."""
    runner: Any = RecordingRunner()
    models: Any = {"m": loaded_model(policy)}
    engine = DescriptorEngine(settings or Settings(), runner, models, "m")
    return asyncio.run(engine.describe(None, blobs)).descriptors, runner.batches


def test_fixed_size_model_gets_one_batch_equal_to_the_reference() -> None:
    policy = InputPolicy(resize="exact", size=(32, 48))
    blobs = [jpeg(64, 50, 0), jpeg(40, 90, 1), jpeg(33, 33, 2)]
    _, (batch, *others) = describe(policy, blobs)
    assert not others
    assert batch.shape == (3, 3, 32, 48)
    for row, blob in zip(batch, blobs, strict=True):
        np.testing.assert_array_equal(row, reference(policy, blob))


def test_variable_sizes_are_grouped_and_rows_come_back_in_request_order() -> None:
    policy = InputPolicy(resize="keep")
    blobs = [jpeg(40, 30, 0), jpeg(20, 24, 1), jpeg(40, 30, 2), jpeg(20, 24, 3), jpeg(16, 16, 4)]
    out, batches = describe(policy, blobs)
    assert sorted(b.shape for b in batches) == [(1, 3, 16, 16), (2, 3, 24, 20), (2, 3, 30, 40)]
    expected = [reference(policy, blob).sum() for blob in blobs]
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-6)


def test_too_small_after_preprocessing_is_422() -> None:
    from app.core.errors import ApiError

    with pytest.raises(ApiError) as caught:
        describe(InputPolicy(resize="keep"), [jpeg(7, 40, 0)])
    assert caught.value.status == 422
    assert caught.value.code == "image_too_small"


@pytest.mark.parametrize("orientation", [1, 6])  # as stored, and a quarter turn
def test_jpeg_draft_decodes_smaller_but_at_least_the_needed_size(orientation: int) -> None:
    image = Image.open(io.BytesIO(jpeg(800, 600, 0)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    blob = buf.getvalue()
    full = decode_image(blob, MAX_PIXELS, exif=True)
    drafted = decode_image(blob, MAX_PIXELS, draft=lambda w, h: (w // 3, h // 3), exif=True)
    assert full.size == ((600, 800) if orientation == 6 else (800, 600))  # upright
    # libjpeg scales by 1/2: 1/4 would fall below a third of each side
    assert drafted.size == (full.width // 2, full.height // 2)


def test_jpeg_draft_stays_within_the_documented_pixel_tolerance() -> None:
    """docs/throughput.md: with draft on, input tensors differ from a full decode by at most
    0.05 mean absolute (ImageNet-normalised units) on photo-like JPEGs."""
    policy = InputPolicy(resize="exact", size=(120, 160))
    blobs = [jpeg(1280, 960, seed) for seed in range(3)]
    settings = Settings(jpeg_draft=True)
    _, (drafted,) = describe(policy, blobs, settings)
    for row, blob in zip(drafted, blobs, strict=True):
        assert np.abs(row - reference(policy, blob)).mean() <= 0.05


def test_jpeg_draft_leaves_png_and_small_jpeg_untouched() -> None:
    policy = InputPolicy(resize="exact", size=(120, 160))
    png = io.BytesIO()
    Image.open(io.BytesIO(jpeg(1280, 960, 0))).save(png, "PNG")
    blobs = [png.getvalue(), jpeg(200, 150, 1)]  # the JPEG is under twice the size wanted
    _, (drafted,) = describe(policy, blobs, Settings(jpeg_draft=True))
    for row, blob in zip(drafted, blobs, strict=True):
        np.testing.assert_array_equal(row, reference(policy, blob))
