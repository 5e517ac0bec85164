"""Parameter schema and registry entry of ``models.pooling.netvlad``, without torch."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import model_validator

from models.pooling.errors import PoolInputError
from models.pooling.params import PoolParams, check_nchw, require
from models.pooling.registry import PoolSpec, register_pool


class NetVLADParams(PoolParams):
    """NetVLAD layer parameters (pytorch-NetVlad's names and defaults, dim 512 for VGG16 conv5).

    Attributes:
        num_clusters: K, the number of cluster centres.
        dim: D, the channel count of the input feature map.
        normalize_input: L2-normalise each location's channel vector before assignment.
        vladv2: give the assignment conv a bias (paper eq. 3); the default is vladv1, the
            bias-free ``layerVLAD`` used in all the paper's experiments.
        seed: seed for the initial weights, so a fresh layer never depends on global RNG state.
    """

    num_clusters: int = 64
    dim: int = 512
    normalize_input: bool = True
    vladv2: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> NetVLADParams:
        require(self.num_clusters > 0, f"num_clusters must be > 0, got {self.num_clusters}")
        require(self.dim > 0, f"dim must be > 0, got {self.dim}")
        require(0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed}")
        return self

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, _, _ = check_nchw(shapes[0], "netvlad")
        if c != self.dim:
            raise PoolInputError(
                f"netvlad: the layer expects {self.dim} input channels (dim), got {c}"
            )
        return (n, self.num_clusters * self.dim)


def netvlad_dims(params: NetVLADParams) -> dict[str, int]:
    return {"C": params.dim}


def netvlad_work(params: NetVLADParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """The soft-assignment conv and the aggregation: 2 * N * H * W * K * D."""
    n, d, h, w = shapes[0]
    return 2 * n * h * w * params.num_clusters * d


register_pool(
    PoolSpec(
        "netvlad",
        NetVLADParams,
        "models.pooling.netvlad:NetVLAD",
        "NetVLAD soft-assignment residual aggregation, (N, K*D) K-major, L2-normalised.",
        learnable=True,
        examples=(
            {"dim": 64},
            {"num_clusters": 8, "dim": 16},
            {"num_clusters": 3, "dim": 5, "normalize_input": False},
            {"num_clusters": 6, "dim": 4, "vladv2": True},
            {"num_clusters": 1, "dim": 7, "vladv2": True, "normalize_input": False},
        ),
        fixed_dims=netvlad_dims,
        work=netvlad_work,
    )
)
