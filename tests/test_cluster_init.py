"""k-means and the cluster-init command, end to end on a handful of generated images."""

import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import safetensors
import torch
import torch.nn.functional as F
from PIL import Image

from models.cluster_init import ClusterInitError, kmeans, list_images, main
from models.weights import read_checkpoint
from models.zoo import IMAGENET_MEAN, IMAGENET_STD, build_model
from tests.reference import random_state, sailsg_keys


def blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three tight, far-apart clusters of 40 points in 5-D, and their true means."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[10.0, 0, 0, 0, 0], [0, 10.0, 0, 0, 0], [0, 0, 0, 0, -10.0]])
    points = centres.repeat_interleave(40, dim=0) + 0.1 * torch.randn(120, 5, generator=gen)
    means = points.reshape(3, 40, 5).mean(dim=1)
    return points, means


def test_kmeans_recovers_well_separated_clusters() -> None:
    points, means = blobs()
    found = kmeans(points, 3, iters=50, seed=1).float()
    # Match each true mean to its nearest found centre: a permutation, and equal to the mean.
    nearest = torch.cdist(means, found).argmin(dim=1)
    assert sorted(nearest.tolist()) == [0, 1, 2]
    torch.testing.assert_close(found[nearest], means, rtol=0, atol=1e-5)


def test_kmeans_converges_to_a_lloyd_fixed_point_and_is_deterministic() -> None:
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(3))
    centres = kmeans(x, 5, iters=300, seed=7)
    assert torch.equal(centres, kmeans(x, 5, iters=300, seed=7))
    labels = torch.cdist(x.double(), centres).argmin(dim=1)
    for k in range(5):  # every centre is the mean of the points nearest to it
        torch.testing.assert_close(centres[k], x.double()[labels == k].mean(dim=0))


def test_kmeans_refuses_more_clusters_than_points() -> None:
    with pytest.raises(ClusterInitError, match="1 <= k <= points"):
        kmeans(torch.randn(3, 2), 4)


@pytest.fixture
def image_folder(tmp_path):
    gen = np.random.default_rng(0)
    for i in range(5):
        pixels = gen.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_cluster_init_end_to_end(image_folder, tmp_path) -> None:
    out = tmp_path / "netvlad_k4.safetensors"
    argv = ["--model", "netvlad_vgg16", "--images", str(image_folder), "--out", str(out)]
    main([*argv, "--num-clusters", "4", "--per-image", "10", "--iters", "20", "--seed", "1"])
    with safetensors.safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert (meta["num_clusters"], meta["num_images"], meta["num_descriptors"]) == ("4", "5", "50")
    alpha = float(meta["alpha"])
    assert alpha > 0
    built = build_model("netvlad_vgg16", weights=out)
    assert built.cfg.output_dim == 4 * 512
    assert built.provenance.startswith(str(out.resolve()))
    sd = built.module.state_dict()
    # The paper's vladv1 init: conv.weight = alpha * c_k / |c_k|.
    expected = alpha * F.normalize(sd["pool.centroids"], dim=1)
    torch.testing.assert_close(sd["pool.conv.weight"].flatten(1), expected)
    # The centroids live where the (L2-normalised) local features do.
    assert torch.all(sd["pool.centroids"].norm(dim=1) <= 1 + 1e-5)
    with torch.no_grad():
        desc = built.module(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(2))


def test_alpha_makes_top_assignment_100x_the_runner_up(image_folder, tmp_path) -> None:
    """The paper's criterion on the clustered features: on average the best cluster's
    logit beats the runner-up's by log(100). 64x80 images give 4x5 VGG maps, so
    --per-image 100 takes every feature and the test can recompute them all."""
    out = tmp_path / "k3.safetensors"
    main(["--model", "netvlad_vgg16", "--images", str(image_folder), "--out", str(out),
          "--num-clusters", "3", "--per-image", "100", "--iters", "10"])  # fmt: skip
    model = build_model("netvlad_vgg16", weights=out).module
    feats = []
    for path in list_images(image_folder):
        with Image.open(path) as image:  # keep size; ImageNet mean/std on 0-1 values
            x = (np.asarray(image, dtype=np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        encoder = model.get_submodule("encoder")
        with torch.no_grad():
            f = encoder(torch.from_numpy(x).float().permute(2, 0, 1)[None])[0].flatten(1).T
        feats.append(F.normalize(f, dim=1))
    assert sum(len(f) for f in feats) == 5 * 20
    logits = torch.cat(feats) @ model.get_parameter("pool.conv.weight").flatten(1).T
    top2 = logits.topk(2, dim=1).values
    assert math.isclose((top2[:, 0] - top2[:, 1]).mean().item(), math.log(100), rel_tol=1e-3)


def test_clear_errors_for_empty_folder_and_non_netvlad_model(tmp_path) -> None:
    out = str(tmp_path / "x.safetensors")
    with pytest.raises(ClusterInitError, match="no images"):
        main(["--model", "netvlad_vgg16", "--images", str(tmp_path), "--out", out])
    with pytest.raises(ClusterInitError, match="no netvlad head"):
        main(["--model", "poolformer_s12", "--images", str(tmp_path), "--out", out])


def test_too_few_features_for_k_is_explained(image_folder, tmp_path) -> None:
    out = str(tmp_path / "x.safetensors")
    argv = ["--model", "netvlad_vgg16", "--images", str(image_folder), "--out", out]
    with pytest.raises(ClusterInitError, match="lower --num-clusters"):
        main([*argv, "--num-clusters", "64", "--per-image", "2"])


def test_module_entry_point_reports_errors_without_a_traceback(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "models.cluster_init", "--model", "netvlad_vgg16",
         "--images", str(tmp_path / "absent"), "--out", str(tmp_path / "x.safetensors")],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=pathlib.Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "not a folder of images" in result.stderr
    assert "Traceback" not in result.stderr


def test_poolformer_head_from_a_sailsg_backbone_file(tmp_path) -> None:
    """The documented flow: sail-sg classifier file -> backbone -> clusters -> checkpoint."""
    sd = random_state(sailsg_keys((2, 2, 6, 2), (64, 128, 320, 512)), seed=2)
    backbone_file = tmp_path / "poolformer_s12.pth.tar"
    torch.save(sd, backbone_file)
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 30, 40, 3), dtype=np.uint8)
    for i in range(2):
        Image.fromarray(pixels[i]).save(images / f"{i}.png")
    out = tmp_path / "netvlad_poolformer_s12.safetensors"
    argv = ["--model", "netvlad_poolformer_s12", "--images", str(images), "--out", str(out)]
    main([*argv, "--backbone-weights", str(backbone_file), "--num-clusters", "2"])
    with safetensors.safe_open(str(out), framework="pt") as f:
        assert f.metadata()["backbone_weights"] == read_checkpoint(backbone_file).provenance
    built = build_model("netvlad_poolformer_s12", weights=out)
    loaded = built.module.state_dict()
    key = "network.6.1.mlp.fc2.weight"
    assert torch.equal(loaded["encoder." + key], sd[key])
    assert built.cfg.output_dim == 2 * 512
