"""Checkpoint layouts (sail-sg, timm, pytorch-NetVlad, Patch-NetVLAD), strict loading, security."""

import hashlib
import io
import pathlib
import re

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from models.weights import (
    CheckpointError,
    CheckpointMismatchError,
    backbone_state_dict,
    read_checkpoint,
    strip_data_parallel,
)
from models.zoo import build_model
from tests.reference import TORCHVISION_CONVS, random_state, sailsg_keys

S12 = ((2, 2, 6, 2), (64, 128, 320, 512))


def timm_key(key: str) -> str:
    """sail-sg -> timm, from the mapping table in reference-models.md."""
    if key.startswith("patch_embed.proj."):
        return "stem.conv." + key.removeprefix("patch_embed.proj.")
    if key.startswith("head."):
        return "head.fc." + key.removeprefix("head.")
    if key.startswith("norm."):
        return "head." + key
    m = re.match(r"network\.(\d+)\.(.*)", key)
    assert m is not None
    idx, rest = int(m[1]), m[2]
    if idx % 2:  # downsampling between stages: network.1/3/5 -> stages.1/2/3
        return f"stages.{(idx + 1) // 2}.downsample.conv.{rest.removeprefix('proj.')}"
    block, name = rest.split(".", 1)
    name = re.sub(r"^layer_scale_(\d)$", r"layer_scale\1.scale", name)
    return f"stages.{idx // 2}.blocks.{block}.{name}"


def test_timm_key_helper_reproduces_documented_examples() -> None:
    assert timm_key("network.0.0.layer_scale_1") == "stages.0.blocks.0.layer_scale1.scale"
    assert timm_key("network.3.proj.bias") == "stages.2.downsample.conv.bias"
    assert timm_key("network.4.5.layer_scale_2") == "stages.2.blocks.5.layer_scale2.scale"
    assert timm_key("norm.weight") == "head.norm.weight"
    assert timm_key("head.weight") == "head.fc.weight"


@pytest.fixture(scope="module")
def sail_s12(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    sd = random_state(sailsg_keys(*S12), seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "poolformer_s12.pth.tar"
    torch.save(sd, path)  # the release is a raw state_dict
    return path, sd


def test_sailsg_checkpoint_loads_with_provenance(sail_s12) -> None:
    path, sd = sail_s12
    built = build_model("poolformer_s12", weights=path)
    loaded = built.module.state_dict()
    assert len(loaded) == 132
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert built.provenance == f"{path.resolve()} sha256:{digest}"


def test_timm_layout_gives_identical_outputs_to_sailsg(sail_s12, tmp_path) -> None:
    path, sd = sail_s12
    timm_path = tmp_path / "poolformer_s12.sail_in1k.safetensors"
    safetensors.torch.save_file({timm_key(k): v for k, v in sd.items()}, str(timm_path))
    sail = build_model("poolformer_s12", weights=path)
    timm = build_model("poolformer_s12", weights=timm_path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(sail.module(x), timm.module(x))
    assert timm.provenance.endswith(hashlib.sha256(timm_path.read_bytes()).hexdigest())


def nanne_state(k: int, data_parallel: bool, vladv2: bool = False) -> dict[str, torch.Tensor]:
    """pytorch-NetVlad's keys: encoder.{idx}.* and pool.*, optionally DataParallel-wrapped."""
    enc, pool = ("encoder.module.", "pool.module.") if data_parallel else ("encoder.", "pool.")
    shapes: dict[str, tuple[int, ...]] = {}
    for idx, cin, cout in TORCHVISION_CONVS:
        shapes[f"{enc}{idx}.weight"], shapes[f"{enc}{idx}.bias"] = (cout, cin, 3, 3), (cout,)
    shapes[f"{pool}centroids"], shapes[f"{pool}conv.weight"] = (k, 512), (k, 512, 1, 1)
    if vladv2:
        shapes[f"{pool}conv.bias"] = (k,)
    return random_state(shapes, seed=k)


def test_nanne_checkpoint_with_data_parallel_prefixes_loads(tmp_path) -> None:
    sd = nanne_state(k=8, data_parallel=True)
    path = tmp_path / "model_best.pth.tar"
    recalls = {1: np.float64(0.852), 5: np.float64(0.948), 10: np.float64(0.97)}
    torch.save(
        {"epoch": 5, "state_dict": sd, "recalls": recalls, "best_score": recalls[5],
         "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "parallel": True},
        path,
    )  # fmt: skip
    built = build_model("netvlad_vgg16", weights=path)
    assert built.cfg.head_params["num_clusters"] == 8  # K read off pool.centroids
    assert built.cfg.output_dim == 8 * 512
    loaded = built.module.state_dict()
    assert torch.equal(loaded["encoder.28.weight"], sd["encoder.module.28.weight"])
    assert torch.equal(loaded["pool.centroids"], sd["pool.module.centroids"])
    with torch.no_grad():
        desc = built.module(torch.randn(2, 3, 48, 64))
    assert desc.shape == (2, 4096)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(2))


def test_vladv2_checkpoint_builds_a_biased_assignment(tmp_path) -> None:
    path = tmp_path / "v2.pth.tar"
    torch.save({"state_dict": nanne_state(k=4, data_parallel=False, vladv2=True)}, path)
    built = build_model("netvlad_vgg16", weights=path)
    assert built.cfg.head_params["vladv2"] is True
    assert "pool.conv.bias" in built.module.state_dict()


def patch_netvlad_checkpoint(path: pathlib.Path, k: int, num_pcs: int, declared: int) -> dict:
    sd = nanne_state(k=k, data_parallel=False)
    sd.update(random_state({"WPCA.0.weight": (num_pcs, k * 512, 1, 1), "WPCA.0.bias": (num_pcs,)}))
    torch.save({"num_pcs": declared, "state_dict": sd}, path)
    return sd


def test_patch_netvlad_wpca_checkpoint_yields_num_pcs_dims(tmp_path) -> None:
    path = tmp_path / "pitts_WPCA16.pth.tar"
    sd = patch_netvlad_checkpoint(path, k=4, num_pcs=16, declared=16)
    built = build_model("netvlad_vgg16_wpca4096", weights=path)
    assert (built.cfg.num_pcs, built.cfg.output_dim) == (16, 16)
    assert built.cfg.head_params["num_clusters"] == 4
    # Reference: the same checkpoint without WPCA gives the VLAD; whiten it by hand.
    plain = tmp_path / "plain.pth.tar"
    torch.save({k: v for k, v in sd.items() if not k.startswith("WPCA")}, plain)
    vlad_model = build_model("netvlad_vgg16", weights=plain).module
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        vlad = vlad_model(x)
        ref = F.normalize(vlad @ sd["WPCA.0.weight"].flatten(1).T + sd["WPCA.0.bias"], dim=1)
        out = built.module(x)
    assert out.shape == (2, 16)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_patch_netvlad_num_pcs_must_agree_with_wpca(tmp_path) -> None:
    path = tmp_path / "bad_WPCA.pth.tar"
    patch_netvlad_checkpoint(path, k=2, num_pcs=8, declared=4096)
    with pytest.raises(CheckpointError, match="num_pcs is 4096 but the whitening has 8"):
        build_model("netvlad_vgg16_wpca4096", weights=path)


def test_wpca_checkpoint_on_a_plain_model_lists_unexpected_keys_with_a_hint(tmp_path) -> None:
    path = tmp_path / "pitts_WPCA8.pth.tar"
    patch_netvlad_checkpoint(path, k=2, num_pcs=8, declared=8)
    with pytest.raises(CheckpointMismatchError) as err:
        build_model("netvlad_vgg16", weights=path)
    message = str(err.value)
    assert "unexpected (2): WPCA.0.bias, WPCA.0.weight" in message
    assert "hint: this checkpoint carries Patch-NetVLAD's WPCA: use a *_wpca* model" in message
    assert str(path.resolve()) in message


def test_mismatch_lists_missing_unexpected_and_wrongly_shaped_keys(sail_s12, tmp_path) -> None:
    _, sd = sail_s12
    broken = dict(sd)
    del broken["network.2.1.mlp.fc2.bias"]
    broken["network.9.0.extra"] = torch.zeros(1)
    broken["norm.weight"] = torch.zeros(256)
    path = tmp_path / "broken.safetensors"
    safetensors.torch.save_file(broken, str(path))
    with pytest.raises(CheckpointMismatchError) as err:
        build_model("poolformer_s12", weights=path)
    message = str(err.value)
    assert "missing (1): network.2.1.mlp.fc2.bias" in message
    assert "unexpected (1): network.9.0.extra" in message
    assert "wrong shape (1): norm.weight: checkpoint [256] vs model [512]" in message


def test_classifier_checkpoint_on_a_descriptor_suggests_cluster_init(sail_s12) -> None:
    path, _ = sail_s12
    with pytest.raises(CheckpointMismatchError, match="python -m models.cluster_init"):
        build_model("netvlad_poolformer_s12", weights=path)


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target: pathlib.Path) -> None:
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def test_pickle_bearing_checkpoint_is_refused_without_running_it(tmp_path) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Payload(marker)}, path)
    with pytest.raises(
        CheckpointError, match=r"refused: its pickle holds more than weights \(getattr\)"
    ):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pth.tar", ".safetensors"])
def test_truncated_file_gives_a_clear_error_naming_it(tmp_path, suffix) -> None:
    full = tmp_path / f"full{suffix}"
    state = {"w": torch.randn(64, 64)}
    if suffix == ".safetensors":
        safetensors.torch.save_file(state, str(full))
    else:
        torch.save(state, full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        read_checkpoint(cut)
    assert str(cut.resolve()) in str(err.value)


def test_empty_and_missing_files_are_clear_errors(tmp_path) -> None:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(empty)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "absent.pth")


def test_numpy_1x_scalar_names_in_legacy_files_are_accepted(tmp_path) -> None:
    """Checkpoints written under numpy 1.x name ``numpy.core.multiarray.scalar``."""
    buf = io.BytesIO()
    obj = {"state_dict": {"w": torch.ones(3)}, "best_score": np.float64(0.9)}
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\nscalar" in raw
    path = tmp_path / "legacy.pth.tar"
    path.write_bytes(raw)
    ckpt = read_checkpoint(path)
    assert torch.equal(ckpt.state_dict["w"], torch.ones(3))
    assert ckpt.extra == {"best_score": 0.9}


def test_state_dict_must_hold_tensors(tmp_path) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"w": torch.ones(1), "note": [1, 2]}, path)
    with pytest.raises(CheckpointError, match="non-tensor entries: \\['note'\\]"):
        read_checkpoint(path)


def test_strip_data_parallel_only_drops_module_segments() -> None:
    sd = {"module.encoder.0.weight": 1, "pool.module.centroids": 2, "modules.x": 3}
    assert strip_data_parallel(sd) == {  # type: ignore[arg-type]
        "encoder.0.weight": 1,
        "pool.centroids": 2,
        "modules.x": 3,
    }


def test_backbone_weights_come_out_of_classifier_and_torchvision_files(sail_s12) -> None:
    _, sd = sail_s12
    backbone = backbone_state_dict(sd, "poolformer_s12")
    assert len(backbone) == 128
    assert not any(k.startswith(("norm.", "head.")) for k in backbone)
    timm = backbone_state_dict({timm_key(k): v for k, v in sd.items()}, "poolformer_s12")
    assert backbone.keys() == timm.keys()
    tv = {f"features.{i}.weight": torch.zeros(1) for i, _, _ in TORCHVISION_CONVS}
    tv["classifier.0.weight"] = torch.zeros(1)
    assert set(backbone_state_dict(tv, "vgg16")) == {f"{i}.weight" for i, _, _ in TORCHVISION_CONVS}
