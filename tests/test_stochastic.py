"""stochastic: expectation against a plain loop; sample mode's determinism, support and
frequencies."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolParamError, create_pool
from models.pooling.stochastic import StochasticParams
from tests.reference import window_grid


def windows(x, k, s, pads, d, ceil):
    """{(i, j): [values]} of each window of a (1, 1, H, W) tensor; padding and the ceil_mode
    overhang are left out (they are zeros, which never count)."""
    H, W = x.shape[-2:]
    hw, taps = window_grid(H, W, k, s, pads, d, ceil)
    found = {
        ij: [x[0, 0, r, c].item() for r in rows for c in cols if 0 <= r < H and 0 <= c < W]
        for ij, (rows, cols) in taps.items()
    }
    return found, hw


def loop_expectation(vals):
    """Zeiler & Fergus test-time rule on relu(a): sum p_i a_i with p_i = a_i / sum a."""
    a = [max(v, 0.0) for v in vals]
    total = sum(a)
    return 0.0 if total == 0 else sum((ai / total) * ai for ai in a)


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=(2, 3), stride=(1, 2), padding=(0, 1, 1, 0), ceil_mode=True),
        dict(kernel_size=3, stride=2, dilation=2, ceil_mode=True),
    ],
)
def test_expectation_matches_loop(kw: dict) -> None:
    x = torch.randn(1, 1, 9, 10, dtype=torch.float64)  # about half negative
    p = StochasticParams(**kw)
    wins, hw = windows(x, p.kernel_size, p.strides, p.padding, p.dilation, p.ceil_mode)
    out = create_pool("stochastic", **kw)(x)
    assert out.shape == (1, 1, *hw)
    for (i, j), vals in wins.items():
        assert out[0, 0, i, j].item() == pytest.approx(loop_expectation(vals), abs=1e-12)


def test_expectation_worked_example() -> None:
    # Window [1, 3]: p = (1/4, 3/4), so 1/4 + 9/4 = 2.5; [2, 0]: 2; [0, 0] and [-1, -2]: 0.
    x = torch.tensor([[[[1.0, 3.0, 2.0, 0.0, 0.0, 0.0, -1.0, -2.0]]]])
    out = create_pool("stochastic", kernel_size=(1, 2))(x)
    assert out.flatten().tolist() == [2.5, 2.0, 0.0, 0.0]


def test_sample_is_deterministic_per_seed() -> None:
    x = torch.rand(2, 3, 12, 12)
    pool = create_pool("stochastic", kernel_size=3, mode="sample", seed=7)
    assert torch.equal(pool(x), pool(x))
    other = create_pool("stochastic", kernel_size=3, mode="sample", seed=8)(x)
    assert not torch.equal(pool(x), other)


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=(2, 3), padding=(1, 0, 0, 1), ceil_mode=True),
        dict(kernel_size=2, stride=1, dilation=2),
    ],
)
def test_sample_is_a_positive_window_value_or_zero(kw: dict) -> None:
    x = torch.randn(1, 1, 9, 10)
    x[0, 0, :3, :3] = 0.0  # some all-zero windows
    p = StochasticParams(**kw)
    wins, _ = windows(x, p.kernel_size, p.strides, p.padding, p.dilation, p.ceil_mode)
    for seed in range(5):
        out = create_pool("stochastic", mode="sample", seed=seed, **kw)(x)
        for (i, j), vals in wins.items():
            positive = [v for v in vals if v > 0]
            assert out[0, 0, i, j].item() in (positive or [0.0])


def test_windows_without_positive_values_give_zero_in_both_modes() -> None:
    x = torch.zeros(1, 2, 4, 4)
    x[0, 1] = -torch.rand(4, 4) - 0.5
    for mode in ("expectation", "sample"):
        out = create_pool("stochastic", kernel_size=2, mode=mode)(x)
        assert torch.equal(out, torch.zeros(1, 2, 2, 2)), mode


def test_sample_frequencies_follow_p() -> None:
    """Window [1, 3] draws 3 with p = 3/4; window [1, 0, 2, -5] draws 1 and 2 as 1/3, 2/3."""
    n = 20000  # binomial sd for 3/4 is 0.003, so a 0.02 band is > 6 sd
    pair = torch.tensor([1.0, 3.0]).repeat(n).reshape(1, 1, 1, 2 * n)
    quad = torch.tensor([1.0, 0.0, 2.0, -5.0]).repeat(n).reshape(1, 1, 1, 4 * n)
    for seed in (0, 1, 2):
        got = create_pool("stochastic", kernel_size=(1, 2), mode="sample", seed=seed)(pair)
        assert abs((got == 3.0).float().mean().item() - 0.75) < 0.02
        got = create_pool("stochastic", kernel_size=(1, 4), mode="sample", seed=seed)(quad)
        assert set(got.unique().tolist()) == {1.0, 2.0}
        assert abs((got == 2.0).float().mean().item() - 2 / 3) < 0.02


def test_half_precision_does_not_overflow() -> None:
    x = torch.full((1, 1, 2, 2), 300.0, dtype=torch.float16)  # 300**2 > float16 max
    out = create_pool("stochastic", kernel_size=2)(x)
    assert out.dtype == torch.float16
    assert out.item() == 300.0


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(kernel_size=2, mode="max"), "mode"),
        (dict(kernel_size=2, seed=-1), "seed must be in"),
        (dict(kernel_size=2, seed=2**63), "must fit in int64"),
        (dict(kernel_size=2, padding=2), "at most half the kernel"),
    ],
)
def test_bad_params(kw: dict, fragment: str) -> None:
    with pytest.raises(PoolParamError, match=fragment):
        create_pool("stochastic", **kw)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.integers(0, 4),
    s=st.integers(0, 3),
    pad=st.integers(0, 2),
    ceil=st.booleans(),
    mode=st.sampled_from(["expectation", "sample"]),
)
def test_property_shape(h, w, k, s, pad, ceil, mode) -> None:
    """Valid params give avg pooling's shape; the rest raise PoolError, never a torch error."""
    x = torch.rand(1, 2, h, w)
    kw = dict(kernel_size=k, stride=s, padding=pad, ceil_mode=ceil)
    try:
        out = create_pool("stochastic", mode=mode, **kw)(x)
    except PoolError:
        return
    assert out.shape == F.avg_pool2d(x, **kw).shape
    assert torch.isfinite(out).all()
