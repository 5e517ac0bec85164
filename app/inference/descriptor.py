"""/descriptor: pick the image model, decode and preprocess the images, run the model.

The route hands this engine the images' bytes and gets the descriptors back, one row per
image in request order; decoding and preprocessing run on the gate's worker threads, the
model runs through the runner (and its batcher, when batching is on).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import anyio.to_thread
import numpy as np
from PIL import Image

from app.codecs.image import decode_image, image_size
from app.codecs.preprocess import Preprocessor
from app.codecs.tensor import check_finite
from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode
from app.core.metrics import Metrics
from app.core.offload import OFF_LOOP_ELEMENTS, off_loop_if
from app.core.request_context import note_model
from app.inference.deadline import RunControl
from app.inference.descriptor_budget import ImagePlan, plan_images, price_tensor
from app.inference.gate import HEAVY_FRACTION
from app.inference.runner import Runner
from app.inference.sessions import LoadedModel
from models.input_policy import RESAMPLE

Batch = tuple[list[int], np.ndarray]
"""The request-order indices of a batch's rows, and the (n, 3, H, W) rows."""


@dataclass(frozen=True)
class Described:
    model: LoadedModel
    descriptors: np.ndarray
    """(n, D) float32, one row per image in request order."""


class DescriptorEngine:
    def __init__(
        self,
        settings: Settings,
        runner: Runner,
        models: Mapping[str, LoadedModel],
        default_model: str | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.models = models
        self.default_model = default_model
        self.metrics = metrics or Metrics()  # decode and preprocess times per model

    def image_model(self, name: str | None) -> LoadedModel:
        """The named image model, else the default one; 404 with the choices otherwise."""
        name = name or self.default_model
        loaded = self.models.get(name) if name else None
        if loaded is None or loaded.preprocess is None:
            choices = sorted(n for n, m in self.models.items() if m.preprocess is not None)
            raise ApiError(
                ErrorCode.UNKNOWN_MODEL, f"unknown image model; loaded ones are {choices}"
            )
        note_model(loaded.name)  # the request's outcome counts under this model
        return loaded

    def applies_exif(self, name: str) -> bool:
        """Whether ``name`` turns images upright by their EXIF orientation (``exif_models``);
        the others ignore the tag, as the reference pipelines do."""
        listed = self.settings.exif_models
        return "*" in listed or name in listed

    async def describe(
        self, model: str | None, blobs: list[bytes], control: RunControl | None = None
    ) -> Described:
        """The descriptors of ``blobs`` (at least one image) with ``model``; ``control``
        stops the runs when the client goes. The request is priced from the headers first;
        a heavy one takes the heavy lane before it decodes anything and runs on its own,
        off the batcher, so light requests never wait behind it."""
        loaded = self.image_model(model)
        plans, gflops = await anyio.to_thread.run_sync(self._price, loaded, blobs)
        heavy = gflops > HEAVY_FRACTION * self.settings.max_descriptor_gflops
        async with self.runner.heavy.slot(loaded.name) if heavy else nullcontext():
            batches = await self.runner.on_worker(
                lambda: self._prepare(loaded, blobs, plans), loaded.name
            )
            return Described(loaded, await self._run(loaded, batches, control, heavy))

    async def run_tensor(
        self, name: str, x: np.ndarray, control: RunControl | None = None
    ) -> np.ndarray:
        """A repository model on a batch the client preprocessed itself: checked against
        the model's input spec and priced like images of that size before it runs."""
        loaded = self.models.get(name)
        if loaded is None:
            raise ApiError(ErrorCode.UNKNOWN_MODEL, "unknown model")
        note_model(name)
        await off_loop_if(x.size > OFF_LOOP_ELEMENTS, _check_tensor, loaded, x)
        gflops = price_tensor(loaded, x.shape, self.settings)
        heavy = gflops > HEAVY_FRACTION * self.settings.max_descriptor_gflops
        async with self.runner.heavy.slot(name) if heavy else nullcontext():
            return await self.runner.run_model(name, x, control, heavy=heavy)

    def _price(self, loaded: LoadedModel, blobs: list[bytes]) -> tuple[list[ImagePlan], float]:
        """Each image's plan and the request's GFLOPs, from the headers alone (a worker
        thread but no inference slot: a rare PNG must decode to find its orientation)."""
        exif = self.applies_exif(loaded.name)
        sizes = [image_size(blob, self.settings.max_image_pixels, exif=exif) for blob in blobs]
        return plan_images(loaded, sizes, self.settings)

    def _prepare(
        self, loaded: LoadedModel, blobs: list[bytes], plans: list[ImagePlan]
    ) -> list[Batch]:
        """Decode and preprocess every image into model batches.

        A model with a fixed input size gets one (n, 3, H, W) array that each image is
        written straight into (no per-image tensor, no stacking copy); otherwise images are
        stacked by size, one batch per distinct size.
        """
        preprocess = loaded.preprocess
        assert preprocess is not None  # image_model guarantees an image model
        if preprocess.fixed_hw is not None:
            return [(list(range(len(blobs))), self._fixed_batch(loaded, preprocess, blobs))]
        groups: dict[tuple[int, ...], tuple[list[int], list[np.ndarray]]] = {}
        for i, (blob, plan) in enumerate(zip(blobs, plans, strict=True)):
            with self.metrics.decode.labels(loaded.name).time():
                image = self._decode(loaded, preprocess, blob)
            with self.metrics.preprocess.labels(loaded.name).time():
                if plan.resize_to is not None:
                    image = image.resize(plan.resize_to, RESAMPLE[preprocess.policy.interpolation])
                _check_size(loaded, preprocess.output_hw(*image.size))
                x = preprocess(image)
            indices, tensors = groups.setdefault(x.shape, ([], []))
            indices.append(i)
            tensors.append(x)
        return [(indices, np.stack(tensors)) for indices, tensors in groups.values()]

    def _fixed_batch(
        self, loaded: LoadedModel, preprocess: Preprocessor, blobs: list[bytes]
    ) -> np.ndarray:
        assert preprocess.fixed_hw is not None
        _check_size(loaded, preprocess.fixed_hw)
        batch = np.empty((len(blobs), 3, *preprocess.fixed_hw), dtype=np.float32)
        for slot, blob in zip(batch, blobs, strict=True):
            with self.metrics.decode.labels(loaded.name).time():
                image = self._decode(loaded, preprocess, blob)
            with self.metrics.preprocess.labels(loaded.name).time():
                preprocess(image, out=slot)
        return batch

    def _decode(self, loaded: LoadedModel, preprocess: Preprocessor, blob: bytes) -> Image.Image:
        draft = preprocess.policy.resized_size if self.settings.jpeg_draft else None
        exif = self.applies_exif(loaded.name)
        return decode_image(blob, self.settings.max_image_pixels, draft, exif=exif)

    async def _run(
        self,
        loaded: LoadedModel,
        batches: list[Batch],
        control: RunControl | None,
        heavy: bool = False,
    ) -> np.ndarray:
        """Run each batch; rows back in request order, float32."""
        if len(batches) == 1:
            out = await self.runner.run_model(loaded.name, batches[0][1], control, heavy=heavy)
            return out.astype(np.float32, copy=False)
        count = sum(len(indices) for indices, _ in batches)
        result: np.ndarray | None = None
        for indices, batch in batches:
            out = await self.runner.run_model(loaded.name, batch, control, heavy=heavy)
            if result is None:
                result = np.empty((count, *out.shape[1:]), dtype=np.float32)
            result[indices] = out
        assert result is not None  # at least one image: the route guarantees it
        return result


def _check_tensor(loaded: LoadedModel, x: np.ndarray) -> None:
    """x against the entry's dtype, fixed dims and minimum size."""
    spec = loaded.entry.inputs[0]
    if x.dtype.name != spec.dtype:
        raise ApiError(ErrorCode.UNSUPPORTED_DTYPE, f"{loaded.name} takes {spec.dtype}")
    fits = x.ndim == len(spec.shape) == 4 and all(
        not isinstance(d, int) or x.shape[i] == d for i, d in enumerate(spec.shape)
    )
    if not fits:
        raise ApiError(
            ErrorCode.INVALID_INPUT, f"{loaded.name} takes inputs of shape {list(spec.shape)}"
        )
    _check_size(loaded, (int(x.shape[2]), int(x.shape[3])))
    check_finite(x)


def _check_size(loaded: LoadedModel, hw: tuple[int, int]) -> None:
    low = loaded.entry.min_hw or 1
    if min(hw) < low:
        raise ApiError(
            ErrorCode.IMAGE_TOO_SMALL,
            f"{loaded.name} needs at least {low}x{low} pixels after preprocessing",
        )
