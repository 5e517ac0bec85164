"""VGG16's convolutional trunk, cut at conv5_3 before its ReLU, as pytorch-NetVlad uses it.

pytorch-NetVlad and Patch-NetVLAD take ``torchvision.models.vgg16().features`` and drop its
last two modules (relu5_3 and pool5), so the trunk returns conv5_3's raw response: 512
channels at stride 16, negative values included. The ``nn.Sequential`` built here keeps
torchvision's module indices (convolutions at 0, 2, 5, ..., 28), so checkpoint keys such as
``encoder.28.weight`` or torchvision's ``features.28.weight`` line up one to one.
"""

from __future__ import annotations

import torch
from torch import nn

VGG16_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip
"""Output channels of each 3x3 convolution; "M" is a 2x2 stride-2 max pool."""

VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
"""Where the 13 convolutions sit in torchvision's ``vgg16().features``."""

VGG16_DIM = 512
"""Channels of conv5_3, the local-feature dimension D that NetVLAD sees."""

VGG16_STRIDE = 16
"""Four 2x2 pools before conv5_3: an HxW image gives an (H//16)x(W//16) map."""


def vgg16_trunk(seed: int = 0) -> nn.Sequential:
    """VGG16 ``features`` up to and including conv5_3, without the ReLU that follows it.

    Args:
        seed: seed of the deterministic init (see ``init_vgg_``); load real weights after.

    Returns:
        A 29-module ``nn.Sequential`` (indices 0..28) mapping (N, 3, H, W) images to
        (N, 512, H // 16, W // 16) maps.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    for item in VGG16_LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out_channels = int(item)
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, device="meta")
        layers += [conv, nn.ReLU()]
        in_channels = out_channels
    trunk = nn.Sequential(*layers[:-1])  # drop relu5_3: NetVLAD reads the raw conv5_3 map
    # Built on "meta" and given storage here, so torch's default init never runs.
    trunk.to_empty(device="cpu")
    init_vgg_(trunk, torch.Generator().manual_seed(seed))
    return trunk


@torch.no_grad()
def init_vgg_(trunk: nn.Sequential, generator: torch.Generator) -> None:
    """Seeded in-place init: torchvision's rule (Kaiming normal, fan_out, zero bias).

    Args:
        trunk: a module built by ``vgg16_trunk``.
        generator: the only source of randomness, so a seed gives the same weights everywhere.
    """
    for module in trunk.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(
                module.weight, mode="fan_out", nonlinearity="relu", generator=generator
            )
            if module.bias is not None:
                nn.init.zeros_(module.bias)
