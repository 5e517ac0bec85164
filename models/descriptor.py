"""DescriptorNet: backbone -> aggregation head -> optional whitening -> L2.

The attribute names follow the published checkpoints, so their keys load unchanged:

- ``encoder``: the backbone (VGG16 to conv5_3, keys ``encoder.{idx}.*`` as pytorch-NetVlad,
  or a PoolFormer without its classifier, keys ``encoder.patch_embed.*``/``encoder.network.*``);
- ``pool``: any global head from the pooling registry, ``netvlad`` by default (keys
  ``pool.centroids``, ``pool.conv.weight``);
- ``WPCA``: Patch-NetVLAD's whitening PCA, ``Sequential(Conv2d(K*D, num_pcs, 1), Flatten,
  L2Norm)`` (keys ``WPCA.0.weight``/``WPCA.0.bias``), or ``whiten``: a ``Linear`` layer.

The pooled vector is flattened in the head's own order (K-major for NetVLAD) and
L2-normalised before whitening, and the output is L2-normalised again, as cirtorch and
Patch-NetVLAD do. Every descriptor therefore has unit norm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import models.pooling.adaptive  # noqa: F401  (registers global_avg, global_max)
import models.pooling.gem  # noqa: F401  (registers gem)
import models.pooling.netvlad  # noqa: F401  (registers netvlad)
import models.pooling.pyramid  # noqa: F401  (registers spp)
import models.pooling.rmac  # noqa: F401  (registers rmac)
from models.poolformer import POOLFORMER_SPECS, poolformer
from models.pooling import PoolInputError, PoolParamError, create_pool, get_pool_spec, parse_params
from models.vgg import VGG16_DIM, vgg16_trunk

Whitening = Literal["none", "wpca", "linear"]

DESCRIPTOR_HEADS = ("netvlad", "gem", "global_max", "global_avg", "rmac", "spp")
"""The pooling ops that turn any map into one fixed-length vector: the heads we accept."""


@dataclass(frozen=True)
class BackboneInfo:
    """What a head needs to know about a backbone.

    Attributes:
        dim: channels of the local-feature map (D).
        min_size: the smallest input side that still yields a 1x1 map.
    """

    dim: int
    min_size: int


BACKBONES: dict[str, BackboneInfo] = {
    "vgg16": BackboneInfo(dim=VGG16_DIM, min_size=16),
    **{
        name: BackboneInfo(spec.embed_dims[-1], min_size=3)
        for name, spec in POOLFORMER_SPECS.items()
    },
}


def build_backbone(name: str, seed: int = 0) -> nn.Module:
    """The local-feature extractor, seeded: VGG16's trunk or a head-less PoolFormer."""
    if name == "vgg16":
        return vgg16_trunk(seed)
    if name in POOLFORMER_SPECS:
        return poolformer(name, num_classes=0, seed=seed)
    raise PoolParamError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")


def head_params(
    head: str, dim: int, params: Mapping[str, Any] | None = None, seed: int = 0
) -> dict[str, Any]:
    """The head's parameters with the backbone's channel count (and the model's seed)
    filled in where the head takes them and they are not given.

    Raises:
        PoolParamError: the head is not a global descriptor op, or its ``dim`` is not the
            backbone's channel count.
    """
    if head not in DESCRIPTOR_HEADS:
        raise PoolParamError(f"head must be one of {list(DESCRIPTOR_HEADS)}, got {head!r}")
    out = dict(params or {})
    fields = get_pool_spec(head).params.model_fields
    if "dim" in fields:
        out.setdefault("dim", dim)
        if out["dim"] != dim:
            raise PoolParamError(
                f"{head}: dim is {out['dim']} but the backbone gives {dim} channels"
            )
    if "seed" in fields:
        out.setdefault("seed", seed)
    return out


def pooled_dim(head: str, dim: int, params: Mapping[str, Any] | None = None) -> int:
    """Length of the flattened head output for a D-channel map (independent of H, W)."""
    shape = parse_params(head, **head_params(head, dim, params)).output_shape((1, dim, 16, 16))
    return int(torch.Size(shape[1:]).numel())


class L2Norm(nn.Module):
    """L2-normalise along ``dim`` (Patch-NetVLAD's ``L2Norm``, eps 1e-12 as F.normalize)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2, dim=self.dim)


class DescriptorNet(nn.Module):
    """A global image descriptor: backbone, aggregation head, optional whitening, L2.

    Args:
        backbone: ``vgg16`` or ``poolformer_s12`` ... ``poolformer_m48``.
        head: a pooling-registry op, ``netvlad`` by default.
        params: the head's parameters; ``dim`` defaults to the backbone's channel count.
        whitening: ``none``, ``wpca`` (Patch-NetVLAD's 1x1 conv) or ``linear``.
        num_pcs: output dimension of the whitening; required unless ``whitening="none"``.
        seed: seed of the deterministic init of every part; load real weights after.
    """

    def __init__(
        self,
        backbone: str = "vgg16",
        head: str = "netvlad",
        params: Mapping[str, Any] | None = None,
        whitening: Whitening = "none",
        num_pcs: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = build_backbone(backbone, seed)  # raises for an unknown name
        info = BACKBONES[backbone]
        self.backbone, self.head, self.min_size = backbone, head, info.min_size
        self.pool = create_pool(head, **head_params(head, info.dim, params, seed))
        self.pool_dim = self.output_dim = pooled_dim(head, info.dim, params)
        if whitening not in ("none", "wpca", "linear"):
            raise PoolParamError(f"whitening must be none, wpca or linear, got {whitening!r}")
        self.whitening = whitening
        if whitening != "none":
            if num_pcs is None or num_pcs <= 0:
                raise PoolParamError(f"whitening={whitening!r} needs num_pcs > 0, got {num_pcs}")
            self.output_dim = num_pcs
            self._build_whitening(whitening, num_pcs, torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def _build_whitening(self, kind: Whitening, num_pcs: int, generator: torch.Generator) -> None:
        """``WPCA`` (Patch-NetVLAD's keys) or ``whiten``, seeded: normal weights (any scale
        will do before the final L2) and zero bias. Built on "meta" and then given storage,
        so torch's default init (slow for a 32768 x 4096 layer) never runs."""
        if kind == "wpca":
            conv = nn.Conv2d(self.pool_dim, num_pcs, kernel_size=1, device="meta")
            self.WPCA = nn.Sequential(conv, nn.Flatten(1), L2Norm(dim=-1)).to_empty(device="cpu")
        else:
            self.whiten = nn.Linear(self.pool_dim, num_pcs, device="meta").to_empty(device="cpu")
        layer = self._whitening_layer()
        if layer is not None and layer.bias is not None:
            nn.init.normal_(layer.weight, std=self.pool_dim**-0.5, generator=generator)
            nn.init.zeros_(layer.bias)

    def local_features(self, x: Tensor) -> Tensor:
        """The backbone's (N, D, h, w) map for a batch of preprocessed images."""
        self._check_images(x)
        feats: Tensor = self.encoder(x)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) preprocessed images -> (N, output_dim) unit-norm descriptors."""
        pooled: Tensor = self.pool(self.local_features(x))
        desc = F.normalize(pooled.flatten(1), p=2, dim=1)
        layer = self._whitening_layer()
        if layer is not None:
            # The WPCA 1x1 conv on a 1x1 map is this matmul: same numbers, and torch's CPU
            # conv is ~25x slower than linear at K*D = 32768 input channels.
            desc = F.linear(desc, layer.weight.flatten(1), layer.bias)
        return F.normalize(desc, p=2, dim=1)

    def _whitening_layer(self) -> nn.Conv2d | nn.Linear | None:
        if self.whitening == "wpca":
            conv = self.WPCA[0]
            return conv if isinstance(conv, nn.Conv2d) else None
        return self.whiten if self.whitening == "linear" else None

    def _check_images(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise PoolInputError(f"expected (N, 3, H, W) RGB images, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise PoolInputError(f"expected a floating-point image tensor, got {x.dtype}")
        if min(x.shape[-2:]) < self.min_size or x.shape[0] < 1:
            raise PoolInputError(
                f"{self.backbone} needs images of at least {self.min_size}x{self.min_size} "
                f"and a non-empty batch, got {tuple(x.shape)}"
            )
