"""poolformer_mixer against PoolFormer's nn.AvgPool2d(...)(x) - x and hand-computed values."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from models.pooling import PoolError, PoolInputError, PoolParamError, create_pool


@pytest.mark.parametrize("pool_size", [1, 3, 5, 7])
@pytest.mark.parametrize("hw", [(7, 7), (8, 5), (2, 3)])
def test_matches_poolformer_pooling(pool_size: int, hw: tuple) -> None:
    x = torch.randn(2, 4, *hw)
    ref = nn.AvgPool2d(pool_size, 1, pool_size // 2, count_include_pad=False)(x) - x
    out = create_pool("poolformer_mixer", pool_size=pool_size)(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_hand_computed_values_on_a_4x4_ramp() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = create_pool("poolformer_mixer")(x)[0, 0]
    assert out[0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4 - 0)  # corner: 4 real cells
    assert out[0, 1].item() == pytest.approx((0 + 1 + 2 + 4 + 5 + 6) / 6 - 1)  # edge: 6 cells
    assert out[3, 3].item() == pytest.approx((10 + 11 + 14 + 15) / 4 - 15)
    assert out[1, 2].item() == pytest.approx(0.0)  # interior of a linear ramp: mean = centre


def test_window_larger_than_map_averages_everything() -> None:
    x = torch.randn(1, 3, 2, 2)
    out = create_pool("poolformer_mixer", pool_size=5)(x)
    torch.testing.assert_close(out, x.mean(dim=(2, 3), keepdim=True) - x)


def test_has_no_parameters() -> None:
    assert list(create_pool("poolformer_mixer").parameters()) == []


@pytest.mark.parametrize("pool_size", [0, 2, 4, -3])
def test_bad_pool_size(pool_size: int) -> None:
    with pytest.raises(PoolParamError, match="odd"):
        create_pool("poolformer_mixer", pool_size=pool_size)


def test_bad_input() -> None:
    with pytest.raises(PoolInputError, match="4-D"):
        create_pool("poolformer_mixer")(torch.randn(3, 4, 4))
    with pytest.raises(PoolInputError, match="floating"):
        create_pool("poolformer_mixer")(torch.ones(1, 1, 4, 4, dtype=torch.int64))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), k=st.integers(-1, 8))
def test_shape_property(h: int, w: int, k: int) -> None:
    """Odd sizes keep the input's shape and match PoolFormer; others are a PoolError."""
    x = torch.randn(1, 2, h, w)
    try:
        out = create_pool("poolformer_mixer", pool_size=k)(x)
    except PoolError:
        assert k < 1 or k % 2 == 0
        return
    assert out.shape == x.shape
    ref = nn.AvgPool2d(k, 1, k // 2, count_include_pad=False)(x) - x
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
