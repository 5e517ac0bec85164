"""POST /descriptor: images to global descriptors with a repository model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from app.api.deps import ServicesDep, SettingsDep
from app.api.disconnect import stopped_when_gone
from app.api.negotiation import (
    NPY,
    json_response,
    media_type,
    npy_response,
    wants_npy,
)
from app.codecs.tensor import check_output
from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode, responses

router = APIRouter(tags=["descriptor"])
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")


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


async def _read_images(request: Request, settings: Settings) -> list[bytes]:
    kind = media_type(request)
    if kind in IMAGE_TYPES:
        return [await request.body()]
    if kind != "multipart/form-data":
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"send multipart/form-data with images, or one of {IMAGE_TYPES}",
        )
    form = await request.form(max_files=settings.max_images + 1, max_fields=0)
    try:
        parts = form.getlist("images")
        if not parts or not all(isinstance(p, UploadFile) for p in parts):
            raise ApiError(ErrorCode.MISSING_IMAGES, "send one or more files in the field images")
        if len(parts) > settings.max_images:
            raise ApiError(
                ErrorCode.TOO_MANY_IMAGES, f"at most {settings.max_images} images per request"
            )
        return [await p.read() for p in parts if isinstance(p, UploadFile)]
    finally:
        await form.close()


@router.post(
    "/descriptor",
    summary="Global descriptors of one or more images",
    response_model=DescriptorResponse,
    responses={
        200: {"content": {NPY: {"schema": {"type": "string", "format": "binary",
                                           "description": "N x D float32 .npy"}}}},
        **responses(400, 404, 406, 413, 415, 422, 500, 503, 504),
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
    npy = wants_npy(request)  # an unacceptable Accept is refused before any work
    blobs = await _read_images(request, settings)
    loaded = services.descriptors.image_model(model)
    if not npy:
        _check_json_reply(len(blobs) * (loaded.dim or 1), settings)
    async with stopped_when_gone(request) as control:
        described = await services.descriptors.describe(loaded.name, blobs, control)
    descriptors = described.descriptors
    check_output(descriptors, loaded.name)
    headers = {"X-Poolserve-Provider": loaded.provider}
    if npy:
        return await npy_response(descriptors, headers)
    body = {
        "model": loaded.name,
        "dim": int(descriptors.shape[1]),
        "count": int(descriptors.shape[0]),
        "descriptors": descriptors,
        "weights": loaded.entry.weights,
    }
    return await json_response(body, headers, descriptors.size)


def _check_json_reply(elements: int, settings: Settings) -> None:
    if elements > settings.max_json_result_elements:
        raise ApiError(
            ErrorCode.OUTPUT_TOO_LARGE,
            f"the descriptors would be {elements} numbers, over the "
            f"{settings.max_json_result_elements} a JSON reply carries "
            "(max_json_result_elements); ask for Accept: application/x-npy",
        )
