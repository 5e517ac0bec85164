"""The torch reference of an ``InputPolicy``: a Pillow image to the model's input tensor.

The service does the same steps in NumPy (``app.codecs.preprocess``) and is tested
bit-identical to this.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from models.input_policy import InputPolicy


def image_to_tensor(policy: InputPolicy, image: Image.Image) -> torch.Tensor:
    """Every step of ``policy`` on ``image``; a float32 (3, H, W) tensor."""
    pixels = np.asarray(policy.geometry(image), dtype=np.float32).copy()
    x = torch.from_numpy(pixels).permute(2, 0, 1)
    if policy.value_range == "0-1":
        x = x / 255.0
    mean = torch.tensor(policy.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(policy.std, dtype=torch.float32)[:, None, None]
    return (x - mean) / std
