"""EXIF orientation is a per-model choice (``exif_models``). By default the tag is ignored,
as the reference pipelines ignore it (they open images with plain PIL), so a sideways phone
photo gets the descriptor reference code computes; a listed model describes the upright
image. The references are PNGs of Pillow's own decode: ``Image.open(f).convert("RGB")``
(what the reference pipelines see) and ``ImageOps.exif_transpose`` of it (upright)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.app_fixtures import SMOKE_MODEL, AppClient

NPY = "application/x-npy"
ORIENTATION = 0x0112


def _photo() -> Image.Image:
    """A landscape photo-like image whose quarter turn looks nothing like it."""
    rng = np.random.default_rng(7)
    coarse = Image.fromarray(rng.integers(0, 256, (5, 9, 3), dtype=np.uint8))
    return coarse.resize((320, 180), Image.Resampling.BICUBIC)


def _sideways_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    buf = io.BytesIO()
    _photo().save(buf, "JPEG", quality=92, exif=exif)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _describe(client: AppClient, blob: bytes) -> np.ndarray:
    files = [("images", ("i", blob, "application/octet-stream"))]
    reply = client.post("/descriptor", files=files, headers={"accept": NPY})
    assert reply.status_code == 200, reply.text[:300]
    return np.asarray(np.load(io.BytesIO(reply.content), allow_pickle=False)[0])


@pytest.mark.parametrize("orientation", [6, 8])
def test_the_tag_is_ignored_by_default_and_applied_for_listed_models(
    make_client: Any, orientation: int
) -> None:
    jpeg = _sideways_jpeg(orientation)
    stored = Image.open(io.BytesIO(jpeg)).convert("RGB")  # the reference pipelines' decode
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))).convert("RGB")
    assert upright.size == (180, 320)
    assert stored.size == (320, 180)
    default = make_client(models=[SMOKE_MODEL])
    listed = make_client(models=[SMOKE_MODEL], exif_models=[SMOKE_MODEL])
    as_stored, turned = _describe(default, jpeg), _describe(listed, jpeg)
    np.testing.assert_array_equal(as_stored, _describe(default, _png(stored)))
    np.testing.assert_array_equal(turned, _describe(default, _png(upright)))
    # the choice shows (seeded weights put every descriptor near every other: no cosine bar)
    assert np.abs(as_stored - turned).max() > 1e-5


def test_models_reports_the_choice_per_model(make_client: Any) -> None:
    for listed, want in (([], False), ([SMOKE_MODEL], True), (["*"], True), (["other"], False)):
        client = make_client(exif_models=listed)
        models = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert models[SMOKE_MODEL]["exif"] is want
        assert models["netvlad_head"]["exif"] is None  # a tensor model: no images


def test_star_applies_it_to_every_image_model(make_client: Any) -> None:
    jpeg = _sideways_jpeg(6)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))).convert("RGB")
    star = make_client(models=[SMOKE_MODEL], exif_models=["*"])
    np.testing.assert_array_equal(_describe(star, jpeg), _describe(star, _png(upright)))
