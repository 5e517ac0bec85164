"""max / avg / min against torch's built-ins and the textbook worked examples."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolParamError, create_pool
from tests.reference import arange_plane, loop_window_pool


def test_d2l_worked_example_max_and_avg() -> None:
    x = arange_plane(3, 3)  # 0..8
    assert create_pool("max", kernel_size=2, stride=1)(x).tolist() == [[[[4, 5], [7, 8]]]]
    assert create_pool("avg", kernel_size=2, stride=1)(x).tolist() == [[[[2, 3], [5, 6]]]]


def test_padding_and_stride_on_4x4_arange() -> None:
    x = arange_plane(4, 4)
    # d2l: 3x3 window, padding 1, stride 2 -> [[5, 7], [13, 15]]
    assert create_pool("max", kernel_size=3, padding=1, stride=2)(x).tolist() == [
        [[[5, 7], [13, 15]]]
    ]
    # d2l: (2, 3) window, padding (0, 1), stride (2, 3) -> [[5, 7], [13, 15]]
    out = create_pool("max", kernel_size=(2, 3), padding=(0, 1), stride=(2, 3))(x)
    assert out.tolist() == [[[[5, 7], [13, 15]]]]


def test_multichannel_keeps_channel_count() -> None:
    x = torch.cat([arange_plane(4, 4), arange_plane(4, 4) + 1], dim=1)
    out = create_pool("max", kernel_size=2)(x)
    assert out.shape == (1, 2, 2, 2)
    assert torch.equal(out[:, 1], out[:, 0] + 1)


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1)),
        dict(kernel_size=2, ceil_mode=True),
        dict(kernel_size=5, stride=3, padding=2, dilation=2, ceil_mode=True),
    ],
)
def test_max_matches_torch(kw: dict) -> None:
    x = torch.randn(2, 3, 13, 11)
    out, idx = create_pool("max", return_indices=True, **kw)(x)
    t = dict(kw)
    t["padding"] = t.get("padding", 0)
    ref, ref_idx = F.max_pool2d(x, return_indices=True, **t)
    assert torch.equal(out, ref)
    assert torch.equal(idx, ref_idx)


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        dict(kernel_size=(2, 3), stride=(1, 2), divisor_override=4),
    ],
)
def test_avg_matches_torch(kw: dict) -> None:
    x = torch.randn(2, 3, 13, 11)
    torch.testing.assert_close(create_pool("avg", **kw)(x), F.avg_pool2d(x, **kw), rtol=0, atol=0)


def test_yolov3_tiny_asymmetric_max_pad() -> None:
    """Stride-1 2x2 max pool padded on the right and bottom keeps H x W (YOLOv3-tiny)."""
    x = torch.randn(1, 4, 13, 13)
    pool = create_pool("max", kernel_size=2, stride=1, padding=(0, 1, 0, 1), return_indices=True)
    out, idx = pool(x)
    ref = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, 1)
    assert out.shape == x.shape
    assert torch.equal(out, ref)
    # Indices point into the unpadded plane.
    assert torch.equal(x.flatten(2).gather(2, idx.flatten(2)).reshape_as(out), out)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(2, 9),
    w=st.integers(2, 9),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    ceil=st.booleans(),
    cip=st.booleans(),
)
def test_asymmetric_padding_matches_loop_reference(h, w, k, s, d, pads, ceil, cip) -> None:
    x = torch.randn(1, 2, h, w, dtype=torch.float64)
    try:
        mx = create_pool("max", kernel_size=k, stride=s, padding=pads, dilation=d, ceil_mode=ceil)
        av = create_pool(
            "avg",
            kernel_size=k,
            stride=s,
            padding=pads,
            dilation=d,
            ceil_mode=ceil,
            count_include_pad=cip,
        )
        out_max, out_avg = mx(x), av(x)
    except PoolError:
        return
    torch.testing.assert_close(out_max, loop_window_pool(x, k, s, pads, d, ceil, "max"))
    torch.testing.assert_close(out_avg, loop_window_pool(x, k, s, pads, d, ceil, "avg", cip))


def test_avg_asymmetric_padding_counts_declared_pad() -> None:
    x = torch.randn(1, 2, 7, 6)
    ours = create_pool("avg", kernel_size=3, stride=1, padding=(1, 0, 0, 1))(x)
    ref = F.avg_pool2d(F.pad(x, (1, 0, 0, 1)), 3, 1)  # zero pad counted, as count_include_pad
    torch.testing.assert_close(ours, ref)
    ours_ex = create_pool(
        "avg", kernel_size=3, stride=1, padding=(1, 0, 0, 1), count_include_pad=False
    )(x)
    ones = torch.ones(1, 1, 7, 6)
    ref_ex = F.avg_pool2d(F.pad(x, (1, 0, 0, 1)), 3, 1) / F.avg_pool2d(
        F.pad(ones, (1, 0, 0, 1)), 3, 1
    )
    torch.testing.assert_close(ours_ex, ref_ex)


def test_avg_dilation_equals_mean_of_dilated_samples() -> None:
    x = torch.randn(1, 1, 9, 9)
    out = create_pool("avg", kernel_size=2, stride=1, dilation=3)(x)
    ref = (x[..., :-3, :-3] + x[..., 3:, :-3] + x[..., :-3, 3:] + x[..., 3:, 3:]) / 4
    torch.testing.assert_close(out, ref)


def test_min_is_negated_max_of_negation() -> None:
    x = torch.randn(2, 3, 10, 10)
    out = create_pool("min", kernel_size=3, stride=2, padding=1)(x)
    assert torch.equal(out, -F.max_pool2d(-x, 3, 2, 1))


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(kernel_size=0), "kernel_size must be > 0"),
        (dict(kernel_size=2, stride=0), "stride must be > 0"),
        (dict(kernel_size=3, padding=2), "at most half the kernel"),
        (dict(kernel_size=2, divisor_override=0), "divisor_override"),
        (dict(kernel_size=2, bogus=1), r"unknown field\(s\) \(not echoed\)"),
    ],
)
def test_bad_params_raise_library_error(kw: dict, fragment: str) -> None:
    with pytest.raises(PoolParamError, match=fragment):
        create_pool("avg", **kw)


def test_window_larger_than_padded_input() -> None:
    with pytest.raises(PoolError, match="larger than the padded input"):
        create_pool("max", kernel_size=5)(torch.randn(1, 1, 3, 3))


def test_unknown_op_names_the_choices() -> None:
    with pytest.raises(PoolError, match="expected one of"):
        create_pool("maxx", kernel_size=2)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    k=st.integers(-1, 6),
    s=st.integers(0, 4),
    pad=st.integers(0, 3),
    d=st.integers(1, 3),
    ceil=st.booleans(),
)
def test_max_shape_property(h: int, w: int, k: int, s: int, pad: int, d: int, ceil: bool) -> None:
    """Valid params give torch's shape; anything else is the library's error, never a crash."""
    x = torch.randn(1, 2, h, w)
    try:
        pool = create_pool("max", kernel_size=k, stride=s, padding=pad, dilation=d, ceil_mode=ceil)
        out = pool(x)
    except PoolError:
        return
    ref = F.max_pool2d(x, k, s, pad, d, ceil)
    assert out.shape == ref.shape
    assert torch.equal(out, ref)
