"""POST /descriptor: images to global descriptors with a repository model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from app.api.deps import ServicesDep, SettingsDep
from app.api.disconnect import stopped_when_gone
from app.api.negotiation import (
    JSON,
    NPY,
    json_response,
    media_type,
    npy_response,
    wants_npy,
)
from app.codecs.base64_image import base64_payload, decode_base64
from app.codecs.tensor import check_output
from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode, check_json_numbers, responses
from app.core.offload import OFF_LOOP_BYTES, off_loop_if
from models.pooling.errors import describe_validation_errors

router = APIRouter(tags=["descriptor"])
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")


class DescriptorResponse(BaseModel):
    model: str
    dim: int
    count: int
    descriptors: list[list[float]] = Field(description="one row per image, in request order")
    weights: str = Field(description="the weights' provenance")


class DescriptorJsonBody(BaseModel):
    """The JSON body form of /descriptor: the images as text."""

    model_config = ConfigDict(extra="forbid", strict=True)
    images: list[str] = Field(
        description="one or more JPEG, PNG or WebP images, each as standard base64 (padded, "
        "no line breaks) or a data URI (data:image/png;base64,...); URLs are refused: the "
        "service fetches nothing",
    )
    model: str | None = Field(
        None, description="model name (or the query's model); the configured default if absent"
    )


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
            JSON: {"schema": DescriptorJsonBody.model_json_schema()},
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
        },
    },
}  # fmt: skip


Images = tuple[list[bytes], str | None]
"""The images' bytes, in request order, and the model the body names (JSON form only)."""


async def _read_images(request: Request, settings: Settings) -> Images:
    kind = media_type(request)
    if kind in IMAGE_TYPES:
        body = await request.body()
        _check_bytes(len(body), settings)
        return [body], None
    if kind == JSON:
        raw = await request.body()  # BodyLimitMiddleware bounds it by max_json_body_bytes
        return await off_loop_if(len(raw) > OFF_LOOP_BYTES, _from_json, raw, settings)
    if kind != "multipart/form-data":
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"send multipart/form-data with images, {JSON}, or one of {IMAGE_TYPES}",
        )
    return await _from_form(request, settings), None


async def _from_form(request: Request, settings: Settings) -> list[bytes]:
    form = await request.form(max_files=settings.max_images + 1, max_fields=0)
    try:
        parts = form.getlist("images")
        if not parts or not all(isinstance(p, UploadFile) for p in parts):
            raise ApiError(ErrorCode.MISSING_IMAGES, "send one or more files in the field images")
        _check_count(len(parts), settings)
        files = [p for p in parts if isinstance(p, UploadFile)]
        for file in files:
            _check_bytes(file.size or 0, settings)
        return [await file.read() for file in files]
    finally:
        await form.close()


def _from_json(raw: bytes, settings: Settings) -> Images:
    """Parse, check every image's count and decoded size, then decode the base64."""
    # Count the strings before parsing: 32 MiB of tiny strings would take some 220 MB to
    # parse. Base64 and data URIs hold no quote; the keys and the model name are 3 strings.
    if raw.count(b'"') // 2 > settings.max_images + 3:
        raise _too_many_images(settings)
    try:
        body = DescriptorJsonBody.model_validate_json(raw)
    except ValidationError as exc:
        problems = exc.errors(include_input=False, include_url=False)
        if any(p["type"] == "json_invalid" for p in problems):
            raise ApiError(ErrorCode.INVALID_JSON, "the body is not valid JSON") from None
        fields = DescriptorJsonBody.model_fields
        message = describe_validation_errors(problems, "body", fields)
        raise ApiError(ErrorCode.VALIDATION_ERROR, message) from None
    if not body.images:
        raise ApiError(ErrorCode.MISSING_IMAGES, "send one or more images in images")
    _check_count(len(body.images), settings)
    payloads = [base64_payload(text, settings.max_image_bytes) for text in body.images]
    return [decode_base64(payload) for payload in payloads], body.model


def _check_count(count: int, settings: Settings) -> None:
    if count > settings.max_images:
        raise _too_many_images(settings)


def _too_many_images(settings: Settings) -> ApiError:
    return ApiError(ErrorCode.TOO_MANY_IMAGES, f"at most {settings.max_images} images per request")


def _check_bytes(size: int, settings: Settings) -> None:
    if size > settings.max_image_bytes:
        raise ApiError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"an image is larger than the {settings.max_image_bytes} bytes allowed "
            "(max_image_bytes)",
        )


def _chosen_model(query: str | None, body: str | None) -> str | None:
    if query is not None and body is not None and query != body:
        raise ApiError(ErrorCode.VALIDATION_ERROR, "the query and the body name different models")
    return query if query is not None else body


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
    """Describe images: multipart field images, a JSON body of base64 images, or one raw
    image body."""
    npy = wants_npy(request)  # an unacceptable Accept is refused before any work
    blobs, body_model = await _read_images(request, settings)
    loaded = services.descriptors.image_model(_chosen_model(model, body_model))
    if not npy:
        check_json_numbers(
            len(blobs) * (loaded.dim or 1),
            settings.max_json_result_elements,
            "the descriptors",
            "Accept: application/x-npy",
        )
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
