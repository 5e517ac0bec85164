"""PoolFormer: sail-sg's exact key layout, published sizes, and a functional reference."""

import pytest
import torch
import torch.nn.functional as F

from models.poolformer import POOLFORMER_SPECS, GroupNorm1, PoolFormer, PoolFormerBlock, poolformer
from models.pooling import PoolInputError
from tests.reference import sailsg_keys

VARIANTS = {  # name: (layers, embed_dims, layer-scale init, published params in millions)
    "poolformer_s12": ((2, 2, 6, 2), (64, 128, 320, 512), 1e-5, 11.92),
    "poolformer_s24": ((4, 4, 12, 4), (64, 128, 320, 512), 1e-5, 21.39),
    "poolformer_s36": ((6, 6, 18, 6), (64, 128, 320, 512), 1e-6, 30.86),
    "poolformer_m36": ((6, 6, 18, 6), (96, 192, 384, 768), 1e-6, 56.17),
    "poolformer_m48": ((8, 8, 24, 8), (96, 192, 384, 768), 1e-6, 73.47),
}


@pytest.fixture(scope="module")
def s12() -> PoolFormer:
    return poolformer("poolformer_s12", seed=0).eval()


def test_s12_keys_equal_sailsg_exactly(s12: PoolFormer) -> None:
    expected = sailsg_keys((2, 2, 6, 2), (64, 128, 320, 512))
    assert len(expected) == 132
    assert {k: tuple(v.shape) for k, v in s12.state_dict().items()} == expected


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_have_published_depths_widths_and_sizes(name: str) -> None:
    layers, dims, ls_init, millions = VARIANTS[name]
    spec = POOLFORMER_SPECS[name]
    assert (spec.layers, spec.embed_dims, spec.layer_scale_init, spec.mlp_ratio) == (
        layers,
        dims,
        ls_init,
        4,
    )
    model = PoolFormer(spec)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == sailsg_keys(layers, dims)
    assert len(shapes) == {2: 132, 4: 252, 6: 372, 8: 492}[layers[0]]
    total = sum(p.numel() for p in model.parameters())
    assert round(total / 1e6, 2) == millions


@pytest.mark.parametrize("name", ["poolformer_s12", "poolformer_m36"])
def test_layer_scale_starts_at_published_constant(name: str) -> None:
    model = poolformer(name, num_classes=0)
    block = model.get_submodule("network.0.0")
    assert isinstance(block, PoolFormerBlock)
    expected = VARIANTS[name][2]
    assert torch.equal(block.layer_scale_1, torch.full_like(block.layer_scale_1, expected))
    assert torch.equal(block.layer_scale_2, torch.full_like(block.layer_scale_2, expected))


def test_groupnorm1_normalises_over_chw_per_sample() -> None:
    norm = GroupNorm1(6)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
        norm.bias.copy_(torch.linspace(-1, 1, 6))
    x = torch.randn(3, 6, 5, 4) * 3 + 2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    w, b = norm.weight[:, None, None], norm.bias[:, None, None]
    torch.testing.assert_close(norm(x), (x - mean) / torch.sqrt(var + 1e-5) * w + b)


def test_token_mixer_is_avg3x3_without_padding_minus_identity(s12: PoolFormer) -> None:
    mixer = s12.get_submodule("network.0.0.token_mixer")
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    # Corner (0,0): mean of 0,1,3,4 = 2, minus 0. Centre: mean of 0..8 = 4, minus 4.
    # Edge (0,1): mean of 0,1,2,3,4,5 = 2.5, minus 1.
    out = mixer(x)
    assert out[0, 0, 0, 0].item() == 2.0
    assert out[0, 0, 1, 1].item() == 0.0
    assert out[0, 0, 0, 1].item() == 1.5


def gn(x, w, b):
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * w[:, None, None] + b[:, None, None]


def reference_poolformer(x, sd, layers):
    """The published forward, from the state_dict: blocks, downsamplings, head order."""
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=4, padding=2)
    for stage, depth in enumerate(layers):
        for j in range(depth):
            p = f"network.{2 * stage}.{j}."
            y = gn(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"])
            mixed = F.avg_pool2d(y, 3, 1, 1, count_include_pad=False) - y
            x = x + sd[p + "layer_scale_1"][:, None, None] * mixed
            y = gn(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"])
            y = F.conv2d(F.gelu(F.conv2d(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                         sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])  # fmt: skip
            x = x + sd[p + "layer_scale_2"][:, None, None] * y
        if stage < 3:
            q = f"network.{2 * stage + 1}.proj."
            x = F.conv2d(x, sd[q + "weight"], sd[q + "bias"], stride=2, padding=1)
    feats = x
    pooled = gn(x, sd["norm.weight"], sd["norm.bias"]).mean(dim=(2, 3))  # norm, then pool
    return feats, pooled @ sd["head.weight"].T + sd["head.bias"]


def test_classifier_matches_functional_reference() -> None:
    model = poolformer("poolformer_s12", num_classes=10, seed=1).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # make every part matter: non-trivial scales, norms and biases
        for name, value in model.state_dict().items():
            if "layer_scale" in name or "norm" in name or name.endswith("bias"):
                value.copy_(torch.rand(value.shape, generator=gen) + 0.25)
    x = torch.randn(2, 3, 64, 64)
    feats_ref, logits_ref = reference_poolformer(x, model.state_dict(), (2, 2, 6, 2))
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
    assert logits.shape == (2, 10)
    assert feats.shape == (2, 512, 2, 2)
    torch.testing.assert_close(feats, feats_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, logits_ref, rtol=1e-4, atol=1e-4)


def test_features_mode_has_no_head_and_returns_last_map() -> None:
    backbone = poolformer("poolformer_s12", num_classes=0, seed=0).eval()
    assert not any(k.startswith(("norm.", "head.")) for k in backbone.state_dict())
    assert len(backbone.state_dict()) == 128
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 96, 64))
    assert out.shape == (1, 512, 3, 2)  # stride 32


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a = poolformer("poolformer_s12", seed=4).state_dict()
    b = poolformer("poolformer_s12", seed=4).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    w = a["network.4.0.mlp.fc1.weight"]
    assert abs(w.std().item() - 0.02) < 0.002  # sail-sg's std 0.02
    assert torch.count_nonzero(a["network.4.0.mlp.fc1.bias"]) == 0


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (2, 3, 2, 32), (0, 3, 32, 32), (3, 32, 32)])
def test_bad_images_are_a_pool_input_error(s12: PoolFormer, shape) -> None:
    with pytest.raises(PoolInputError, match="expected \\(N, 3, H, W\\) images"):
        s12(torch.zeros(shape))


def test_unknown_variant_names_the_choices() -> None:
    with pytest.raises(ValueError, match="poolformer_s12"):
        poolformer("poolformer_xl")
