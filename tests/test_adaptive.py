"""adaptive_avg / adaptive_max, global_avg / global_max and avgmax_add / avgmax_cat against
torch's built-in adaptive pools, closed-form bins and plain reductions."""

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolInputError, PoolParamError, create_pool, parse_params
from models.pooling.adaptive import AdaptiveParams, adaptive_bins
from tests.reference import arange_plane

# (H, W, output_size): divisible, non-divisible, larger than the input, and null entries.
SHAPES = [
    (13, 13, 3),
    (7, 7, 5),
    (5, 5, 7),
    (12, 12, 4),
    (8, 8, 1),
    (1, 1, 3),
    (13, 11, (4, None)),
    (6, 9, (None, 2)),
    (10, 7, (3, 6)),
    (3, 4, (9, 2)),
    (2, 3, (None, None)),
]


def test_bins_closed_form() -> None:
    # [floor(i*size/out), ceil((i+1)*size/out)) worked by hand.
    assert adaptive_bins(7, 4) == [(0, 2), (1, 4), (3, 6), (5, 7)]
    assert adaptive_bins(13, 3) == [(0, 5), (4, 9), (8, 13)]
    assert adaptive_bins(5, 7) == [(0, 1), (0, 2), (1, 3), (2, 3), (2, 4), (3, 5), (4, 5)]
    assert adaptive_bins(12, 4) == [(0, 3), (3, 6), (6, 9), (9, 12)]


def test_worked_example_5x5_to_3x3() -> None:
    # Bins along each axis of 5 -> 3 are [0, 2), [1, 4), [3, 5).
    x = arange_plane(5, 5)
    mx = create_pool("adaptive_max", output_size=3)(x)
    assert mx.tolist() == [[[[6, 8, 9], [16, 18, 19], [21, 23, 24]]]]
    av = create_pool("adaptive_avg", output_size=3)(x)
    # Mean of rows [0,2) x cols [0,2) = (0+1+5+6)/4; rows [1,4) x cols [1,4) = 12 (centre).
    assert av[0, 0, 0, 0].item() == 3.0
    assert av[0, 0, 1, 1].item() == 12.0


@pytest.mark.parametrize(("h", "w", "size"), SHAPES)
def test_adaptive_avg_matches_torch(h: int, w: int, size: Any) -> None:
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    out = create_pool("adaptive_avg", output_size=size)(x)
    ref = F.adaptive_avg_pool2d(x, size)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize(("h", "w", "size"), SHAPES)
def test_adaptive_max_matches_torch_values_and_indices(h: int, w: int, size: Any) -> None:
    x = torch.randn(2, 3, h, w)
    out, idx = create_pool("adaptive_max", output_size=size, return_indices=True)(x)
    ref, ref_idx = F.adaptive_max_pool2d(x, size, return_indices=True)
    assert torch.equal(out, ref)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(create_pool("adaptive_max", output_size=size)(x), ref)


@pytest.mark.parametrize(("h", "w", "size"), SHAPES)
def test_output_shape_agrees_with_torch(h: int, w: int, size: Any) -> None:
    params = parse_params("adaptive_avg", output_size=size)
    ref = F.adaptive_avg_pool2d(torch.randn(2, 3, h, w), size)
    assert params.output_shape((2, 3, h, w)) == tuple(ref.shape)


def test_ties_take_the_first_max_like_torch() -> None:
    x = torch.randint(0, 3, (2, 4, 9, 10)).float()  # many ties
    out, idx = create_pool("adaptive_max", output_size=(4, 3), return_indices=True)(x)
    ref, ref_idx = F.adaptive_max_pool2d(x, (4, 3), return_indices=True)
    assert torch.equal(out, ref)
    assert torch.equal(idx, ref_idx)


def test_nan_wins_and_index_matches_torch() -> None:
    x = torch.randn(1, 2, 9, 10)
    for r, c in [(1, 1), (2, 3), (7, 8), (8, 9)]:
        x[0, 0, r, c] = float("nan")
    out, idx = create_pool("adaptive_max", output_size=(4, 3), return_indices=True)(x)
    ref, ref_idx = F.adaptive_max_pool2d(x, (4, 3), return_indices=True)
    assert torch.equal(out.isnan(), ref.isnan())
    assert out.isnan().any()
    torch.testing.assert_close(out, ref, equal_nan=True)
    assert torch.equal(idx, ref_idx)


def test_indices_point_at_the_values() -> None:
    x = torch.randn(2, 3, 11, 7)
    out, idx = create_pool("adaptive_max", output_size=(4, 5), return_indices=True)(x)
    assert idx.dtype == torch.int64
    assert torch.equal(x.flatten(2).gather(2, idx.flatten(2)).reshape_as(out), out)


@settings(max_examples=50, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    oh=st.one_of(st.none(), st.integers(-1, 15)),
    ow=st.one_of(st.none(), st.integers(-1, 15)),
)
def test_adaptive_property(h: int, w: int, oh: int | None, ow: int | None) -> None:
    """Valid sizes give torch's values, indices and shape; others raise PoolParamError."""
    x = torch.randn(1, 2, h, w)
    size: Any = (oh, ow)  # torch's stubs omit the null entries its runtime accepts
    if any(s is not None and s <= 0 for s in size):
        with pytest.raises(PoolParamError):
            create_pool("adaptive_max", output_size=size)
        return
    out, idx = create_pool("adaptive_max", output_size=size, return_indices=True)(x)
    ref, ref_idx = F.adaptive_max_pool2d(x, size, return_indices=True)
    assert torch.equal(out, ref)
    assert torch.equal(idx, ref_idx)
    avg = create_pool("adaptive_avg", output_size=size)(x)
    torch.testing.assert_close(avg, F.adaptive_avg_pool2d(x, size))


@pytest.mark.parametrize(
    ("size", "fragment"),
    [
        (0, "output_size entries must be > 0"),
        (-2, "output_size entries must be > 0"),
        ((3, 0), "output_size entries must be > 0"),
        ((1, 2, 3), "output_size"),
        ("big", "output_size"),
        (True, "output_size"),
    ],
)
def test_bad_output_size_raises_library_error(size: Any, fragment: str) -> None:
    for name in ("adaptive_avg", "adaptive_max", "avgmax_add", "avgmax_cat"):
        with pytest.raises(PoolParamError, match=fragment):
            create_pool(name, output_size=size)


def test_output_size_is_required_for_adaptive_ops() -> None:
    with pytest.raises(PoolParamError, match="output_size"):
        create_pool("adaptive_avg")


@pytest.mark.parametrize(
    "name", ["adaptive_avg", "adaptive_max", "global_avg", "global_max", "avgmax_add", "avgmax_cat"]
)
def test_bad_input_raises_library_error(name: str) -> None:
    kw = {"output_size": 2} if name.startswith("adaptive") else {}
    pool = create_pool(name, **kw)
    with pytest.raises(PoolInputError, match="4-D"):
        pool(torch.randn(3, 5, 5))
    with pytest.raises(PoolInputError, match="> 0"):
        pool(torch.randn(0, 3, 5, 5))
    with pytest.raises(PoolInputError, match="floating-point"):
        pool(torch.ones(1, 2, 5, 5, dtype=torch.int64))


def test_params_are_hashable_and_normalised() -> None:
    a = parse_params("adaptive_avg", output_size=3)
    b = parse_params("adaptive_avg", output_size=[3, 3])
    assert a == b
    assert hash(a) == hash(b)
    assert AdaptiveParams(output_size=(None, 5)).output_shape((2, 3, 7, 9)) == (2, 3, 7, 5)


def test_global_pools_match_torch_and_closed_form() -> None:
    x = torch.randn(2, 5, 7, 9)
    avg, mx = create_pool("global_avg")(x), create_pool("global_max")(x)
    assert avg.shape == mx.shape == (2, 5, 1, 1)
    torch.testing.assert_close(avg, F.adaptive_avg_pool2d(x, 1))
    assert torch.equal(mx, F.adaptive_max_pool2d(x, 1))
    plane = arange_plane(4, 4)  # 0..15
    assert create_pool("global_avg")(plane).item() == 7.5
    assert create_pool("global_max")(plane).item() == 15.0


def test_global_pools_take_no_params() -> None:
    with pytest.raises(
        PoolParamError, match=r"unknown field\(s\) \(not echoed\); the fields are: none"
    ):
        create_pool("global_max", kernel_size=3)


@pytest.mark.parametrize(("h", "w", "size"), [(7, 7, 1), (13, 13, 3), (5, 6, (2, None))])
def test_avgmax_add_matches_torch(h: int, w: int, size: Any) -> None:
    x = torch.randn(2, 3, h, w)
    out = create_pool("avgmax_add", output_size=size)(x)
    ref = 0.5 * (F.adaptive_avg_pool2d(x, size) + F.adaptive_max_pool2d(x, size))
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize(("h", "w", "size"), [(7, 7, 1), (13, 13, 3), (5, 6, (2, None))])
def test_avgmax_cat_is_avg_then_max(h: int, w: int, size: Any) -> None:
    x = torch.randn(2, 3, h, w)
    out = create_pool("avgmax_cat", output_size=size)(x)
    avg, mx = F.adaptive_avg_pool2d(x, size), F.adaptive_max_pool2d(x, size)
    assert out.shape == (2, 6, *avg.shape[-2:])
    torch.testing.assert_close(out[:, :3], avg)
    assert torch.equal(out[:, 3:], mx)


def test_avgmax_defaults_to_global() -> None:
    x = torch.randn(2, 4, 6, 5)
    add, cat = create_pool("avgmax_add")(x), create_pool("avgmax_cat")(x)
    mean, amax = x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    torch.testing.assert_close(add, 0.5 * (mean + amax))
    torch.testing.assert_close(cat, torch.cat([mean, amax], 1))
    assert parse_params("avgmax_cat").output_shape((2, 4, 6, 5)) == (2, 8, 1, 1)
