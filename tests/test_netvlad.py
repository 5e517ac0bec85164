"""netvlad against a plain per-cluster loop, hand-computed initialisations and the key contract."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolInputError, PoolParamError, create_pool
from models.pooling.netvlad import NetVLAD, NetVLADParams, netvlad_pool
from tests.reference import loop_netvlad


def make_netvlad(**kw) -> NetVLAD:
    """Build through the registry, typed as the module so its weights are reachable."""
    pool = create_pool("netvlad", **kw)
    assert isinstance(pool, NetVLAD)
    return pool


@pytest.mark.parametrize("normalize_input", [True, False])
@pytest.mark.parametrize("vladv2", [False, True])
def test_matches_per_cluster_loop(normalize_input: bool, vladv2: bool) -> None:
    pool = make_netvlad(
        num_clusters=5, dim=6, normalize_input=normalize_input, vladv2=vladv2, seed=3
    ).double()
    x = torch.randn(3, 6, 4, 7, dtype=torch.float64)
    bias = pool.conv.bias.detach() if pool.conv.bias is not None else None
    ref = loop_netvlad(x, pool.conv.weight.detach(), bias, pool.centroids.detach(), normalize_input)
    out = pool(x)
    assert out.shape == (3, 30)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3, dtype=torch.float64))


def test_functional_form_takes_explicit_weights() -> None:
    p = NetVLADParams(num_clusters=3, dim=4, vladv2=True)
    w, b, c = torch.randn(3, 4, 1, 1), torch.randn(3), torch.randn(3, 4)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(netvlad_pool(x, w, b, c, p), loop_netvlad(x, w, b, c, True))


def test_state_dict_keys_match_pytorch_netvlad() -> None:
    v1 = create_pool("netvlad")
    assert {k: tuple(v.shape) for k, v in v1.state_dict().items()} == {
        "centroids": (64, 512),
        "conv.weight": (64, 512, 1, 1),
    }
    v2 = create_pool("netvlad", num_clusters=16, dim=8, vladv2=True)
    assert {k: tuple(v.shape) for k, v in v2.state_dict().items()} == {
        "centroids": (16, 8),
        "conv.weight": (16, 8, 1, 1),
        "conv.bias": (16,),
    }


def test_checkpoint_pool_keys_load_directly() -> None:
    ckpt = {
        "pool.centroids": torch.randn(4, 8),
        "pool.conv.weight": torch.randn(4, 8, 1, 1),
    }
    pool = NetVLAD(NetVLADParams(num_clusters=4, dim=8))
    pool.load_state_dict({k.removeprefix("pool."): v for k, v in ckpt.items()})
    assert torch.equal(pool.centroids.detach(), ckpt["pool.centroids"])


def test_seeded_init_ignores_and_keeps_global_rng() -> None:
    torch.manual_seed(1)
    a = make_netvlad(num_clusters=4, dim=8, vladv2=True, seed=7)
    state = torch.get_rng_state()
    b = make_netvlad(num_clusters=4, dim=8, vladv2=True, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # construction drew nothing globally
    c = make_netvlad(num_clusters=4, dim=8, vladv2=True, seed=8)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
        assert not torch.equal(value, c.state_dict()[key])
    # pytorch-NetVlad's scheme: centroids U[0, 1), conv within torch's default 1/sqrt(D) bound.
    cents = a.centroids.detach()
    assert float(cents.min()) >= 0
    assert float(cents.max()) < 1
    assert float(a.conv.weight.detach().abs().max()) <= 1 / math.sqrt(8)


def test_init_v1_alpha_on_hand_example() -> None:
    # Unit centroids e1, e2; descriptors (1,0), (0,5), (3,4): normalised dots give
    # top1 - top2 gaps 1, 1 and 0.8 - 0.6 = 0.2, so alpha = log(100) / (2.2 / 3).
    cents = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    descs = torch.tensor([[1.0, 0.0], [0.0, 5.0], [3.0, 4.0]])
    pool = NetVLAD(NetVLADParams(num_clusters=2, dim=2))
    alpha = pool.init_from_centroids(cents, descs)
    expected = math.log(100) * 3 / 2.2
    assert alpha == pytest.approx(expected, rel=1e-12)
    assert pool.alpha == alpha
    torch.testing.assert_close(pool.conv.weight.detach().reshape(2, 2), expected * torch.eye(2))
    assert pool.conv.bias is None
    assert torch.equal(pool.centroids.detach(), cents)


def test_init_v2_alpha_on_hand_example() -> None:
    # Centroids (0,0), (4,0); descriptors (1,0), (3,0), (2,1): squared distances to the
    # nearest two centroids differ by 8, 8 and 0, so alpha = log(100) / (16 / 3).
    cents = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    descs = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 1.0]])
    pool = NetVLAD(NetVLADParams(num_clusters=2, dim=2, normalize_input=False, vladv2=True))
    alpha = pool.init_from_centroids(cents, descs)
    expected = math.log(100) * 3 / 16
    assert alpha == pytest.approx(expected, rel=1e-12)
    # Paper eq. 3: w_k = 2 alpha c_k, b_k = -alpha |c_k|^2.
    torch.testing.assert_close(pool.conv.weight.detach().reshape(2, 2), 2 * expected * cents)
    assert pool.conv.bias is not None
    torch.testing.assert_close(pool.conv.bias.detach(), torch.tensor([0.0, -16 * expected]))


@pytest.mark.parametrize("vladv2", [False, True])
def test_init_makes_top2_assignments_differ_100x(vladv2: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    descs = torch.randn(300, 16, generator=gen, dtype=torch.float64)
    cents = descs[:8] + 0.1 * torch.randn(8, 16, generator=gen, dtype=torch.float64)
    pool = make_netvlad(num_clusters=8, dim=16, vladv2=vladv2).double()
    pool.init_from_centroids(cents, descs)
    # The layer's own soft-assignment, recomputed with plain torch ops on its weights.
    feats = F.normalize(descs, dim=1)
    logits = feats @ pool.conv.weight.detach().reshape(8, 16).T
    if pool.conv.bias is not None:
        logits = logits + pool.conv.bias.detach()
    top2 = torch.softmax(logits, dim=1).topk(2, dim=1).values
    geo_mean_ratio = (top2[:, 0] / top2[:, 1]).log().mean().exp()
    assert float(geo_mean_ratio) == pytest.approx(100.0, rel=1e-9)


def test_init_rejects_bad_shapes_and_degenerate_data() -> None:
    pool = NetVLAD(NetVLADParams(num_clusters=2, dim=3))
    with pytest.raises(PoolInputError, match="centroids must be"):
        pool.init_from_centroids(torch.randn(3, 3), torch.randn(5, 3))
    with pytest.raises(PoolInputError, match="descriptors must be"):
        pool.init_from_centroids(torch.randn(2, 3), torch.randn(5, 4))
    with pytest.raises(PoolInputError, match="equally close"):
        pool.init_from_centroids(torch.ones(2, 3), torch.randn(5, 3))
    single = NetVLAD(NetVLADParams(num_clusters=1, dim=3))
    with pytest.raises(PoolInputError, match="at least 2 clusters"):
        single.init_from_centroids(torch.randn(1, 3), torch.randn(5, 3))


def test_wrong_channels_and_inputs_are_library_errors() -> None:
    pool = create_pool("netvlad", num_clusters=4, dim=8)
    with pytest.raises(PoolInputError, match="expects 8 input channels"):
        pool(torch.randn(1, 7, 3, 3))
    with pytest.raises(PoolInputError, match="4-D"):
        pool(torch.randn(8, 3, 3))
    with pytest.raises(PoolInputError, match="floating-point"):
        pool(torch.ones(1, 8, 3, 3, dtype=torch.int64))
    with pytest.raises(PoolInputError, match="cast one to match"):
        pool(torch.randn(1, 8, 3, 3, dtype=torch.float64))
    p = NetVLADParams(num_clusters=4, dim=8)
    w, c = torch.randn(4, 8, 1, 1), torch.randn(4, 8)
    with pytest.raises(PoolInputError, match="conv_bias exactly when vladv2"):
        netvlad_pool(torch.randn(1, 8, 2, 2), w, torch.randn(4), c, p)
    with pytest.raises(PoolInputError, match="centroids must be"):
        netvlad_pool(torch.randn(1, 8, 2, 2), w, None, torch.randn(4, 7), p)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(num_clusters=0), "num_clusters must be > 0"),
        (dict(dim=-1), "dim must be > 0"),
        (dict(seed=-1), "seed"),
        (dict(clusters=4), r"unknown field\(s\) \(not echoed\).*num_clusters"),
    ],
)
def test_bad_params_raise_library_error(kw: dict, fragment: str) -> None:
    with pytest.raises(PoolParamError, match=fragment):
        create_pool("netvlad", **kw)


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(-1, 5),
    d=st.integers(-1, 6),
    c=st.integers(1, 6),
    n=st.integers(1, 2),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    norm=st.booleans(),
    v2=st.booleans(),
)
def test_shape_property(k, d, c, n, h, w, norm, v2) -> None:
    """Valid params give (N, K*D) unit vectors; anything else is the library's error."""
    x = torch.randn(n, c, h, w)
    try:
        out = create_pool("netvlad", num_clusters=k, dim=d, normalize_input=norm, vladv2=v2)(x)
    except PoolError:
        assert k <= 0 or d <= 0 or c != d
        return
    assert out.shape == (n, k * d)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(n))
