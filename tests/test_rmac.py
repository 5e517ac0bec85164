"""rmac against a plain-loop reference of cirtorch's LF.rmac and its region grid."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolInputError, PoolParamError, create_pool
from models.pooling.rmac import rmac_regions
from tests.reference import reference_regions


def reference_rmac(x: torch.Tensor, L: int, eps: float) -> torch.Tensor:
    """Global MAC + every region MAC, each divided by (its L2 norm + eps), summed by hand."""
    N, C, H, W = x.shape
    data = x.tolist()
    boxes = [(0, 0, H, W)] + [(t, left, s, s) for t, left, s in reference_regions(H, W, L)]
    out = [[0.0] * C for _ in range(N)]
    for n in range(N):
        for top, left, rh, rw in boxes:
            maxima = []
            for c in range(C):
                cells = [
                    data[n][c][i][j] for i in range(top, top + rh) for j in range(left, left + rw)
                ]
                maxima.append(max(cells))
            norm = math.sqrt(sum(v * v for v in maxima)) + eps
            for c in range(C):
                out[n][c] += maxima[c] / norm
    return torch.tensor(out, dtype=x.dtype).reshape(N, C, 1, 1)


@pytest.mark.parametrize(
    ("h", "w"), [(7, 7), (10, 13), (13, 10), (30, 40), (2, 32), (11, 47), (1, 1), (1, 6), (5, 3)]
)
def test_matches_plain_loop_reference(h: int, w: int) -> None:
    torch.manual_seed(h * 100 + w)
    x = torch.rand(2, 3, h, w, dtype=torch.float64)
    out = create_pool("rmac")(x)
    assert out.shape == (2, 3, 1, 1)
    torch.testing.assert_close(out, reference_rmac(x, 3, 1e-6))


@pytest.mark.parametrize("levels", [1, 2, 4, 6])
def test_other_level_counts_match_reference(levels: int) -> None:
    x = torch.rand(1, 4, 17, 23, dtype=torch.float64)
    out = create_pool("rmac", levels=levels)(x)
    torch.testing.assert_close(out, reference_rmac(x, levels, 1e-6))


def test_region_grid_worked_example() -> None:
    """The 10x13 grid, as cirtorch's LF.rmac builds it: 2 + 6 + 12 regions."""
    assert rmac_regions(10, 13) == [
        (0, 0, 10), (0, 3, 10),
        (0, 0, 6), (0, 3, 6), (0, 7, 6), (4, 0, 6), (4, 3, 6), (4, 7, 6),
        (0, 0, 5), (0, 2, 5), (0, 5, 5), (0, 8, 5),
        (2, 0, 5), (2, 2, 5), (2, 5, 5), (2, 8, 5),
        (5, 0, 5), (5, 2, 5), (5, 5, 5), (5, 8, 5),
    ]  # fmt: skip


def test_float32_rounding_is_cirtorch_s() -> None:
    """At 2x32 cirtorch's float32 grid starts the last 1-pixel region at column 30, not 31."""
    level2 = [r for r in rmac_regions(2, 32) if r[2] == 1][:8]
    assert [left for _, left, _ in level2] == [0, 4, 8, 13, 17, 22, 26, 30]


def test_square_single_level_is_twice_the_normalised_mac() -> None:
    """On a square map level 1 is one region, the whole map: the global MAC counted twice."""
    x = torch.rand(2, 5, 6, 6, dtype=torch.float64)
    mac = x.amax(dim=(2, 3), keepdim=True)
    expected = 2 * mac / (mac.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-6)
    torch.testing.assert_close(create_pool("rmac", levels=1)(x), expected)


def test_output_is_not_renormalised() -> None:
    """cirtorch returns the raw sum: with L=3 on 7x7 it holds 1 + 14 unit-ish vectors."""
    x = torch.rand(1, 8, 7, 7) + 0.1
    norm = torch.linalg.vector_norm(create_pool("rmac")(x).flatten())
    assert norm > 2.0


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [(dict(levels=0), "levels"), (dict(levels=11), "levels"), (dict(eps=0.0), "eps")],
)
def test_bad_params(kw: dict, fragment: str) -> None:
    with pytest.raises(PoolParamError, match=fragment):
        create_pool("rmac", **kw)


def test_bad_input() -> None:
    with pytest.raises(PoolInputError, match="4-D"):
        create_pool("rmac")(torch.rand(3, 7, 7))
    with pytest.raises(PoolInputError, match="floating"):
        create_pool("rmac")(torch.ones(1, 2, 7, 7, dtype=torch.int64))


@settings(max_examples=50, deadline=None)
@given(h=st.integers(1, 60), w=st.integers(1, 60), levels=st.integers(-1, 12))
def test_shape_and_grid_property(h: int, w: int, levels: int) -> None:
    """Valid params give (N, C, 1, 1) and cirtorch's regions, all inside the map."""
    try:
        pool = create_pool("rmac", levels=levels)
    except PoolError:
        assert not 1 <= levels <= 10
        return
    assert pool(torch.rand(2, 3, h, w)).shape == (2, 3, 1, 1)
    regions = rmac_regions(h, w, levels)
    assert regions == reference_regions(h, w, levels)
    assert all(t >= 0 and left >= 0 and t + s <= h and left + s <= w for t, left, s in regions)
