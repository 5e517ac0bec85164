"""How an image becomes a model's input: ``InputPolicy``, shared by the exporter and the service.

Torch-free, so the service (``app.codecs.preprocess``) reads the manifest's policy into the
very same class; the exporter's torch reference for steps 3-4 is ``models.transforms``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ResizeRule = Literal["keep", "exact", "shorter_side"]
Interpolation = Literal["bilinear", "bicubic"]
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class InputPolicy:
    """How an RGB image becomes the model's (3, H, W) input tensor, step by step.

    1. Resize, by ``resize``:
       - ``keep``: no resize; the network sees the image at its own size.
       - ``exact``: resize to ``size`` = (H, W), ignoring the aspect ratio (Patch-NetVLAD's
         (480, 640)).
       - ``shorter_side``: scale so the shorter side is ``shorter_side`` pixels, the longer
         side ``int(shorter_side * long / short)`` (torchvision's ``Resize(int)``).
    2. Centre-crop to ``crop`` = (H, W) if given (only after ``shorter_side``); the offset is
       ``round((h - crop_h) / 2)``, as torchvision's ``CenterCrop``.
    3. Scale 8-bit values to ``value_range``: ``0-1`` divides by 255, ``0-255`` keeps them.
    4. Normalise each channel: ``(v - mean) / std``, with mean/std in that same range
       (``0-255`` with std 1 is the Caffe/MatConvNet "minus the mean pixel" convention).

    Resizing uses Pillow with ``interpolation`` (antialiased, as torchvision on PIL images).
    """

    resize: ResizeRule = "keep"
    size: tuple[int, int] | None = None
    shorter_side: int | None = None
    crop: tuple[int, int] | None = None
    interpolation: Interpolation = "bilinear"
    value_range: Literal["0-1", "0-255"] = "0-1"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if (self.resize == "exact") != (self.size is not None):
            raise ValueError("InputPolicy: give size=(H, W) exactly when resize='exact'")
        if (self.resize == "shorter_side") != (self.shorter_side is not None):
            raise ValueError("InputPolicy: give shorter_side exactly when resize='shorter_side'")
        if self.crop is not None and (
            self.shorter_side is None or max(self.crop) > self.shorter_side
        ):
            raise ValueError("InputPolicy: crop needs resize='shorter_side' >= the crop size")
        if min(self.std) <= 0:
            raise ValueError(f"InputPolicy: std must be > 0, got {self.std}")

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after step 1, before the crop."""
        if self.size is not None:
            return self.size[1], self.size[0]
        if self.shorter_side is None:
            return width, height
        s = self.shorter_side
        if width <= height:
            return s, int(s * height / width)
        return int(s * width / height), s

    def geometry(self, image: Image.Image) -> Image.Image:
        """Steps 1-2 on a Pillow image: RGB, resized, centre-cropped."""
        image = image.convert("RGB")
        new_size = self.resized_size(*image.size)
        if new_size != image.size:
            image = image.resize(new_size, RESAMPLE[self.interpolation])
        if self.crop is not None:
            ch, cw = self.crop
            left = int(round((image.width - cw) / 2.0))
            top = int(round((image.height - ch) / 2.0))
            image = image.crop((left, top, left + cw, top + ch))
        return image
