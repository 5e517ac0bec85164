"""Parameter schema and registry entry of ``models.pooling.nonlocal_pool``, without torch."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import model_validator

from models.pooling.errors import PoolInputError
from models.pooling.params import Pair, PoolParams, check_nchw, require
from models.pooling.registry import PoolSpec, register_pool


class NonLocalParams(PoolParams):
    """Non-local pooling parameters (the reference's, with torch-style names).

    Attributes:
        in_size: the fixed input (H, W); an int means square.
        in_channels: input channels.
        out_channels: output channels; defaults to ``in_channels``.
        scale: downsampling factor; only 2 is supported (see the validator).
        squeeze: embed 2x larger patches and restore the grid with PixelShuffle(2).
        seed: seed for the initial weights, so a fresh layer never depends on global RNG state.
    """

    in_size: Pair
    in_channels: int
    out_channels: int | None = None
    scale: int = 2
    squeeze: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> NonLocalParams:
        require(self.in_channels > 0, f"in_channels must be > 0, got {self.in_channels}")
        require(
            self.out_channels is None or self.out_channels > 0,
            f"out_channels must be > 0 or null, got {self.out_channels}",
        )
        require(
            self.scale == 2,
            f"scale must be 2, got {self.scale}: the reference hard-codes the local branch's "
            "max pool stride (and the PixelShuffle factor) to 2, so for any other scale the "
            "two branches have different sizes",
        )
        h, w = self.in_size
        p = self.patch_size
        why = "scale * 2 with squeeze" if self.squeeze else "scale"
        require(
            h > 0 and w > 0 and h % p == 0 and w % p == 0,
            f"in_size must be positive multiples of {p} ({why}) so the token grid matches "
            f"the max-pool branch, got {self.in_size}",
        )
        require(0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed}")
        return self

    @property
    def out(self) -> int:
        """The resolved output channel count."""
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def patch_size(self) -> int:
        return 2 * self.scale if self.squeeze else self.scale

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid (H / patch, W / patch)."""
        return self.in_size[0] // self.patch_size, self.in_size[1] // self.patch_size

    @property
    def token_dim(self) -> int:
        """Channels of a token: the reference halves them from 128 output channels up."""
        return self.out // 2 if self.out >= 128 else self.out

    @property
    def mix_out(self) -> int:
        """Channel-mix width: PixelShuffle needs scale**2 times the output channels."""
        return self.scale**2 * self.out if self.squeeze else self.out

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight the op needs, by its key in the reference's state_dict."""
        c, o, t, p = self.in_channels, self.out, self.token_dim, self.patch_size
        n = self.grid[0] * self.grid[1]
        return {
            "alpha": (1,),
            "embedding.weight": (t, c, p, p),
            "embedding.bias": (t,),
            "token_mix.1.weight": (n,),
            "token_mix.1.bias": (n,),
            "token_mix.2.weight": (n, n),
            "token_mix.2.bias": (n,),
            "token_mix.4.weight": (n, n),
            "token_mix.4.bias": (n,),
            "point_wise.weight": (o, c, 1, 1),
            "point_wise.bias": (o,),
            "norm.weight": (o,),
            "norm.bias": (o,),
            "norm.running_mean": (o,),
            "norm.running_var": (o,),
            "channel_mix.1.weight": (t,),
            "channel_mix.1.bias": (t,),
            "channel_mix.2.weight": (self.mix_out, t),
            "channel_mix.2.bias": (self.mix_out,),
        }

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = check_nchw(shapes[0], "nonlocal")
        if c != self.in_channels:
            raise PoolInputError(
                f"nonlocal: the layer expects {self.in_channels} input channels, got {c}"
            )
        if (h, w) != self.in_size:
            raise PoolInputError(
                f"nonlocal: the layer was built for {self.in_size[0]}x{self.in_size[1]} inputs "
                f"(its token-mixing weights are per token), got {h}x{w}"
            )
        return (n, self.out, h // 2, w // 2)


def nonlocal_dims(params: NonLocalParams) -> dict[str, int]:
    return {"C": params.in_channels, "H": params.in_size[0], "W": params.in_size[1]}


def nonlocal_work(params: NonLocalParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """Patch embedding, token and channel mixing, the 1x1 conv and the 3x3 max pool."""
    n, c, h, w = shapes[0]
    tokens = params.grid[0] * params.grid[1]
    t, o = params.token_dim, params.out
    embed = h * w * c * t
    mixing = 2 * t * tokens * tokens + tokens * t * params.mix_out
    local = h * w * c * o + 9 * o * (h // 2) * (w // 2)
    return n * (embed + mixing + local)


register_pool(
    PoolSpec(
        "nonlocal",
        NonLocalParams,
        "models.pooling.nonlocal_pool:NonLocalPool",
        "Non-local MLP pooling (nonlocalpooling 2.0.1): "
        "BN(a * mixer(x) + (1 - a) * maxpool(conv1x1(x))), (N, out, H/2, W/2).",
        learnable=True,
        examples=(
            {"in_size": (56, 56), "in_channels": 64},
            {"in_size": (8, 8), "in_channels": 4},
            {"in_size": (8, 12), "in_channels": 3, "out_channels": 16, "squeeze": True},
            {"in_size": (6, 10), "in_channels": 2, "out_channels": 5},
            {"in_size": (8, 8), "in_channels": 5, "out_channels": 128},
            {"in_size": (8, 4), "in_channels": 3, "out_channels": 130, "squeeze": True},
        ),
        fixed_dims=nonlocal_dims,
        work=nonlocal_work,
    )
)
