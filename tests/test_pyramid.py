"""spp, yolo_spp and sppf against torch's built-in pools, closed forms and the SPPF identity."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolInputError, PoolParamError, create_pool, parse_params


def spp_reference(x: torch.Tensor, levels: list[int], mode: str) -> torch.Tensor:
    pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    return torch.cat([pool(x, level).flatten(1) for level in levels], dim=1)


def yolo_reference(x: torch.Tensor, kernels: list[int]) -> torch.Tensor:
    return torch.cat([x, *(F.max_pool2d(x, k, 1, k // 2) for k in kernels)], dim=1)


@pytest.mark.parametrize(("h", "w"), [(1, 1), (3, 5), (7, 7), (13, 13), (20, 17)])
def test_spp_length_does_not_depend_on_input_size(h: int, w: int) -> None:
    out = create_pool("spp")(torch.randn(2, 3, h, w))
    assert out.shape == (2, 3 * (1 + 4 + 16))


def test_spp_paper_four_level_pyramid_length() -> None:
    # SPPNet: the {6x6, 3x3, 2x2, 1x1} pyramid has 50 bins; on 256 conv5 filters that is
    # a 12800-d vector whatever the image size.
    pool = create_pool("spp", levels=[6, 3, 2, 1])
    for h, w in [(13, 13), (10, 17)]:
        assert pool(torch.randn(1, 256, h, w)).shape == (1, 12800)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize(("h", "w"), [(13, 13), (7, 9), (3, 3), (12, 8)])
def test_spp_matches_torch_adaptive_flatten_cat(mode: str, h: int, w: int) -> None:
    x = torch.randn(2, 4, h, w, dtype=torch.float64)
    out = create_pool("spp", levels=[1, 2, 4], mode=mode)(x)
    torch.testing.assert_close(out, spp_reference(x, [1, 2, 4], mode))


def test_spp_is_channel_major_and_keeps_level_order() -> None:
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(1, 2, 4, 4)
    # Level 1: each channel's max; level 2: channel 0's 2x2 grid, then channel 1's.
    expected = [15, 31, 5, 7, 13, 15, 21, 23, 29, 31]
    assert create_pool("spp", levels=[1, 2])(x).tolist() == [expected]
    reordered = expected[2:] + expected[:2]
    assert create_pool("spp", levels=[2, 1])(x).tolist() == [reordered]


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(levels=[]), "at least one level"),
        (dict(levels=[0]), "every level must be > 0"),
        (dict(levels=[2, -1]), "every level must be > 0"),
        (dict(mode="min"), "mode"),
        (dict(levels="abc"), "levels"),
        (dict(bins=3), r"unknown field\(s\) \(not echoed\).*levels"),
    ],
)
def test_spp_bad_params(kw: dict, fragment: str) -> None:
    with pytest.raises(PoolParamError, match=fragment):
        create_pool("spp", **kw)


@pytest.mark.parametrize("name", ["spp", "yolo_spp", "sppf"])
def test_bad_input_raises_library_error(name: str) -> None:
    pool = create_pool(name)
    with pytest.raises(PoolInputError, match="4-D"):
        pool(torch.randn(3, 5))
    with pytest.raises(PoolInputError, match="> 0"):
        pool(torch.randn(1, 3, 0, 5))
    with pytest.raises(PoolInputError, match="floating-point"):
        pool(torch.ones(1, 2, 5, 5, dtype=torch.int32))


@settings(max_examples=50, deadline=None)
@given(
    h=st.integers(1, 10),
    w=st.integers(1, 10),
    levels=st.lists(st.integers(-1, 5), max_size=3),
    mode=st.sampled_from(["max", "avg"]),
)
def test_spp_property(h: int, w: int, levels: list[int], mode: str) -> None:
    """Valid levels give (N, C * sum(l^2)) and torch's numbers; others raise PoolParamError."""
    if not levels or min(levels) <= 0:
        with pytest.raises(PoolParamError):
            create_pool("spp", levels=levels, mode=mode)
        return
    x = torch.randn(2, 3, h, w)
    out = create_pool("spp", levels=levels, mode=mode)(x)
    assert out.shape == (2, 3 * sum(level * level for level in levels))
    torch.testing.assert_close(out, spp_reference(x, levels, mode))


@pytest.mark.parametrize(("h", "w"), [(13, 13), (20, 16), (3, 3), (1, 2)])
def test_yolo_spp_matches_torch_max_pools(h: int, w: int) -> None:
    x = torch.randn(2, 3, h, w)
    out = create_pool("yolo_spp")(x)
    assert out.shape == (2, 12, h, w)
    assert torch.equal(out, yolo_reference(x, [5, 9, 13]))
    custom = create_pool("yolo_spp", kernel_sizes=[3, 7])(x)
    assert torch.equal(custom, yolo_reference(x, [3, 7]))


@pytest.mark.parametrize(("h", "w"), [(13, 13), (20, 16), (3, 3), (1, 2)])
def test_sppf_matches_chained_torch_max_pools(h: int, w: int) -> None:
    x = torch.randn(2, 3, h, w)
    y1 = F.max_pool2d(x, 5, 1, 2)
    y2 = F.max_pool2d(y1, 5, 1, 2)
    y3 = F.max_pool2d(y2, 5, 1, 2)
    assert torch.equal(create_pool("sppf")(x), torch.cat([x, y1, y2, y3], dim=1))


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize(("h", "w"), [(13, 13), (8, 11), (2, 3)])
def test_sppf_equals_yolo_spp_with_grown_kernels(k: int, h: int, w: int) -> None:
    x = torch.randn(2, 3, h, w)
    sppf = create_pool("sppf", kernel_size=k)(x)
    spp = create_pool("yolo_spp", kernel_sizes=[k, 2 * k - 1, 3 * k - 2])(x)
    assert torch.equal(sppf, spp)


def test_sppf_default_equals_yolo_spp_default() -> None:
    x = torch.randn(1, 4, 19, 19)
    assert torch.equal(create_pool("sppf")(x), create_pool("yolo_spp")(x))


@pytest.mark.parametrize(
    ("name", "kw", "fragment"),
    [
        ("yolo_spp", dict(kernel_sizes=[]), "at least one kernel"),
        ("yolo_spp", dict(kernel_sizes=[5, 8]), "must be odd and > 0"),
        ("yolo_spp", dict(kernel_sizes=[-3]), "must be odd and > 0"),
        ("sppf", dict(kernel_size=4), "must be odd and > 0"),
        ("sppf", dict(kernel_size=0), "must be odd and > 0"),
        ("sppf", dict(kernel_size=[5, 5]), "kernel_size"),
    ],
)
def test_yolo_bad_params(name: str, kw: dict, fragment: str) -> None:
    with pytest.raises(PoolParamError, match=fragment):
        create_pool(name, **kw)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    kernels=st.lists(st.integers(-2, 9), max_size=3),
)
def test_yolo_spp_property(h: int, w: int, kernels: list[int]) -> None:
    """Odd positive kernels give (N, (1 + len) C, H, W) and torch's numbers; others raise."""
    if not kernels or any(k <= 0 or k % 2 == 0 for k in kernels):
        with pytest.raises(PoolParamError):
            create_pool("yolo_spp", kernel_sizes=kernels)
        return
    x = torch.randn(1, 2, h, w)
    out = create_pool("yolo_spp", kernel_sizes=kernels)(x)
    assert out.shape == (1, 2 * (1 + len(kernels)), h, w)
    assert torch.equal(out, yolo_reference(x, kernels))


def test_output_shape_methods() -> None:
    assert parse_params("spp", levels=[3, 1]).output_shape((4, 8, 30, 2)) == (4, 80)
    assert parse_params("yolo_spp").output_shape((1, 8, 7, 5)) == (1, 32, 7, 5)
    assert parse_params("sppf", kernel_size=3).output_shape((1, 8, 7, 5)) == (1, 32, 7, 5)
    assert hash(parse_params("spp", levels=[1, 2])) == hash(parse_params("spp", levels=(1, 2)))
