"""Pricing a /descriptor request from its images' headers, before any pixel is decoded.

An image model's cost grows with the pixels it is fed: ``ModelCost`` (read from its ONNX
graph at start-up) gives FLOPs and peak activation bytes per pixel. A request is refused
(413 ``too_expensive``, naming the setting) when its decoded pixels, its compute or its
memory would pass a budget, or when one image is over the model's resolution cap; models
listed in ``downscale_models`` that keep the input resolution get such an image scaled down
to the cap instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode
from app.inference.sessions import LoadedModel

Size = tuple[int, int]
"""(width, height) of an upright image."""


@dataclass(frozen=True)
class ImagePlan:
    resize_to: Size | None = None
    """Scale the decoded image to this (width, height) first (a downscaled image)."""


def resolution_cap(loaded: LoadedModel, settings: Settings) -> int:
    """Most pixels one image may have after preprocessing: the setting, or less when one
    such image alone would pass the compute or memory budget."""
    cost = loaded.cost
    if cost is None:
        return settings.max_model_pixels
    by_flops = settings.max_descriptor_gflops * 1e9 / max(cost.flops_per_pixel, 1e-9)
    by_memory = settings.max_descriptor_memory_bytes / max(cost.peak_bytes_per_pixel, 1e-9)
    return int(min(settings.max_model_pixels, by_flops, by_memory))


def plan_images(
    loaded: LoadedModel, sizes: list[Size], settings: Settings
) -> tuple[list[ImagePlan], float]:
    """One plan per image and the request's estimated GFLOPs, or ``ApiError`` when the
    request is over a budget."""
    _check(sum(w * h for w, h in sizes), settings.max_request_pixels, "decoded pixels",
           "max_request_pixels")  # fmt: skip
    cap = resolution_cap(loaded, settings)
    plans, fed = [], 0
    for size in sizes:
        plan, pixels = _plan_one(loaded, size, cap, settings)
        plans.append(plan)
        fed += pixels
    if loaded.cost is None:
        return plans, 0.0
    gflops = fed * loaded.cost.flops_per_pixel / 1e9
    _check(gflops, settings.max_descriptor_gflops, "GFLOPs", "max_descriptor_gflops")
    _check(fed * loaded.cost.peak_bytes_per_pixel, settings.max_descriptor_memory_bytes,
           "bytes of activations", "max_descriptor_memory_bytes")  # fmt: skip
    return plans, gflops


def price_tensor(loaded: LoadedModel, shape: tuple[int, ...], settings: Settings) -> float:
    """The GFLOPs of running the model on a preprocessed (N, C, H, W) batch, or
    ``ApiError`` when one image or the batch is over a budget."""
    n, _, h, w = shape
    cap = resolution_cap(loaded, settings)
    if h * w > cap:
        raise ApiError(
            ErrorCode.TOO_EXPENSIVE,
            f"{h}x{w} is {h * w} pixels, over {loaded.name}'s resolution cap of {cap} "
            "(settings max_model_pixels, max_descriptor_gflops, max_descriptor_memory_bytes)",
        )
    if loaded.cost is None:
        return 0.0
    fed = n * h * w
    gflops = fed * loaded.cost.flops_per_pixel / 1e9
    _check(gflops, settings.max_descriptor_gflops, "GFLOPs", "max_descriptor_gflops")
    _check(fed * loaded.cost.peak_bytes_per_pixel, settings.max_descriptor_memory_bytes,
           "bytes of activations", "max_descriptor_memory_bytes")  # fmt: skip
    return gflops


def _plan_one(
    loaded: LoadedModel, size: Size, cap: int, settings: Settings
) -> tuple[ImagePlan, int]:
    """The image's plan and the pixels the model will be fed for it."""
    preprocess = loaded.preprocess
    assert preprocess is not None  # only image models are planned
    oh, ow = preprocess.output_hw(*size)
    if oh * ow <= cap:
        return ImagePlan(), oh * ow
    if loaded.name in settings.downscale_models and preprocess.policy.resize == "keep":
        factor = math.sqrt(cap / (oh * ow))
        w, h = max(1, int(size[0] * factor)), max(1, int(size[1] * factor))
        return ImagePlan((w, h)), w * h
    raise ApiError(
        ErrorCode.TOO_EXPENSIVE,
        f"an image of {size[0]}x{size[1]} gives {loaded.name} {oh * ow} pixels, over its "
        f"resolution cap of {cap} (settings max_model_pixels, max_descriptor_gflops, "
        f"max_descriptor_memory_bytes; or list the model in downscale_models)",
    )


def _check(value: float, limit: float, what: str, setting: str) -> None:
    if value > limit:
        raise ApiError(
            ErrorCode.TOO_EXPENSIVE,
            f"this request needs about {value:.3g} {what}, over the {limit:.3g} allowed "
            f"(setting {setting})",
        )
