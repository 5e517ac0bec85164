"""softpool against a plain loop of the paper's formula, a closed form at magnitude 1000 and
its identities."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolParamError, create_pool
from models.pooling.softpool import SoftParams
from tests.reference import window_grid


def loop_softpool(x, k, s, pads, ceil):
    """sum_i e^{a_i} a_i / sum_i e^{a_i} over the input values of each window (padding and the
    ceil_mode overhang excluded). Every e^{a_i} is divided by e^{max a} (the ratio is unchanged)
    so that math.exp cannot overflow."""
    H, W = x.shape[-2:]
    (oh, ow), taps = window_grid(H, W, k, s, pads, (1, 1), ceil)
    out = torch.empty(*x.shape[:2], oh, ow, dtype=x.dtype)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for (i, j), (rows, cols) in taps.items():
                vals = [
                    x[n, c, r, q].item() for r in rows for q in cols if 0 <= r < H and 0 <= q < W
                ]
                weights = [math.exp(v - max(vals)) for v in vals]
                weighted = sum(wt * v for wt, v in zip(weights, vals, strict=True))
                out[n, c, i, j] = weighted / sum(weights)
    return out


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=(2, 3), stride=(1, 2), padding=(0, 1, 1, 0)),
        dict(kernel_size=3, stride=2, ceil_mode=True),
        dict(kernel_size=(3, 2), stride=2, padding=(1, 1, 1, 0), ceil_mode=True),
    ],
)
def test_matches_loop_reference(kw: dict) -> None:
    x = torch.randn(2, 2, 7, 8, dtype=torch.float64) * 3
    p = SoftParams(**kw)
    ref = loop_softpool(x, p.kernel_size, p.strides, p.padding, p.ceil_mode)
    torch.testing.assert_close(create_pool("softpool", **kw)(x), ref)


def test_stable_at_magnitude_1000() -> None:
    # [1000, 999]: weights 1/(1+e^-1) and e^-1/(1+e^-1), so the output is 1000 - sigmoid(-1).
    x = torch.tensor([[[[1000.0, 999.0, -1000.0, -1000.0, 1000.0, -1000.0]]]])
    out = create_pool("softpool", kernel_size=(1, 2))(x).flatten()
    expect = [1000.0 - 1 / (1 + math.e), -1000.0, 1000.0]
    torch.testing.assert_close(out, torch.tensor(expect))


def test_stable_on_large_random_input() -> None:
    x = torch.randn(1, 3, 8, 8) * 1000
    out = create_pool("softpool", kernel_size=3, stride=1, padding=1)(x)
    assert torch.isfinite(out).all()
    ref = loop_softpool(x.double(), (3, 3), (1, 1), (1, 1, 1, 1), False)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-3)


def test_constant_window_gives_the_constant() -> None:
    x = torch.full((1, 2, 4, 6), -2.5)
    out = create_pool("softpool", kernel_size=3, stride=1, padding=1, ceil_mode=True)(x)
    torch.testing.assert_close(out, torch.full((1, 2, 4, 6), -2.5))


@settings(max_examples=30, deadline=None)
@given(
    scale=st.sampled_from([1e-3, 1.0, 50.0, 1e4]),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    pad=st.integers(0, 2),
    ceil=st.booleans(),
)
def test_output_lies_between_window_min_and_max(scale, k, s, pad, ceil) -> None:
    x = torch.randn(1, 2, 9, 9) * scale
    try:
        out = create_pool("softpool", kernel_size=k, stride=s, padding=pad, ceil_mode=ceil)(x)
    except PoolError:
        return
    hi = F.max_pool2d(x, k, s, pad, ceil_mode=ceil)
    lo = -F.max_pool2d(-x, k, s, pad, ceil_mode=ceil)
    slack = 1e-5 * scale
    assert (out <= hi + slack).all()
    assert (out >= lo - slack).all()


def test_bad_params() -> None:
    with pytest.raises(PoolParamError, match="does not support dilation"):
        create_pool("softpool", kernel_size=2, dilation=2)
    with pytest.raises(PoolParamError, match="at most half the kernel"):
        create_pool("softpool", kernel_size=2, padding=2)


@settings(max_examples=50, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.tuples(st.integers(0, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(0, 3), st.integers(1, 3)),
    pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    ceil=st.booleans(),
)
def test_property_shape(h, w, k, s, pad, ceil) -> None:
    """Valid params give max pooling's shape; the rest raise PoolError, never a torch error."""
    x = torch.randn(1, 2, h, w)
    kw = dict(kernel_size=k, stride=s, padding=pad, ceil_mode=ceil)
    try:
        out = create_pool("softpool", **kw)(x)
    except PoolError:
        return
    assert out.shape == F.max_pool2d(x, **kw).shape
    assert torch.isfinite(out).all()
