"""median against a plain-loop lower median and torch.median."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolInputError, PoolParamError, create_pool
from models.pooling.median import MedianParams
from tests.reference import window_grid


def padded_value(plane, r, c, mode):
    """Value at (r, c) of the plane padded by `mode`; r, c may lie outside the plane."""
    H, W = len(plane), len(plane[0])

    def fold(i, n):
        if mode == "reflect":
            return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)
        return min(max(i, 0), n - 1)  # replicate

    if mode == "zeros":
        return plane[r][c] if 0 <= r < H and 0 <= c < W else 0.0
    return plane[fold(r, H)][fold(c, W)]


def loop_median(x, k, s, pads, d, ceil, mode):
    """Lower median (sorted(v)[(n-1)//2]) of each window; positions past the padded input
    (ceil_mode overhang) are not part of the window."""
    _, right, _, bottom = pads
    H, W = x.shape[-2:]
    (oh, ow), taps = window_grid(H, W, k, s, pads, d, ceil)
    out = torch.empty(*x.shape[:2], oh, ow, dtype=x.dtype)
    for n in range(x.shape[0]):
        for ch in range(x.shape[1]):
            plane = x[n, ch].tolist()
            for (i, j), (rows, cols) in taps.items():
                vals = [
                    padded_value(plane, r, c, mode)
                    for r in rows
                    for c in cols
                    if r < H + bottom and c < W + right
                ]
                out[n, ch, i, j] = sorted(vals)[(len(vals) - 1) // 2]
    return out


def test_worked_example_3x3_filter_on_arange() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = create_pool("median", kernel_size=3, stride=1)(x)
    assert out.tolist() == [[[[5.0, 6.0], [9.0, 10.0]]]]  # the centre of each 3x3 block


def test_even_window_gives_lower_median() -> None:
    x = torch.tensor([[[[1.0, 9.0, 2.0, 7.0]]]])
    assert create_pool("median", kernel_size=(1, 4))(x).item() == 2.0  # sorted 1,2,7,9


@pytest.mark.parametrize("mode", ["reflect", "replicate", "zeros"])
@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, stride=1, padding=1),
        dict(kernel_size=2, stride=1, padding=(0, 1, 0, 1)),
        dict(kernel_size=(2, 4), stride=(1, 2), padding=(1, 2)),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        dict(kernel_size=(4, 3), stride=3, padding=(1, 1, 2, 0), dilation=(1, 2), ceil_mode=True),
    ],
)
def test_matches_loop_reference(mode: str, kw: dict) -> None:
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    p = MedianParams(**kw)
    ref = loop_median(x, p.kernel_size, p.strides, p.padding, p.dilation, p.ceil_mode, mode)
    out = create_pool("median", padding_mode=mode, **kw)(x)
    assert torch.equal(out, ref)


def test_padding_modes_differ_at_the_border() -> None:
    x = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    kw = dict(kernel_size=(1, 3), stride=1, padding=(1, 1, 0, 0))
    # Left windows: reflect [2,1,2] -> 2, replicate [1,1,2] -> 1, zeros [0,1,2] -> 1.
    # Right windows: reflect [2,3,2] -> 2, replicate [2,3,3] -> 3, zeros [2,3,0] -> 2.
    expect = {"reflect": [2, 2, 2], "replicate": [1, 2, 3], "zeros": [1, 2, 2]}
    for mode, row in expect.items():
        assert create_pool("median", padding_mode=mode, **kw)(x).flatten().tolist() == row


def test_matches_torch_median_including_nan() -> None:
    x = torch.randn(2, 2, 6, 8)
    x[0, 1, 2, 3] = float("nan")
    out = create_pool("median", kernel_size=2, stride=2)(x)
    ref = x.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2).median(dim=-1).values
    torch.testing.assert_close(out, ref, equal_nan=True)
    assert out[0, 1, 1, 1].isnan()
    assert not out[0, 0].isnan().any()


def test_default_stride_is_kernel_size() -> None:
    out = create_pool("median", kernel_size=3)(torch.randn(1, 1, 9, 9))
    assert out.shape == (1, 1, 3, 3)


def test_reflect_padding_must_be_smaller_than_input() -> None:
    pool = create_pool("median", kernel_size=(3, 5), padding=(1, 2))  # pads W by 2
    with pytest.raises(PoolInputError, match="padding_mode='replicate'"):
        pool(torch.randn(1, 1, 4, 2))
    out = create_pool("median", kernel_size=(3, 5), padding=(1, 2), padding_mode="replicate")(
        torch.randn(1, 1, 4, 2)
    )
    assert out.shape == (1, 1, 2, 1)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(kernel_size=3, padding_mode="circular"), "padding_mode"),
        (dict(kernel_size=3, padding=2), "at most half the kernel"),
        (dict(kernel_size=0), "kernel_size must be > 0"),
    ],
)
def test_bad_params(kw: dict, fragment: str) -> None:
    with pytest.raises(PoolParamError, match=fragment):
        create_pool("median", **kw)


def test_integer_input_is_refused() -> None:
    with pytest.raises(PoolInputError, match="floating-point"):
        create_pool("median", kernel_size=2)(torch.ones(1, 1, 4, 4, dtype=torch.int64))


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    k=st.tuples(st.integers(0, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    ceil=st.booleans(),
    mode=st.sampled_from(["reflect", "replicate", "zeros"]),
)
def test_property_shape_and_values(h, w, k, s, d, pads, ceil, mode) -> None:
    """Valid params give the loop reference's shape and values; the rest raise PoolError."""
    x = torch.randn(1, 2, h, w, dtype=torch.float64)
    kw = dict(kernel_size=k, stride=s, padding=pads, dilation=d, ceil_mode=ceil)
    try:
        out = create_pool("median", padding_mode=mode, **kw)(x)
    except PoolError:
        return
    assert out.shape[:2] == (1, 2)
    assert torch.equal(out, loop_median(x, k, s, pads, d, ceil, mode))
