"""fractional_max against F.fractional_max_pool2d given the same pseudo-random samples."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolInputError, PoolParamError, create_pool
from models.pooling.fractional import FractionalMaxParams, fractional_max_pool
from tests.reference import torch_fractional_max


def ours(x, samples, **kw):
    return fractional_max_pool(x, FractionalMaxParams(return_indices=True, **kw), samples)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("hw", "kw"),
    [
        ((25, 25), dict(kernel_size=2, output_ratio=0.7)),  # Graham's sqrt(2)-ish reduction
        ((10, 13), dict(kernel_size=2, output_size=(7, 9))),
        ((13, 10), dict(kernel_size=(3, 2), output_size=(5, 8))),
        ((17, 32), dict(kernel_size=3, output_ratio=(0.5, 0.75))),
        ((6, 9), dict(kernel_size=2, output_size=(1, 3))),  # one row: starts at in - k
        ((8, 8), dict(kernel_size=1, output_size=(8, 8))),  # every pixel once
        ((9, 11), dict(kernel_size=(4, 5), output_size=(6, 7))),  # largest output allowed
    ],
)
def test_matches_torch_values_and_indices(hw: tuple, kw: dict, dtype: torch.dtype) -> None:
    torch.manual_seed(sum(hw))
    x = torch.randn(2, 3, *hw, dtype=dtype)
    samples = torch.rand(2, 3, 2, dtype=dtype)
    out, idx = ours(x, samples, **kw)
    ref, ref_idx = torch_fractional_max(x, samples, **kw)
    assert torch.equal(out, ref)
    assert torch.equal(idx, ref_idx)


def test_sample_zero_drives_width_and_sample_one_height() -> None:
    """On a ramp along W only the width sample can move the result, and vice versa."""
    ramp_w = torch.arange(10.0).expand(1, 1, 10, 10).contiguous()
    ramp_h = ramp_w.transpose(2, 3).contiguous()
    a, b = torch.tensor([[[0.1, 0.9]]]), torch.tensor([[[0.9, 0.1]]])
    kw = dict(kernel_size=2, output_size=(6, 6))
    assert not torch.equal(ours(ramp_w, a, **kw)[0], ours(ramp_w, b, **kw)[0])
    assert torch.equal(
        ours(ramp_w, a, **kw)[0], ours(ramp_w, torch.tensor([[[0.1, 0.5]]]), **kw)[0]
    )
    assert torch.equal(
        ours(ramp_h, b, **kw)[0], ours(ramp_h, torch.tensor([[[0.5, 0.1]]]), **kw)[0]
    )
    for s in (a, b):
        assert torch.equal(ours(ramp_w, s, **kw)[0], torch_fractional_max(ramp_w, s, **kw)[0])


def test_ties_take_the_first_and_nan_the_last_as_torch() -> None:
    x = torch.ones(1, 1, 4, 4)
    x[0, 0, 0, 1] = x[0, 0, 1, 1] = float("nan")
    samples = torch.zeros(1, 1, 2)
    out, idx = ours(x, samples, kernel_size=2, output_size=2)
    ref, ref_idx = torch_fractional_max(x, samples, kernel_size=2, output_size=2)
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.nan_to_num(), ref.nan_to_num())
    assert torch.equal(idx, ref_idx)
    assert idx[0, 0].tolist() == [[5, 2], [8, 10]]


def test_seed_is_repeatable_and_equals_torch_with_those_samples() -> None:
    x = torch.randn(2, 4, 11, 11)
    pool = create_pool("fractional_max", kernel_size=2, output_ratio=0.6, seed=7)
    first, second = pool(x), pool(x)
    assert torch.equal(first, second)
    samples = torch.rand(2, 4, 2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, torch_fractional_max(x, samples, 2, output_ratio=0.6)[0])
    other = create_pool("fractional_max", kernel_size=2, output_ratio=0.6, seed=8)(x)
    assert not torch.equal(first, other)


def test_unseeded_draws_from_the_global_rng_like_torch() -> None:
    x = torch.randn(2, 3, 12, 12)
    pool = create_pool("fractional_max", kernel_size=3, output_size=(7, 8))
    torch.manual_seed(123)
    out = pool(x)
    torch.manual_seed(123)
    assert torch.equal(out, F.fractional_max_pool2d(x, 3, output_size=(7, 8)))


def test_module_return_indices() -> None:
    x = torch.randn(1, 2, 9, 9)
    out, idx = create_pool(
        "fractional_max", kernel_size=2, output_size=5, seed=1, return_indices=True
    )(x)
    assert idx.dtype == torch.int64
    assert torch.equal(x.flatten(2).gather(2, idx.flatten(2)).reshape_as(out), out)


@pytest.mark.parametrize(
    ("hw", "kw", "fragment"),
    [
        ((5, 5), dict(kernel_size=2, output_size=5), "needs an input of at least 6x6"),
        ((5, 5), dict(kernel_size=6, output_size=1), "needs an input"),
        ((3, 8), dict(kernel_size=2, output_ratio=0.3), "empty output"),
    ],
)
def test_input_too_small(hw: tuple, kw: dict, fragment: str) -> None:
    with pytest.raises(PoolInputError, match=fragment):
        create_pool("fractional_max", **kw)(torch.randn(1, 1, *hw))


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(kernel_size=2), "exactly one"),
        (dict(kernel_size=2, output_size=3, output_ratio=0.5), "exactly one"),
        (dict(kernel_size=0, output_size=3), "kernel_size"),
        (dict(kernel_size=2, output_size=0), "output_size"),
        (dict(kernel_size=2, output_ratio=1.0), r"\(0, 1\)"),
        (dict(kernel_size=2, output_ratio=(0.5, 0.0)), r"\(0, 1\)"),
        (dict(kernel_size=2, output_size=3, seed=-1), "seed"),
    ],
)
def test_bad_params(kw: dict, fragment: str) -> None:
    with pytest.raises(PoolParamError, match=fragment):
        create_pool("fractional_max", **kw)


@pytest.mark.parametrize(
    ("samples", "fragment"),
    [
        (torch.rand(1, 2, 2), r"shape \(2, 3, 2\)"),
        (torch.rand(2, 3, 3), r"shape \(2, 3, 2\)"),
        (torch.ones(2, 3, 2), r"\[0, 1\)"),
        (-torch.rand(2, 3, 2) - 0.1, r"\[0, 1\)"),
        (torch.full((2, 3, 2), float("nan")), r"\[0, 1\)"),
        (torch.zeros(2, 3, 2, dtype=torch.int64), "floating"),
    ],
)
def test_bad_samples(samples: torch.Tensor, fragment: str) -> None:
    with pytest.raises(PoolInputError, match=fragment):
        ours(torch.randn(2, 3, 8, 8), samples, kernel_size=2, output_size=5)


@settings(max_examples=50, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    out=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    seed=st.integers(0, 2**16),
)
def test_property_matches_torch_or_raises(h: int, w: int, k: tuple, out: tuple, seed: int) -> None:
    """Any fitting size equals torch exactly; anything else is a PoolError, never a crash."""
    x = torch.randn(1, 2, h, w)
    samples = torch.rand(1, 2, 2, generator=torch.Generator().manual_seed(seed))
    try:
        values, idx = ours(x, samples, kernel_size=k, output_size=out)
    except PoolError:
        assert out[0] + k[0] - 1 > h or out[1] + k[1] - 1 > w
        return
    ref, ref_idx = torch_fractional_max(x, samples, k, output_size=out)
    assert values.shape == (1, 2, *out)
    assert torch.equal(values, ref)
    assert torch.equal(idx, ref_idx)
