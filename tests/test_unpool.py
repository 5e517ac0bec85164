"""max_unpool against F.max_unpool2d on real max-pool indices, and its input checks."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolInputError, PoolParamError, create_pool

# The reference, F.max_unpool2d, warns under conftest's deterministic mode.
pytestmark = pytest.mark.filterwarnings("ignore:max_unpooling2d_forward_out:UserWarning")


@pytest.mark.parametrize(
    ("hw", "kw"),
    [
        ((8, 8), dict(kernel_size=2)),
        ((7, 9), dict(kernel_size=3, stride=2, padding=1)),
        ((6, 7), dict(kernel_size=3, stride=1)),  # overlapping windows share indices
        ((9, 9), dict(kernel_size=(2, 3), stride=(1, 2))),
        ((5, 5), dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0))),
    ],
)
def test_round_trip_matches_torch(hw: tuple, kw: dict) -> None:
    x = torch.randn(2, 3, *hw)
    t = dict(kw)
    t.setdefault("padding", 0)
    pooled, idx = F.max_pool2d(x, return_indices=True, **t)
    ours = create_pool("max_unpool", **kw)(pooled, idx)
    assert torch.equal(ours, F.max_unpool2d(pooled, idx, **t))


@pytest.mark.parametrize(
    ("hw", "kw"),
    [
        ((7, 9), dict(kernel_size=2)),  # default 6x8
        ((11, 10), dict(kernel_size=3, stride=2, padding=1)),  # default 11x9
        ((5, 2), dict(kernel_size=2, stride=3, padding=1)),  # default 3x0: empty without it
    ],
)
def test_explicit_output_size_restores_input_size(hw: tuple, kw: dict) -> None:
    """The default size differs from the input's; output_size restores the input's."""
    x = torch.randn(1, 2, *hw)
    t = dict(kw)
    t.setdefault("padding", 0)
    pooled, idx = F.max_pool2d(x, return_indices=True, **t)
    ours = create_pool("max_unpool", output_size=hw, **kw)(pooled, idx)
    assert ours.shape == (1, 2, *hw)
    assert torch.equal(ours, F.max_unpool2d(pooled, idx, output_size=hw, **t))
    # Every pooled maximum is back where it came from.
    assert torch.equal(ours.flatten(2).gather(2, idx.flatten(2)), pooled.flatten(2))


def test_asymmetric_padding_plain_loop() -> None:
    """YOLOv3-tiny's stride-1 2x2 pool padded right/bottom: unpooling gives 13x13 back."""
    x = torch.randn(1, 2, 13, 13)
    pool = create_pool("max", kernel_size=2, stride=1, padding=(0, 1, 0, 1), return_indices=True)
    pooled, idx = pool(x)
    out = create_pool("max_unpool", kernel_size=2, stride=1, padding=(0, 1, 0, 1))(pooled, idx)
    expected = torch.zeros(1, 2, 13 * 13)
    for c in range(2):
        for v, i in zip(pooled[0, c].flatten().tolist(), idx[0, c].flatten().tolist(), strict=True):
            expected[0, c, i] = v
    assert torch.equal(out, expected.reshape(1, 2, 13, 13))


def test_default_size_formula() -> None:
    pooled = torch.zeros(1, 1, 4, 5)
    idx = torch.zeros(1, 1, 4, 5, dtype=torch.int64)
    out = create_pool("max_unpool", kernel_size=3, stride=2, padding=1)(pooled, idx)
    assert out.shape == (1, 1, (4 - 1) * 2 - 2 + 3, (5 - 1) * 2 - 2 + 3)


@pytest.mark.parametrize("bad", [16, -1, 100])
def test_index_out_of_plane_is_an_input_error(bad: int) -> None:
    pooled = torch.randn(1, 1, 2, 2)
    idx = torch.tensor([[[[0, 1], [2, bad]]]])
    with pytest.raises(PoolInputError, match=r"\[0, 16\)"):
        create_pool("max_unpool", kernel_size=2)(pooled, idx)


def test_output_size_in_torch_range_but_indices_outside() -> None:
    """torch accepts output_size 3x3 for a 2x2 pool of 5x5, then finds index 18; so do we."""
    pooled, idx = F.max_pool2d(torch.arange(25.0).reshape(1, 1, 5, 5), 2, return_indices=True)
    with pytest.raises(PoolInputError, match="indices must lie"):
        create_pool("max_unpool", kernel_size=2, output_size=3)(pooled, idx)


@pytest.mark.parametrize("size", [(2, 4), (6, 4), (4, 6), (1, 1)])
def test_output_size_outside_torch_range(size: tuple) -> None:
    """For a 2x2 pooled map, kernel 2: default 4; torch accepts only 3, 4 and 5."""
    pooled, idx = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64)
    with pytest.raises(PoolInputError, match="strictly between"):
        create_pool("max_unpool", kernel_size=2, output_size=size)(pooled, idx)
    with pytest.raises(ValueError, match="invalid output_size"):
        F.max_unpool2d(pooled, idx, (2, 2), output_size=size)


def test_bad_indices() -> None:
    pooled = torch.randn(1, 1, 2, 2)
    unpool = create_pool("max_unpool", kernel_size=2)
    with pytest.raises(PoolInputError, match="int64"):
        unpool(pooled, torch.zeros(1, 1, 2, 2, dtype=torch.int32))
    with pytest.raises(PoolInputError, match="shape of x"):
        unpool(pooled, torch.zeros(1, 1, 2, 1, dtype=torch.int64))
    with pytest.raises(PoolInputError, match="floating"):
        unpool(torch.zeros(1, 1, 2, 2, dtype=torch.int64), torch.zeros(1, 1, 2, 2).long())


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(kernel_size=0), "kernel_size"),
        (dict(kernel_size=2, stride=0), "stride"),
        (dict(kernel_size=3, padding=2), "at most half"),
        (dict(kernel_size=2, output_size=0), "output_size"),
        (dict(kernel_size=2, bogus=1), r"unknown field\(s\) \(not echoed\)"),
    ],
)
def test_bad_params(kw: dict, fragment: str) -> None:
    with pytest.raises(PoolParamError, match=fragment):
        create_pool("max_unpool", **kw)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 10),
    w=st.integers(1, 10),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    pad=st.integers(0, 1),
    grow=st.tuples(st.integers(-1, 1), st.integers(-1, 1)),
)
def test_round_trip_property(h: int, w: int, k: int, s: int, pad: int, grow: tuple) -> None:
    """Whatever torch accepts we match exactly; anything else is a PoolError, never a crash."""
    x = torch.randn(1, 2, h, w)
    try:
        pooled, idx = F.max_pool2d(x, k, s, pad, return_indices=True)
    except RuntimeError:
        return  # not a valid pool, nothing to invert
    size = (h + grow[0], w + grow[1])
    if min(size) < 1:  # torch returns an empty map for a 0 size; we refuse it
        with pytest.raises(PoolParamError, match="output_size must be > 0"):
            create_pool("max_unpool", kernel_size=k, stride=s, padding=pad, output_size=size)
        return
    try:
        ours = create_pool("max_unpool", kernel_size=k, stride=s, padding=pad, output_size=size)
        out = ours(pooled, idx)
    except PoolError:
        with pytest.raises((ValueError, RuntimeError)):
            F.max_unpool2d(pooled, idx, (k, k), (s, s), (pad, pad), output_size=size)
        return
    assert torch.equal(
        out, F.max_unpool2d(pooled, idx, (k, k), (s, s), (pad, pad), output_size=size)
    )
