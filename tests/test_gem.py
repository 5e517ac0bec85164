"""gem against closed forms, cirtorch's avg_pool2d formula and the power-mean limits."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolInputError, PoolParamError, create_pool
from models.pooling.gem import GeMParams, gem_pool


def cirtorch_gem(x: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """cirtorch's formula: an avg pool whose kernel is the whole map."""
    return F.avg_pool2d(x.clamp(min=eps).pow(p), (x.size(-2), x.size(-1))).pow(1.0 / p)


def test_closed_form_on_a_2x2_plane() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    out = create_pool("gem", p=3.0)(x)
    expected = ((1 + 8 + 27 + 64) / 4) ** (1 / 3)
    assert out.shape == (1, 1, 1, 1)
    assert out.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0, 7.5])
def test_matches_cirtorch_formula(p: float) -> None:
    x = torch.randn(2, 4, 7, 5, dtype=torch.float64).relu()  # cirtorch pools ReLU features
    torch.testing.assert_close(create_pool("gem", p=p)(x), cirtorch_gem(x, p))


def test_p1_is_global_average() -> None:
    x = torch.rand(3, 5, 6, 9, dtype=torch.float64) + 1e-6
    torch.testing.assert_close(create_pool("gem", p=1.0)(x), F.adaptive_avg_pool2d(x, 1))


def test_large_p_approaches_max() -> None:
    """Power means grow with p and sit between max * (1/HW)^(1/p) and max."""
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64) + 0.5
    mx = x.amax(dim=(2, 3), keepdim=True)
    previous = torch.zeros_like(mx)
    for p in (1.0, 4.0, 16.0, 64.0, 256.0):
        out = create_pool("gem", p=p)(x)
        assert torch.all(out <= mx + 1e-12)
        assert torch.all(out >= mx * (1 / 16) ** (1 / p) - 1e-12)
        assert torch.all(out > previous)
        previous = out
    torch.testing.assert_close(previous, mx, rtol=0.011, atol=0)


def test_clamps_at_eps() -> None:
    """Zeros and negatives count as eps: an all-negative map pools to eps exactly."""
    x = -torch.rand(1, 2, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(
        create_pool("gem", eps=1e-3)(x), torch.full((1, 2, 1, 1), 1e-3, dtype=torch.float64)
    )


def test_p_is_a_learnable_parameter_with_cirtorch_key() -> None:
    pool = create_pool("gem", p=2.5)
    params = dict(pool.named_parameters())
    assert list(params) == ["p"]
    assert list(pool.state_dict()) == ["p"]
    p = params["p"]
    assert p.shape == (1,)
    assert p.item() == 2.5

    x = torch.rand(2, 3, 5, 5) + 0.1
    p_ref = torch.tensor(2.5, requires_grad=True)
    ref = x.pow(p_ref).mean(dim=(2, 3)).pow(1 / p_ref)
    ref.sum().backward()
    pool(x).sum().backward()
    assert p.grad is not None
    assert p_ref.grad is not None
    torch.testing.assert_close(p.grad, p_ref.grad.reshape(1))


def test_loading_a_checkpoint_p_changes_the_pool() -> None:
    pool = create_pool("gem")
    pool.load_state_dict({"p": torch.tensor([1.0])})
    x = torch.rand(1, 4, 3, 3) + 1e-3
    torch.testing.assert_close(pool(x), x.mean(dim=(2, 3), keepdim=True))


def test_per_channel_p_tensor() -> None:
    """A p with one value per channel (cirtorch's GeMmp) pools each channel with its own p."""
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64) + 0.1
    ps = [1.0, 2.0, 5.0]
    out = gem_pool(x, GeMParams(), torch.tensor(ps, dtype=torch.float64))
    for c, p in enumerate(ps):
        torch.testing.assert_close(out[:, c : c + 1], cirtorch_gem(x[:, c : c + 1], p))


@pytest.mark.parametrize(
    "kw", [dict(p=0.0), dict(p=-1.0), dict(p=math.inf), dict(p=math.nan), dict(eps=0.0)]
)
def test_bad_params(kw: dict) -> None:
    with pytest.raises(PoolParamError):
        create_pool("gem", **kw)


def test_bad_inputs() -> None:
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(PoolInputError, match="one per channel"):
        gem_pool(x, GeMParams(), torch.ones(2))
    with pytest.raises(PoolParamError, match="p must be"):
        gem_pool(x, GeMParams(), -2.0)
    with pytest.raises(PoolInputError, match="4-D"):
        create_pool("gem")(torch.rand(3, 4, 4))
    with pytest.raises(PoolInputError, match="floating"):
        create_pool("gem")(torch.ones(1, 1, 2, 2, dtype=torch.int32))


@settings(max_examples=50, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    p=st.floats(-2, 12, allow_nan=False),
    eps=st.floats(-1e-3, 1e-2, allow_nan=False),
)
def test_shape_property(h: int, w: int, p: float, eps: float) -> None:
    """Valid params give (N, C, 1, 1) and cirtorch's value; invalid ones a PoolError."""
    x = torch.rand(2, 3, h, w, dtype=torch.float64)
    try:
        out = create_pool("gem", p=p, eps=eps)(x)
    except PoolError:
        assert p <= 0 or eps <= 0
        return
    assert out.shape == (2, 3, 1, 1)
    torch.testing.assert_close(out, cirtorch_gem(x, p, eps))
