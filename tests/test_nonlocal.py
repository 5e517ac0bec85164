"""nonlocal against the reference package nonlocalpooling==2.0.1, loaded with the same weights."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nonlocalpooling.pool import NonLocalPool2d

from models.pooling import PoolError, PoolInputError, PoolParamError, create_pool
from models.pooling.nonlocal_pool import NonLocalParams, NonLocalPool, nonlocal_pool
from tests.reference import nonlocal_reference


def make_nonlocal(**kw) -> NonLocalPool:
    """Build through the registry, typed as the module so its weights are reachable."""
    pool = create_pool("nonlocal", **kw)
    assert isinstance(pool, NonLocalPool)
    return pool


def ours_loaded(ref: NonLocalPool2d, size, c, o=None, squeeze=False) -> NonLocalPool:
    ours = make_nonlocal(in_size=size, in_channels=c, out_channels=o, squeeze=squeeze, seed=5)
    assert list(ours.state_dict()) == list(ref.state_dict())  # same keys, same order
    ours.load_state_dict(ref.state_dict())
    return ours


CASES = [
    ((8, 8), 4, None, False),
    ((8, 12), 3, 16, True),
    ((8, 8), 5, 128, False),  # out >= 128: tokens carry out // 2 = 64 channels
    ((8, 4), 3, 130, True),
]


@pytest.mark.parametrize(("size", "c", "o", "squeeze"), CASES)
def test_eval_matches_reference(size, c, o, squeeze) -> None:
    ref = nonlocal_reference(size, c, o, squeeze).eval()
    ours = ours_loaded(ref, size, c, o, squeeze).eval()
    x = torch.randn(2, c, *size)
    out = ours(x)
    assert out.shape == (2, o or c, size[0] // 2, size[1] // 2)
    torch.testing.assert_close(out, ref(x))


@pytest.mark.parametrize(("size", "c", "o", "squeeze"), CASES)
def test_train_step_matches_reference(size, c, o, squeeze) -> None:
    """Batch statistics, running-stat updates and gradients all agree."""
    ref = nonlocal_reference(size, c, o, squeeze).train()
    ours = ours_loaded(ref, size, c, o, squeeze).train()
    x = torch.randn(3, c, *size)
    out, ref_out = ours(x), ref(x)
    torch.testing.assert_close(out, ref_out)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    (ref_out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    theirs = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, theirs[name].grad, msg=name)
    for name, buf in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], buf, msg=name)


def test_functional_form_takes_the_state_dict() -> None:
    ref = nonlocal_reference((8, 8), 3, 6).eval()
    p = NonLocalParams.model_validate({"in_size": 8, "in_channels": 3, "out_channels": 6})
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(nonlocal_pool(x, ref.state_dict(), p), ref(x))
    weights = dict(ref.state_dict())
    del weights["alpha"]
    with pytest.raises(PoolInputError, match="'alpha' is missing"):
        nonlocal_pool(x, weights, p)
    weights["alpha"] = torch.ones(2)
    with pytest.raises(PoolInputError, match="'alpha' must be"):
        nonlocal_pool(x, weights, p)


def test_parameter_count_matches_reference_doc() -> None:
    # NonLocalPool2d(32, 64) has 157,121 parameters (reference-models.md, section 4).
    pool = make_nonlocal(in_size=32, in_channels=64)
    assert sum(p.numel() for p in pool.parameters()) == 157_121


def test_token_dim_halves_from_128_output_channels() -> None:
    assert make_nonlocal(in_size=4, in_channels=2, out_channels=127).embedding.out_channels == 127
    assert make_nonlocal(in_size=4, in_channels=2, out_channels=128).embedding.out_channels == 64


def test_seeded_init_ignores_and_keeps_global_rng() -> None:
    torch.manual_seed(1)
    a = make_nonlocal(in_size=8, in_channels=3, seed=7)
    state = torch.get_rng_state()
    b = make_nonlocal(in_size=8, in_channels=3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # construction drew nothing globally
    c = make_nonlocal(in_size=8, in_channels=3, seed=8)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.embedding.weight, c.embedding.weight)
    # The reference's starting point: alpha 0.1, norms at identity.
    assert a.alpha.item() == pytest.approx(0.1)
    assert a.norm.running_var is not None
    assert a.norm.running_mean is not None
    assert torch.equal(a.norm.running_var, torch.ones(3))
    assert torch.equal(a.norm.running_mean, torch.zeros(3))
    assert int(a.norm.num_batches_tracked or 0) == 0


def test_input_errors_are_library_errors() -> None:
    pool = make_nonlocal(in_size=(8, 12), in_channels=3)
    with pytest.raises(PoolInputError, match="built for 8x12"):
        pool(torch.randn(1, 3, 12, 8))
    with pytest.raises(PoolInputError, match="expects 3 input channels"):
        pool(torch.randn(1, 4, 8, 12))
    with pytest.raises(PoolInputError, match="4-D"):
        pool(torch.randn(3, 8, 12))
    with pytest.raises(PoolInputError, match="floating-point"):
        pool(torch.ones(1, 3, 8, 12, dtype=torch.int64))
    with pytest.raises(PoolInputError, match="cast one to match"):
        pool(torch.randn(1, 3, 8, 12, dtype=torch.float64))
    tiny = make_nonlocal(in_size=2, in_channels=3).train()
    with pytest.raises(PoolInputError, match="more than one value per channel"):
        tiny(torch.randn(1, 3, 2, 2))
    assert int(tiny.norm.num_batches_tracked or 0) == 0  # the failed call left no trace


def reference_branches_align(size, c, o, scale, squeeze) -> bool:
    """Whether the package's two branches give the same shape, run through its own submodules.

    The package adds them with broadcasting, so when they differ it either raises or
    silently spreads a 1-wide branch over the other instead of pooling.
    """
    ref = nonlocal_reference(size, c, o, squeeze, scale).eval()
    x = torch.randn(1, c, *size)
    try:
        local = ref.maxpool(ref.point_wise(x))
        glob = ref.channel_mix(ref.token_mix(ref.embedding(x)))
        if squeeze:
            glob = ref.pixelshuffle(glob)
    except Exception:  # any failure inside the package counts
        return False
    return bool(glob.shape == local.shape)


@pytest.mark.parametrize("scale", [1, 3, 4])
@pytest.mark.parametrize("squeeze", [False, True])
def test_scales_other_than_2_are_refused_as_the_reference_breaks(scale, squeeze) -> None:
    assert not reference_branches_align((24, 24), 4, 4, scale, squeeze)
    with pytest.raises(PoolParamError, match="scale must be 2"):
        create_pool("nonlocal", in_size=24, in_channels=4, scale=scale, squeeze=squeeze)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(in_size=7, in_channels=2), "multiples of 2"),
        (dict(in_size=6, in_channels=2, squeeze=True), "multiples of 4"),
        (dict(in_size=0, in_channels=2), "multiples of 2"),
        (dict(in_size=8, in_channels=0), "in_channels must be > 0"),
        (dict(in_size=8, in_channels=2, out_channels=0), "out_channels must be > 0"),
        (dict(in_size=8, in_channels=2, seed=-3), "seed"),
        (dict(in_channels=2), "in_size"),
    ],
)
def test_bad_params_raise_library_error(kw: dict, fragment: str) -> None:
    with pytest.raises(PoolParamError, match=fragment):
        create_pool("nonlocal", **kw)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # reference, empty grid
@settings(max_examples=40, deadline=None)
@given(
    # From 2: on a 1x1 input the branches also align with scale 1 (nothing to pool).
    h=st.integers(2, 10),
    w=st.integers(2, 10),
    c=st.integers(1, 3),
    o=st.one_of(st.none(), st.integers(1, 5)),
    scale=st.integers(1, 3),
    squeeze=st.booleans(),
)
def test_matches_reference_or_refuses_what_it_cannot_run(h, w, c, o, scale, squeeze) -> None:
    """We accept exactly the configurations whose branches align in the reference, and
    then give its output."""
    aligned = reference_branches_align((h, w), c, o, scale, squeeze)
    try:
        ours = make_nonlocal(
            in_size=(h, w), in_channels=c, out_channels=o, scale=scale, squeeze=squeeze
        )
    except PoolError:
        assert not aligned
        return
    assert aligned
    ref = nonlocal_reference((h, w), c, o, squeeze, scale).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, c, h, w)
    out = ours.eval()(x)
    assert out.shape == (2, o or c, h // 2, w // 2)
    torch.testing.assert_close(out, ref(x))
