"""mixed against torch's max/avg pools and a plain-loop reference."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolParamError, create_pool
from tests.reference import loop_window_pool


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
    ],
)
def test_matches_torch_combination(alpha: float, kw: dict) -> None:
    x = torch.randn(2, 3, 11, 10)
    out = create_pool("mixed", alpha=alpha, **kw)(x)
    cip = kw.pop("count_include_pad", True)
    ref = alpha * F.max_pool2d(x, **kw) + (1 - alpha) * F.avg_pool2d(x, count_include_pad=cip, **kw)
    torch.testing.assert_close(out, ref)


def test_alpha_one_is_max_and_zero_is_avg_exactly() -> None:
    x = torch.randn(1, 2, 9, 9)
    x[0, 0, 0, 0] = float("inf")  # 0 * inf would be NaN if the unused half were mixed in
    kw = dict(kernel_size=3, stride=2, padding=1)
    assert torch.equal(create_pool("mixed", alpha=1, **kw)(x), F.max_pool2d(x, 3, 2, 1))
    assert torch.equal(create_pool("mixed", alpha=0, **kw)(x), F.avg_pool2d(x, 3, 2, 1))


def test_default_alpha_is_half() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])  # max 6, mean 3
    assert create_pool("mixed", kernel_size=2)(x).item() == 4.5


def loop_mixed(x, k, s, pads, d, ceil, alpha, cip):
    """alpha * max + (1 - alpha) * mean over each window, from the plain-loop max and avg
    (the mean divides by the window clipped to the padded input, or by the input positions
    it covers; max ignores padding)."""
    mx = loop_window_pool(x, k, s, pads, d, ceil, "max")
    return alpha * mx + (1 - alpha) * loop_window_pool(x, k, s, pads, d, ceil, "avg", cip)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(2, 8),  # >= 2: no dilated window misses the input entirely
    w=st.integers(2, 8),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    ceil=st.booleans(),
    cip=st.booleans(),
    alpha=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_matches_loop_reference(h, w, k, s, d, pads, ceil, cip, alpha) -> None:
    x = torch.randn(1, 2, h, w, dtype=torch.float64)
    kw = dict(kernel_size=k, stride=s, padding=pads, dilation=d, ceil_mode=ceil)
    try:
        out = create_pool("mixed", alpha=alpha, count_include_pad=cip, **kw)(x)
    except PoolError:
        return
    torch.testing.assert_close(out, loop_mixed(x, k, s, pads, d, ceil, alpha, cip))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "half"])
def test_alpha_outside_unit_interval_is_refused(alpha: object) -> None:
    with pytest.raises(PoolParamError, match="alpha"):
        create_pool("mixed", kernel_size=2, alpha=alpha)


@settings(max_examples=50, deadline=None)
@given(
    h=st.integers(1, 10),
    w=st.integers(1, 10),
    k=st.integers(-1, 5),
    s=st.integers(0, 3),
    pad=st.integers(0, 3),
    ceil=st.booleans(),
)
def test_property_shape(h, w, k, s, pad, ceil) -> None:
    """Valid params give torch's shape; anything else is the library's error, never a crash."""
    x = torch.randn(1, 2, h, w)
    try:
        out = create_pool("mixed", kernel_size=k, stride=s, padding=pad, ceil_mode=ceil)(x)
    except PoolError:
        return
    assert out.shape == F.max_pool2d(x, k, s, pad, ceil_mode=ceil).shape
