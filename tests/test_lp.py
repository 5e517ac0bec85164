"""lp against F.lp_pool2d, closed forms (p=1 sum, p=2 L2 norm, p=inf max|x|) and torch's
ceil_mode scaling."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolInputError, PoolParamError, create_pool

UNKNOWN = r"unknown field\(s\) \(not echoed\)"


def loop_windows(x, k, s):
    """Yield (i, j, values) for each floor-mode window of a (1, 1, H, W) tensor."""
    (kh, kw), (sh, sw) = k, s
    H, W = x.shape[-2:]
    for i in range((H - kh) // sh + 1):
        for j in range((W - kw) // sw + 1):
            yield i, j, x[0, 0, i * sh : i * sh + kh, j * sw : j * sw + kw].flatten().tolist()


@pytest.mark.parametrize(
    "kw",
    [
        dict(norm_type=2, kernel_size=2),
        dict(norm_type=3, kernel_size=3, stride=2),
        dict(norm_type=1.5, kernel_size=(2, 3), stride=(1, 2)),
        dict(norm_type=2, kernel_size=(3, 2), stride=2, ceil_mode=True),
        dict(norm_type=4, kernel_size=3, stride=(2, 3), ceil_mode=True),
        dict(norm_type=math.inf, kernel_size=(2, 3), ceil_mode=True),
    ],
)
def test_matches_torch_lp_pool2d(kw: dict) -> None:
    x = torch.rand(2, 3, 11, 13) + 0.1  # positive: fractional powers stay real
    ref = F.lp_pool2d(
        x, kw["norm_type"], kw["kernel_size"], kw.get("stride"), kw.get("ceil_mode", False)
    )
    torch.testing.assert_close(create_pool("lp", **kw)(x), ref)


def test_p1_is_sum_pooling_and_p2_is_window_l2_norm() -> None:
    x = torch.randn(1, 1, 7, 8, dtype=torch.float64)
    k, s = (2, 3), (2, 2)
    p1 = create_pool("lp", norm_type=1, kernel_size=k, stride=s)(x)
    p2 = create_pool("lp", norm_type=2, kernel_size=k, stride=s)(x)
    assert p1.shape == p2.shape == (1, 1, 3, 3)
    for i, j, vals in loop_windows(x, k, s):
        assert p1[0, 0, i, j].item() == pytest.approx(sum(vals), abs=1e-12)
        assert p2[0, 0, i, j].item() == pytest.approx(math.sqrt(sum(v * v for v in vals)))


def test_inf_is_max_of_abs() -> None:
    x = torch.randn(1, 1, 6, 6)
    out = create_pool("lp", norm_type="inf", kernel_size=3)(x)
    for i, j, vals in loop_windows(x, (3, 3), (3, 3)):
        assert out[0, 0, i, j].item() == max(abs(v) for v in vals)


def test_ceil_mode_scales_partial_windows_like_torch() -> None:
    """torch's rule, kept on purpose: mean of x**p over the covered part times the full area."""
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # 1..9
    out = create_pool("lp", norm_type=1, kernel_size=2, ceil_mode=True)(x)
    # Full window 1+2+4+5 = 12; partial windows (3+6)*4/2, (7+8)*4/2, 9*4/1.
    assert out.tolist() == [[[[12.0, 18.0], [30.0, 36.0]]]]


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(norm_type=0, kernel_size=2), "norm_type must be > 0"),
        (dict(norm_type=-2, kernel_size=2), "norm_type must be > 0"),
        (dict(norm_type=float("nan"), kernel_size=2), "norm_type must be > 0"),
        (dict(norm_type="-inf", kernel_size=2), "norm_type must be > 0"),
        (dict(norm_type=2, kernel_size=(0, 2)), "kernel_size must be > 0"),
        (dict(norm_type=2, kernel_size=2, stride=0), "stride must be > 0"),
        (
            dict(norm_type=2, kernel_size=2, padding=1),
            r"unknown field\(s\) \(not echoed\).*: kernel_size, stride",
        ),
        (dict(norm_type=2, kernel_size=2, dilation=2), r"unknown field\(s\) \(not echoed\)"),
        (dict(kernel_size=2), "norm_type"),
    ],
)
def test_bad_params(kw: dict, fragment: str) -> None:
    with pytest.raises(PoolParamError, match=fragment):
        create_pool("lp", **kw)


def test_bad_inputs() -> None:
    pool = create_pool("lp", norm_type=2, kernel_size=4)
    with pytest.raises(PoolInputError, match="larger than the 3x5 input"):
        pool(torch.randn(1, 1, 3, 5))
    with pytest.raises(PoolInputError, match="4-D NCHW"):
        pool(torch.randn(8, 8))
    with pytest.raises(PoolInputError, match="floating-point"):
        pool(torch.ones(1, 1, 4, 4, dtype=torch.int32))


@settings(max_examples=50, deadline=None)
@given(
    h=st.integers(1, 10),
    w=st.integers(1, 10),
    p=st.sampled_from([-1.0, 0.0, 1.0, 2.0, 3.5, math.inf]),
    k=st.tuples(st.integers(-1, 5), st.integers(1, 5)),
    s=st.tuples(st.integers(0, 3), st.integers(1, 3)),
    ceil=st.booleans(),
)
def test_property_shape(h, w, p, k, s, ceil) -> None:
    """Valid params give F.lp_pool2d's shape and values; the rest raise PoolError."""
    x = torch.rand(1, 2, h, w) + 0.1
    try:
        out = create_pool("lp", norm_type=p, kernel_size=k, stride=s, ceil_mode=ceil)(x)
    except PoolError:
        assert p <= 0 or min(k) <= 0 or min(s) <= 0 or k[0] > h or k[1] > w
        return
    torch.testing.assert_close(out, F.lp_pool2d(x, p, k, s, ceil))
