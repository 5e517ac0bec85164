"""The model's input policy in NumPy: an RGB image to its float32 (3, H, W) input.

The manifest's ``cfg.preprocess`` dict is read into the library's own (torch-free)
``models.input_policy.InputPolicy``, which owns the rules and the resize arithmetic; this
module only does the pixel work of ``InputPolicy.to_tensor`` in NumPy. Same steps, same
Pillow calls, same float32 arithmetic, so the result is bit-identical to the torch version
(tested for every resize rule, both interpolations and both value ranges):

1. resize in Pillow (``keep`` / ``exact`` / ``shorter_side``, bilinear or bicubic);
2. centre crop, here a free NumPy view of the resized pixels instead of a Pillow copy;
3. and 4. one uint8 -> float32 copy from HWC straight into ``out`` (CHW), then in place
   ``/ 255`` (for ``0-1``), ``- mean``, ``/ std``: the torch version's float32 operations in
   its order, hence the same bits. (A 256-entry lookup table per channel was tried: 7x
   slower than these three in-place passes.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from models.input_policy import IMAGENET_MEAN, IMAGENET_STD, RESAMPLE, InputPolicy

_FIELDS = (
    "resize", "size", "shorter_side", "crop", "interpolation", "value_range", "mean", "std",
)  # fmt: skip


def _pair(value: object, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(
            type(v) is int and v > 0
            for v in value  # noqa: E721 (refuse bools)
        )
    ):
        raise ValueError(f"preprocess: {name} must be two positive integers (H, W)")
    return int(value[0]), int(value[1])


def _triple(value: object, name: str) -> tuple[float, float, float]:
    if not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"preprocess: {name} must be three numbers (R, G, B)")
    r, g, b = (float(v) for v in value)
    return r, g, b


@dataclass(frozen=True)
class Preprocessor:
    """``InputPolicy``'s pixel steps in NumPy; build it with ``from_dict``."""

    policy: InputPolicy
    _mean: NDArray[np.float32] = field(init=False, repr=False, compare=False)
    _std: NDArray[np.float32] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_mean", np.array(self.policy.mean, np.float32)[:, None, None])
        object.__setattr__(self, "_std", np.array(self.policy.std, np.float32)[:, None, None])

    @classmethod
    def from_dict(cls, policy: Mapping[str, Any]) -> Preprocessor:
        """From the manifest's ``cfg.preprocess`` (``InputPolicy`` as a JSON dict).

        Missing keys take ``InputPolicy``'s defaults; unknown keys are refused. JSON gives
        lists and loose types, so each value is checked here before ``InputPolicy`` checks
        how they fit together.
        """
        unknown = set(policy) - set(_FIELDS)
        if unknown:
            raise ValueError(f"preprocess: unknown keys {sorted(unknown)}")
        side = policy.get("shorter_side")
        if side is not None and (type(side) is not int or side < 1):
            raise ValueError("preprocess: shorter_side must be a positive integer")
        choices = {
            "resize": ("keep", "exact", "shorter_side"),
            "interpolation": tuple(RESAMPLE),
            "value_range": ("0-1", "0-255"),
        }
        for key, allowed in choices.items():
            if key in policy and policy[key] not in allowed:
                raise ValueError(f"preprocess: {key} must be one of {', '.join(allowed)}")
        try:
            return cls(
                InputPolicy(
                    resize=policy.get("resize", "keep"),
                    size=_pair(policy.get("size"), "size"),
                    shorter_side=side,
                    crop=_pair(policy.get("crop"), "crop"),
                    interpolation=policy.get("interpolation", "bilinear"),
                    value_range=policy.get("value_range", "0-1"),
                    mean=_triple(policy.get("mean", IMAGENET_MEAN), "mean"),
                    std=_triple(policy.get("std", IMAGENET_STD), "std"),
                )
            )
        except ValueError as exc:
            raise ValueError(f"preprocess: {exc}") from None

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        """(H, W) of every tensor when it does not depend on the image (a crop, or an exact
        resize), else None."""
        return self.policy.crop or self.policy.size

    def output_hw(self, width: int, height: int) -> tuple[int, int]:
        """(H, W) of the tensor made from a ``width`` x ``height`` image."""
        if self.policy.crop is not None:
            return self.policy.crop
        new_w, new_h = self.policy.resized_size(width, height)
        return new_h, new_w

    def __call__(
        self, image: Image.Image, out: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]:
        """The float32 (3, H, W) input for ``image``, written into ``out`` when given.

        ``out`` (e.g. one slot of a batch array) must be float32 of shape
        ``(3, *output_hw(*image.size))``.
        """
        if image.mode != "RGB":
            image = image.convert("RGB")
        policy = self.policy
        new_size = policy.resized_size(*image.size)
        if new_size != image.size:
            image = image.resize(new_size, RESAMPLE[policy.interpolation])
        pixels = np.asarray(image)  # (h, w, 3) uint8
        if policy.crop is not None:
            ch, cw = policy.crop
            left = int(round((image.width - cw) / 2.0))
            top = int(round((image.height - ch) / 2.0))
            pixels = pixels[top : top + ch, left : left + cw]
        shape = (3, pixels.shape[0], pixels.shape[1])
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"preprocess: out must be float32 {shape}, not {out.dtype}{out.shape}")
        np.copyto(out, pixels.transpose(2, 0, 1))  # the one copy: uint8 HWC -> float32 CHW
        if policy.value_range == "0-1":
            out /= np.float32(255.0)
        out -= self._mean
        out /= self._std
        return out
