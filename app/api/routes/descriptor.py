"""POST /descriptor: images to global descriptors with a repository model."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from app.api.deps import Services, ServicesDep, SettingsDep
from app.api.negotiation import NPY, check_output, media_type, npy_response, wants_npy
from app.codecs.image import decode_image
from app.core.config import Settings
from app.core.errors import ApiError, responses
from app.inference.sessions import LoadedModel

router = APIRouter(tags=["descriptor"])
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
Batch = tuple[list[int], np.ndarray]
"""The request-order indices of a batch's rows, and the (n, 3, H, W) rows."""


class DescriptorResponse(BaseModel):
    model: str
    dim: int
    count: int
    descriptors: list[list[float]] = Field(description="one row per image, in request order")
    weights: str = Field(description="the weights' provenance")


IMAGES_FIELD = {
    "type": "array",
    "items": {"type": "string", "format": "binary"},
    "description": "one or more JPEG, PNG or WebP files",
}
OPENAPI_EXTRA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "required": ["images"],
                "properties": {"images": IMAGES_FIELD},
            }},
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
        },
    },
}  # fmt: skip


def _pick_model(services: Services, name: str | None) -> LoadedModel:
    name = name or services.default_model
    loaded = services.models.get(name) if name else None
    if loaded is None or loaded.preprocess is None:
        choices = sorted(n for n, m in services.models.items() if m.preprocess is not None)
        raise ApiError(404, "unknown_model", f"unknown image model; loaded ones are {choices}")
    return loaded


async def _read_images(request: Request, settings: Settings) -> list[bytes]:
    kind = media_type(request)
    if kind in IMAGE_TYPES:
        return [await request.body()]
    if kind != "multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type",
            f"send multipart/form-data with images, or one of {IMAGE_TYPES}",
        )  # fmt: skip
    form = await request.form(max_files=settings.max_images + 1, max_fields=0)
    try:
        parts = form.getlist("images")
        if not parts or not all(isinstance(p, UploadFile) for p in parts):
            raise ApiError(422, "missing_images", "send one or more files in the field images")
        if len(parts) > settings.max_images:
            raise ApiError(
                413, "too_many_images", f"at most {settings.max_images} images per request"
            )
        return [await p.read() for p in parts if isinstance(p, UploadFile)]
    finally:
        await form.close()


def _check_size(loaded: LoadedModel, hw: tuple[int, int]) -> None:
    low = loaded.entry.min_hw or 1
    if min(hw) < low:
        raise ApiError(
            422, "image_too_small",
            f"{loaded.name} needs at least {low}x{low} pixels after preprocessing",
        )  # fmt: skip


def _prepare(loaded: LoadedModel, blobs: list[bytes], settings: Settings) -> list[Batch]:
    """Decode and preprocess every image (on a worker thread) into model batches.

    A model with a fixed input size gets one (n, 3, H, W) array that each image is written
    straight into (no per-image tensor, no stacking copy); otherwise images are stacked by
    size, one batch per distinct size.
    """
    preprocess = loaded.preprocess
    assert preprocess is not None  # _pick_model guarantees an image model
    draft = preprocess.policy.resized_size if settings.jpeg_draft else None
    fixed = preprocess.fixed_hw
    if fixed is not None:
        _check_size(loaded, fixed)
        batch = np.empty((len(blobs), 3, *fixed), dtype=np.float32)
        for slot, blob in zip(batch, blobs, strict=True):
            preprocess(decode_image(blob, settings.max_image_pixels, draft), out=slot)
        return [(list(range(len(blobs))), batch)]
    groups: dict[tuple[int, ...], tuple[list[int], list[np.ndarray]]] = {}
    for i, blob in enumerate(blobs):
        image = decode_image(blob, settings.max_image_pixels, draft)
        _check_size(loaded, preprocess.output_hw(*image.size))
        x = preprocess(image)
        indices, tensors = groups.setdefault(x.shape, ([], []))
        indices.append(i)
        tensors.append(x)
    return [(indices, np.stack(tensors)) for indices, tensors in groups.values()]


async def _describe(services: Services, loaded: LoadedModel, batches: list[Batch]) -> np.ndarray:
    """Run each batch; rows back in request order, float32."""
    if len(batches) == 1:
        return (await services.runner.run(loaded.name, batches[0][1])).astype(
            np.float32, copy=False
        )
    count = sum(len(indices) for indices, _ in batches)
    result: np.ndarray | None = None
    for indices, batch in batches:
        out = await services.runner.run(loaded.name, batch)
        if result is None:
            result = np.empty((count, *out.shape[1:]), dtype=np.float32)
        result[indices] = out
    assert result is not None  # at least one image: _read_images guarantees it
    return result


@router.post(
    "/descriptor",
    summary="Global descriptors of one or more images",
    response_model=DescriptorResponse,
    responses={
        200: {"content": {NPY: {"schema": {"type": "string", "format": "binary",
                                           "description": "N x D float32 .npy"}}}},
        **responses(400, 404, 413, 415, 422, 500, 503),
    },
    openapi_extra=OPENAPI_EXTRA,
)  # fmt: skip
async def descriptor(
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    model: str | None = Query(None, description="model name; the configured default if absent"),
) -> Response:
    """Describe images (multipart field images, or one raw image body)."""
    loaded = _pick_model(services, model)
    blobs = await _read_images(request, settings)
    batches = await services.runner.call(lambda: _prepare(loaded, blobs, settings))
    descriptors = await _describe(services, loaded, batches)
    check_output(descriptors, loaded.name)
    headers = {"X-Poolserve-Provider": loaded.provider}
    if wants_npy(request):
        return npy_response(descriptors, headers)
    body = {
        "model": loaded.name,
        "dim": int(descriptors.shape[1]),
        "count": int(descriptors.shape[0]),
        "descriptors": descriptors.tolist(),
        "weights": loaded.entry.weights,
    }
    return JSONResponse(body, headers=headers)
