"""PoolFormer (Yu et al., "MetaFormer Is Actually What You Need for Vision", CVPR 2022).

Our own implementation of sail-sg/poolformer's ``PoolFormer`` whose ``state_dict`` keys and
shapes equal the released checkpoints' exactly (132 keys for S12):

- ``patch_embed.proj``: the stem, a 7x7 stride-4 convolution (padding 2);
- ``network``: a ``ModuleList`` [stage0, down, stage1, down, stage2, down, stage3], where each
  stage is a ``Sequential`` of blocks and each ``down`` a 3x3 stride-2 convolution (``proj``);
- ``norm`` (GroupNorm with one group) and ``head`` (``Linear``) for classification.

A block computes ``x + ls1 * mixer(norm1(x))`` then ``x + ls2 * mlp(norm2(x))``, with the
token mixer ``avg_pool3x3(x) - x`` from the pooling registry (``poolformer_mixer``). The
classifier normalises the whole last-stage map before its spatial mean (sail-sg's order; timm
pools first, see ``models/weights.py``). Drop-path and dropout are training-only and omitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import models.pooling.token_mixer  # noqa: F401  (registers poolformer_mixer)
from models.pooling import PoolInputError, create_pool


@dataclass(frozen=True)
class PoolFormerSpec:
    """One published PoolFormer variant.

    Attributes:
        layers: blocks per stage.
        embed_dims: channels per stage.
        layer_scale_init: the constant both layer scales start from.
        crop_pct: timm's eval crop fraction: resize the shorter side to
            ``floor(224 / crop_pct)``, then centre-crop 224.
        mlp_ratio: hidden width of each block's MLP, as a multiple of the stage width.
        pool_size: the token mixer's average-pool window.
    """

    layers: tuple[int, int, int, int]
    embed_dims: tuple[int, int, int, int]
    layer_scale_init: float
    crop_pct: float
    mlp_ratio: int = 4
    pool_size: int = 3


_S_DIMS = (64, 128, 320, 512)
_M_DIMS = (96, 192, 384, 768)

POOLFORMER_SPECS: dict[str, PoolFormerSpec] = {
    "poolformer_s12": PoolFormerSpec((2, 2, 6, 2), _S_DIMS, 1e-5, 0.9),
    "poolformer_s24": PoolFormerSpec((4, 4, 12, 4), _S_DIMS, 1e-5, 0.9),
    "poolformer_s36": PoolFormerSpec((6, 6, 18, 6), _S_DIMS, 1e-6, 0.9),
    "poolformer_m36": PoolFormerSpec((6, 6, 18, 6), _M_DIMS, 1e-6, 0.95),
    "poolformer_m48": PoolFormerSpec((8, 8, 24, 8), _M_DIMS, 1e-6, 0.95),
}
"""The sail-sg variants: depths, widths, layer-scale init and crop_pct from the paper's code."""

POOLFORMER_STRIDE = 32
"""The last stage's map is (H // 32)-ish: stem stride 4, then three stride-2 downsamplings."""


class GroupNorm1(nn.GroupNorm):
    """GroupNorm with a single group: per sample, normalise over (C, H, W) together, then
    apply a per-channel affine. eps is torch's default 1e-5, as in sail-sg."""

    def __init__(self, num_channels: int) -> None:
        super().__init__(1, num_channels)


# Our convolutions and linears are created on "meta" and then given uninitialised CPU storage
# (``to_empty``): torch's default init would only be overwritten by ``init_weights``.


class PatchEmbed(nn.Module):
    """A strided convolution: the stem and the downsampling between stages (key ``proj``)."""

    def __init__(self, in_chans: int, embed_dim: int, kernel: int, stride: int, pad: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel, stride=stride, padding=pad, device="meta"
        ).to_empty(device="cpu")

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.proj(x)
        return out


class Mlp(nn.Module):
    """Two 1x1 convolutions with exact (erf) GELU between them."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1, device="meta").to_empty(device="cpu")
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1, device="meta").to_empty(device="cpu")

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class PoolFormerBlock(nn.Module):
    """Token mixing by pooling, then a channel MLP, each as a layer-scaled residual."""

    def __init__(self, dim: int, spec: PoolFormerSpec) -> None:
        super().__init__()
        self.norm1 = GroupNorm1(dim)
        self.token_mixer = create_pool("poolformer_mixer", pool_size=spec.pool_size)
        self.norm2 = GroupNorm1(dim)
        self.mlp = Mlp(dim, dim * spec.mlp_ratio)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), spec.layer_scale_init))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), spec.layer_scale_init))

    def forward(self, x: Tensor) -> Tensor:
        mixed: Tensor = self.token_mixer(self.norm1(x))
        x = x + self.layer_scale_1[:, None, None] * mixed
        mlp_out: Tensor = self.mlp(self.norm2(x))
        return x + self.layer_scale_2[:, None, None] * mlp_out


class PoolFormer(nn.Module):
    """PoolFormer classifier, or with ``num_classes=0`` a backbone returning the last map.

    Args:
        spec: the variant, usually ``POOLFORMER_SPECS[name]``.
        num_classes: classifier width; 0 builds no ``norm``/``head`` and ``forward`` returns
            the last stage's (N, C_last, ~H/32, ~W/32) map (the features mode).
        seed: seed of the deterministic init (``init_weights``); load real weights after.
    """

    def __init__(self, spec: PoolFormerSpec, num_classes: int = 1000, seed: int = 0) -> None:
        super().__init__()
        dims = spec.embed_dims
        self.spec = spec
        self.num_features = dims[-1]
        self.num_classes = num_classes
        self.patch_embed = PatchEmbed(3, dims[0], kernel=7, stride=4, pad=2)
        self.network = nn.ModuleList(self._stages(spec))
        if num_classes > 0:
            self.norm = GroupNorm1(dims[-1])
            self.head = nn.Linear(dims[-1], num_classes, device="meta").to_empty(device="cpu")
        self.init_weights(torch.Generator().manual_seed(seed))

    @staticmethod
    def _stages(spec: PoolFormerSpec) -> list[nn.Module]:
        """[stage0, down, stage1, down, stage2, down, stage3], sail-sg's ``network`` order."""
        dims = spec.embed_dims
        network: list[nn.Module] = []
        for i, depth in enumerate(spec.layers):
            network.append(nn.Sequential(*[PoolFormerBlock(dims[i], spec) for _ in range(depth)]))
            if i + 1 < len(spec.layers):
                network.append(PatchEmbed(dims[i], dims[i + 1], kernel=3, stride=2, pad=1))
        return network

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's output map, before the classifier's norm."""
        if x.dim() != 4 or x.shape[1] != 3 or min(x.shape) < 1 or min(x.shape[-2:]) < 3:
            raise PoolInputError(
                f"expected (N, 3, H, W) images with H, W >= 3, got {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        for layer in self.network:
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes), or the last map when built without a head."""
        x = self.forward_features(x)
        if self.num_classes == 0:
            return x
        pooled = self.norm(x).mean(dim=(-2, -1))  # norm the full map, then pool (sail-sg)
        logits: Tensor = self.head(pooled)
        return logits

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """Seeded in-place init, after sail-sg: normal (std 0.02) for every convolution and
        linear weight, zero biases, unit norms, layer scales at their published constant.

        sail-sg calls ``trunc_normal_(std=.02)``, whose cut-off is at +-2 absolute, i.e.
        100 standard deviations: the same distribution as a plain normal, which is far
        cheaper to draw. ``generator`` is the only source of randomness.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.normal_(module.weight, std=0.02, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, PoolFormerBlock):
                nn.init.constant_(module.layer_scale_1, self.spec.layer_scale_init)
                nn.init.constant_(module.layer_scale_2, self.spec.layer_scale_init)


def poolformer(name: str, num_classes: int = 1000, seed: int = 0) -> PoolFormer:
    """Build a named variant (``poolformer_s12`` ... ``poolformer_m48``), seeded."""
    try:
        spec = POOLFORMER_SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown PoolFormer variant {name!r}; expected one of {sorted(POOLFORMER_SPECS)}"
        ) from None
    return PoolFormer(spec, num_classes=num_classes, seed=seed)
