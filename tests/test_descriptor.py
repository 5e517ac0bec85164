"""DescriptorNet against plain references, and the named models with their input policies."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from models.descriptor import DescriptorNet
from models.pooling import PoolError, PoolInputError, PoolParamError
from models.transforms import image_to_tensor
from models.zoo import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputPolicy,
    UnknownModelError,
    build_model,
    get_model_cfg,
    list_models,
)
from tests.reference import TORCHVISION_CONVS, loop_netvlad


@pytest.fixture(scope="module")
def vgg_netvlad() -> DescriptorNet:
    return DescriptorNet("vgg16", "netvlad", {"num_clusters": 4}, seed=2).eval()


def test_vgg_netvlad_equals_per_cluster_loop_on_encoder_features(vgg_netvlad) -> None:
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        out = vgg_netvlad(x)
        feats = vgg_netvlad.encoder(x)
    sd = vgg_netvlad.state_dict()
    weight, centroids = sd["pool.conv.weight"].double(), sd["pool.centroids"].double()
    ref = loop_netvlad(feats.double(), weight, None, centroids, normalize_input=True)
    assert out.shape == (2, 4 * 512)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


def test_state_dict_keys_are_pytorch_netvlad_keys(vgg_netvlad) -> None:
    expected: dict[str, tuple[int, ...]] = {
        "pool.centroids": (4, 512),
        "pool.conv.weight": (4, 512, 1, 1),
    }
    for idx, cin, cout in TORCHVISION_CONVS:
        expected[f"encoder.{idx}.weight"], expected[f"encoder.{idx}.bias"] = (
            (cout, cin, 3, 3),
            (cout,),
        )
    assert {k: tuple(v.shape) for k, v in vgg_netvlad.state_dict().items()} == expected


def test_wpca_keys_and_shapes_are_patch_netvlads() -> None:
    net = DescriptorNet("poolformer_s12", "netvlad", {"num_clusters": 2}, "wpca", num_pcs=8)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items() if k.startswith("WPCA")}
    assert shapes == {"WPCA.0.weight": (8, 1024, 1, 1), "WPCA.0.bias": (8,)}


def test_wpca_output_equals_patch_netvlads_conv_path() -> None:
    """Our forward uses a matmul; Patch-NetVLAD applies its WPCA Sequential to a 1x1 map."""
    net = DescriptorNet("poolformer_s12", "netvlad", {"num_clusters": 2}, "wpca", 8, seed=1).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        vlad = net.pool(net.encoder(x))
        ref = F.normalize(net.WPCA(vlad[:, :, None, None]), dim=1)
        out = net(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-6)
    assert out.shape == (2, 8)


def test_linear_whitening_follows_l2_whiten_l2() -> None:
    net = DescriptorNet("poolformer_s12", "gem", None, "linear", num_pcs=16, seed=3).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        feats = net.encoder(x)
        gem = feats.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)  # cirtorch GeM, p=3
        ref = F.normalize(net.whiten(F.normalize(gem, dim=1)), dim=1)
        out = net(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("head", "params", "dim", "closed_form"),
    [
        ("global_max", None, 512, lambda f: f.amax(dim=(2, 3))),
        ("global_avg", None, 512, lambda f: f.mean(dim=(2, 3))),
        ("gem", {"p": 2.0}, 512, lambda f: f.clamp(min=1e-6).square().mean(dim=(2, 3)).sqrt()),
        ("rmac", None, 512, None),
        ("spp", {"levels": [1, 2]}, 512 * 5, None),
        ("netvlad", {"num_clusters": 3}, 3 * 512, None),
    ],
)
def test_every_head_gives_unit_norm_descriptors_of_documented_dim(
    head, params, dim, closed_form
) -> None:
    net = DescriptorNet("poolformer_s12", head, params, seed=0).eval()
    assert net.output_dim == dim
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        out = net(x)
        feats = net.encoder(x)
    assert out.shape == (2, dim)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    if closed_form is not None:
        torch.testing.assert_close(out, F.normalize(closed_form(feats), dim=1))


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        (dict(backbone="resnet50"), PoolParamError, "unknown backbone"),
        (dict(whitening="wpca"), PoolParamError, "needs num_pcs > 0"),
        (dict(whitening="pca", num_pcs=8), PoolParamError, "none, wpca or linear"),
        (dict(params={"dim": 256}), PoolParamError, "dim is 256 but the backbone gives 512"),
        (dict(head="max"), PoolParamError, "head must be one of"),
        (dict(head="gem", params={"p": -1}), PoolParamError, "p must be"),
    ],
)
def test_bad_construction_is_the_librarys_error(kwargs, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        DescriptorNet(**{"backbone": "poolformer_s12", **kwargs})


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ((1, 1, 64, 64), "RGB"),
        ((3, 64, 64), "RGB"),
        ((1, 3, 8, 64), "at least 16x16"),
        ((0, 3, 64, 64), "non-empty batch"),
    ],
)
def test_bad_images_are_a_pool_input_error(vgg_netvlad, shape, fragment) -> None:
    with pytest.raises(PoolInputError, match=fragment):
        vgg_netvlad(torch.zeros(shape))


@pytest.fixture(scope="module")
def small_nets() -> dict[str, DescriptorNet]:
    return {
        head: DescriptorNet(
            "poolformer_s12", head, {"num_clusters": 2} if head == "netvlad" else None
        ).eval()
        for head in ("netvlad", "gem", "global_max")
    }


@settings(max_examples=30, deadline=None)
@given(
    head=st.sampled_from(["netvlad", "gem", "global_max"]),
    n=st.integers(0, 2),
    h=st.integers(1, 48),
    w=st.integers(1, 48),
    c=st.sampled_from([1, 3, 4]),
)
def test_shape_property(small_nets, head, n, h, w, c) -> None:
    """Valid images give (N, output_dim) unit vectors; anything else is a PoolError."""
    net = small_nets[head]
    try:
        with torch.no_grad():
            out = net(torch.randn(n, c, h, w))
    except PoolError:
        assert c != 3 or n == 0 or min(h, w) < net.min_size
        return
    assert c == 3
    assert n > 0
    assert min(h, w) >= net.min_size
    assert out.shape == (n, net.output_dim)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(n))


# Named models ---------------------------------------------------------------------------


def test_default_named_models_and_their_cfgs() -> None:
    assert {
        "netvlad_vgg16",
        "netvlad_vgg16_wpca4096",
        "netvlad_poolformer_s12",
        "poolformer_s12",
    } <= set(list_models())
    vgg = get_model_cfg("netvlad_vgg16")
    assert (vgg.output_dim, vgg.flatten_order, vgg.preprocess.resize) == (32768, "k-major", "keep")
    assert vgg.head_params == {"num_clusters": 64, "dim": 512}
    wpca = get_model_cfg("netvlad_vgg16_wpca4096")
    assert (wpca.output_dim, wpca.whitening, wpca.preprocess.size) == (4096, "wpca", (480, 640))
    light = get_model_cfg("netvlad_poolformer_s12")
    assert (light.backbone, light.output_dim) == ("poolformer_s12", 32768)
    s12 = get_model_cfg("poolformer_s12").preprocess
    assert (s12.shorter_side, s12.crop, s12.interpolation) == (248, (224, 224), "bicubic")
    assert get_model_cfg("poolformer_m48").preprocess.shorter_side == 235  # floor(224 / 0.95)
    for name in list_models():
        cfg = get_model_cfg(name)
        assert (cfg.preprocess.mean, cfg.preprocess.std) == (IMAGENET_MEAN, IMAGENET_STD)
        assert cfg.as_dict()["name"] == name


@pytest.mark.parametrize("name", list_models())
def test_every_named_model_builds_and_runs(name: str) -> None:
    state = torch.get_rng_state()
    built = build_model(name, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert built.provenance == "seeded-init(seed=7)"
    assert not built.module.training
    with torch.no_grad():
        out = built.module(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, built.cfg.output_dim)
    if built.cfg.task == "descriptor":
        torch.testing.assert_close(out.norm(dim=1), torch.ones(1))


def test_seeded_build_is_deterministic() -> None:
    a = build_model("netvlad_poolformer_s12", seed=3).module.state_dict()
    b = build_model("netvlad_poolformer_s12", seed=3).module.state_dict()
    c = build_model("netvlad_poolformer_s12", seed=4).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["pool.centroids"], c["pool.centroids"])
    assert not torch.equal(
        a["encoder.patch_embed.proj.weight"], c["encoder.patch_embed.proj.weight"]
    )


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(UnknownModelError, match="netvlad_vgg16"):
        build_model("netvlad_resnet")


def gradient_image(width: int, height: int) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def test_classifier_policy_is_shorter_side_then_centre_crop() -> None:
    image = gradient_image(300, 200)
    out = image_to_tensor(get_model_cfg("poolformer_s12").preprocess, image)
    # By hand: 300x200 -> shorter side 248 -> 372x248 (bicubic) -> crop 224 at (74, 12).
    resized = image.resize((372, 248), Image.Resampling.BICUBIC).crop((74, 12, 298, 236))
    ref = np.asarray(resized, dtype=np.float32) / 255.0
    ref = (ref - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert out.shape == (3, 224, 224)
    torch.testing.assert_close(out, torch.from_numpy(ref).permute(2, 0, 1).float())


def test_exact_and_keep_policies() -> None:
    image = gradient_image(100, 60)
    exact = image_to_tensor(get_model_cfg("netvlad_vgg16_wpca4096").preprocess, image)
    assert exact.shape == (3, 480, 640)
    kept = image_to_tensor(get_model_cfg("netvlad_vgg16").preprocess, image)
    assert kept.shape == (3, 60, 100)
    # Pixel (row 10, col 50): R = 50 * 255 // 100 = 127, G = 10 * 255 // 60 = 42, B = 60.
    expected = (
        torch.tensor([127.0, 42.0, 60.0]) / 255 - torch.tensor(IMAGENET_MEAN)
    ) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(kept[:, 10, 50], expected)


def test_0_255_policy_subtracts_the_mean_pixel() -> None:
    policy = InputPolicy(value_range="0-255", mean=(123.68, 116.779, 103.939), std=(1.0, 1.0, 1.0))
    out = image_to_tensor(policy, Image.new("RGB", (4, 4), (200, 100, 0)))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([200 - 123.68, 100 - 116.779, -103.939]))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(resize="exact"),
        dict(resize="shorter_side"),
        dict(resize="keep", crop=(224, 224)),
        dict(resize="shorter_side", shorter_side=200, crop=(224, 224)),
        dict(std=(0.0, 1.0, 1.0)),
    ],
)
def test_inconsistent_input_policies_are_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="InputPolicy"):
        InputPolicy(**kwargs)


def test_shorter_side_rounding_matches_torchvision() -> None:
    policy = InputPolicy(resize="shorter_side", shorter_side=235)
    assert policy.resized_size(640, 480) == (math.floor(235 * 640 / 480), 235)
    assert policy.resized_size(480, 641) == (235, int(235 * 641 / 480))
