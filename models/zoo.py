"""Named models: one ``ModelCfg`` per model, read by the exporter and the service alike.

A cfg says what a model is (backbone, head, whitening), what input it expects (the
``InputPolicy``: resize rule, interpolation, value range, mean/std), what it returns
(output dim and flatten order) and where its published weights live. Because both the
exporter and the service preprocess through the same ``InputPolicy``, their inputs cannot
drift apart.

``build_model(name)`` gives a deterministic seeded model; ``build_model(name, weights=path)``
loads a checkpoint in any layout ``models.weights`` understands, reading K, vladv2 and
num_pcs off the checkpoint's shapes. Either way the result records its provenance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from models.descriptor import BACKBONES, DescriptorNet, Whitening, pooled_dim
from models.input_policy import IMAGENET_MEAN as IMAGENET_MEAN  # re-exported
from models.input_policy import IMAGENET_STD as IMAGENET_STD
from models.input_policy import InputPolicy as InputPolicy
from models.poolformer import POOLFORMER_SPECS, poolformer
from models.weights import (
    Checkpoint,
    CheckpointMismatchError,
    detect_layout,
    infer_descriptor_shapes,
    load_strict,
    poolformer_state_dict,
    read_checkpoint,
    seeded_provenance,
)


class UnknownModelError(ValueError):
    """The model name is not registered."""


@dataclass(frozen=True)
class ModelCfg:
    """Everything the exporter and the service need to know about one named model.

    Attributes:
        name: the registry name.
        task: ``classification`` (logits) or ``descriptor`` (unit-norm global descriptor).
        backbone: ``vgg16`` or a ``poolformer_*`` variant.
        preprocess: the input policy (resize rule, interpolation, value range, mean/std).
        output_dim: length of the output vector per image.
        flatten_order: how that vector is laid out: ``class`` (logit per ImageNet class),
            ``k-major`` (NetVLAD: index ``k * D + d``, cluster-major as pytorch-NetVlad),
            ``channel`` (one value per backbone channel), ``component`` (whitened: one
            value per principal component), or ``op`` (the pooling op's own order).
        weights: the published weights this model is meant to run with (URL or where to
            find them); the weights actually loaded are in ``BuiltModel.provenance``.
        head: the pooling-registry op aggregating local features (descriptors only).
        head_params: its parameters (``dim`` defaults to the backbone's channels).
        whitening: ``none``, ``wpca`` (Patch-NetVLAD's 1x1 conv) or ``linear``.
        num_pcs: whitening output dimension.
        seed: seed of the deterministic init used when no checkpoint is given.
    """

    name: str
    task: Literal["classification", "descriptor"]
    backbone: str
    preprocess: InputPolicy
    output_dim: int
    flatten_order: str
    weights: str
    head: str | None = None
    head_params: Mapping[str, Any] = field(default_factory=dict)
    whitening: Whitening = "none"
    num_pcs: int | None = None
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (tuples become lists when serialised)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BuiltModel:
    """A model ready for inference (eval mode) with the cfg it was built from.

    Attributes:
        module: the ``nn.Module``.
        cfg: the cfg, with K / num_pcs / num classes as read off the checkpoint.
        provenance: ``seeded-init(seed=N)`` or ``<checkpoint path> sha256:<digest>``.
    """

    module: nn.Module
    cfg: ModelCfg
    provenance: str


def _flatten_order(head: str, whitening: Whitening) -> str:
    if whitening != "none":
        return "component"
    if head == "netvlad":
        return "k-major"
    return "channel" if head in ("gem", "global_max", "global_avg", "rmac") else "op"


def classifier_cfg(name: str, weights: str) -> ModelCfg:
    """A PoolFormer ImageNet classifier with timm's eval transform: shorter side to
    ``floor(224 / crop_pct)`` (bicubic), centre crop 224, ImageNet mean/std."""
    policy = InputPolicy(
        resize="shorter_side",
        shorter_side=math.floor(224 / POOLFORMER_SPECS[name].crop_pct),
        crop=(224, 224),
        interpolation="bicubic",
    )
    return ModelCfg(name, "classification", name, policy, 1000, "class", weights)


def descriptor_cfg(
    name: str,
    backbone: str,
    preprocess: InputPolicy,
    weights: str,
    head: str = "netvlad",
    head_params: Mapping[str, Any] | None = None,
    whitening: Whitening = "none",
    num_pcs: int | None = None,
) -> ModelCfg:
    """A descriptor cfg; output dim and flatten order follow from head and whitening."""
    params = dict(head_params or {})
    dim = (
        num_pcs
        if whitening != "none" and num_pcs
        else pooled_dim(head, BACKBONES[backbone].dim, params)
    )
    return ModelCfg(
        name, "descriptor", backbone, preprocess, dim, _flatten_order(head, whitening),
        weights, head, params, whitening, num_pcs,
    )  # fmt: skip


_MODELS: dict[str, ModelCfg] = {}


def register_model(cfg: ModelCfg) -> ModelCfg:
    if cfg.name in _MODELS:
        raise ValueError(f"model {cfg.name!r} is registered twice")
    _MODELS[cfg.name] = cfg
    return cfg


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_MODELS)


def get_model_cfg(name: str) -> ModelCfg:
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; expected one of {list_models()}"
        ) from None


def module_from_cfg(cfg: ModelCfg, seed: int) -> nn.Module:
    """Build the module in eval mode with deterministic weights drawn from ``seed`` alone.

    Every part draws from its own seeded ``torch.Generator``; the global RNG is neither
    read nor advanced.
    """
    if cfg.task == "classification":
        model: nn.Module = poolformer(cfg.backbone, num_classes=cfg.output_dim, seed=seed)
    else:
        head = cfg.head or "netvlad"
        model = DescriptorNet(cfg.backbone, head, cfg.head_params, cfg.whitening, cfg.num_pcs, seed)
    return model.eval()


def resize_descriptor(
    cfg: ModelCfg, head_updates: Mapping[str, Any], num_pcs: int | None = None
) -> ModelCfg:
    """The descriptor cfg with some head parameters (e.g. ``num_clusters``) and the whitening
    width changed, its output dim recomputed; everything else, preprocessing included, kept."""
    params = {**cfg.head_params, **head_updates}
    pcs = (num_pcs or cfg.num_pcs) if cfg.whitening != "none" else None
    resized = descriptor_cfg(
        cfg.name, cfg.backbone, cfg.preprocess, cfg.weights,
        cfg.head or "netvlad", params, cfg.whitening, pcs,
    )  # fmt: skip
    return dataclasses.replace(resized, seed=cfg.seed)


def _fit_cfg(cfg: ModelCfg, ckpt: Checkpoint) -> tuple[ModelCfg, dict[str, Tensor]]:
    """The cfg resized to the checkpoint (K, vladv2, num_pcs, classes) and its state_dict
    in our layout."""
    if cfg.task == "classification":
        sd = poolformer_state_dict(ckpt.state_dict)
        head = sd.get("head.weight")
        classes = int(head.shape[0]) if head is not None and head.dim() == 2 else cfg.output_dim
        return dataclasses.replace(cfg, output_dim=classes), sd
    shapes = infer_descriptor_shapes(ckpt)
    updates: dict[str, Any] = {}
    if cfg.head == "netvlad":
        updates = {k: shapes[k] for k in ("num_clusters", "vladv2") if k in shapes}
    return resize_descriptor(cfg, updates, shapes.get("num_pcs")), ckpt.state_dict


def _hint(cfg: ModelCfg, layout: str) -> str:
    """What to do when a checkpoint of a known layout does not fit this model."""
    if cfg.task == "descriptor" and layout in (
        "sail-sg-poolformer", "timm-poolformer", "torchvision-vgg16",
    ):  # fmt: skip
        return (
            f"\n  hint: this is a {layout} backbone checkpoint with no descriptor head; build one "
            f"with: python -m models.cluster_init --model {cfg.name} --backbone-weights <file> ..."
        )
    if layout == "patch-netvlad" and cfg.whitening == "none":
        return "\n  hint: this checkpoint carries Patch-NetVLAD's WPCA: use a *_wpca* model"
    return ""


def build_model(
    name: str | ModelCfg, weights: str | Path | None = None, seed: int | None = None
) -> BuiltModel:
    """Build a named model in eval mode, seeded or from a checkpoint.

    Args:
        name: a registered name, or a ``ModelCfg``.
        weights: a checkpoint file (safetensors or torch); None for the seeded init.
        seed: overrides ``cfg.seed`` for the seeded init.

    Raises:
        UnknownModelError: no such model.
        CheckpointError: the file cannot be read safely; ``CheckpointMismatchError`` when
            it does not fit (missing, unexpected and wrongly-shaped keys are listed).
    """
    cfg = name if isinstance(name, ModelCfg) else get_model_cfg(name)
    seed = cfg.seed if seed is None else seed
    if weights is None:
        return BuiltModel(module_from_cfg(cfg, seed), cfg, seeded_provenance(seed))
    ckpt = read_checkpoint(weights)
    cfg, state_dict = _fit_cfg(cfg, ckpt)
    module = module_from_cfg(cfg, seed)
    try:
        load_strict(module, state_dict, source=str(ckpt.path))
    except CheckpointMismatchError as exc:
        raise CheckpointMismatchError(f"{exc}{_hint(cfg, detect_layout(state_dict))}") from None
    return BuiltModel(module, cfg, ckpt.provenance)


_SAIL = "https://github.com/sail-sg/poolformer/releases/download/v1.0/{}.pth.tar"
_PATCH_NETVLAD = "https://huggingface.co/TobiasRobotics/Patch-NetVLAD/resolve/main/{}.pth.tar"

for _variant in POOLFORMER_SPECS:
    register_model(classifier_cfg(_variant, _SAIL.format(_variant)))

register_model(
    descriptor_cfg(
        "netvlad_vgg16",
        "vgg16",
        InputPolicy(resize="keep"),
        "pytorch-NetVlad VGG16 + NetVLAD (K=64) Pitts30k checkpoint.pth.tar, linked from "
        "github.com/Nanne/pytorch-NetVlad's README (Google Drive)",
        head_params={"num_clusters": 64, "dim": 512},
    )
)
register_model(
    descriptor_cfg(
        "netvlad_vgg16_wpca4096",
        "vgg16",
        InputPolicy(resize="exact", size=(480, 640)),
        _PATCH_NETVLAD.format("pitts_WPCA4096"),
        head_params={"num_clusters": 64, "dim": 512},
        whitening="wpca",
        num_pcs=4096,
    )
)
register_model(
    descriptor_cfg(
        "netvlad_poolformer_s12",
        "poolformer_s12",
        InputPolicy(resize="exact", size=(480, 640)),
        "no published head: sail-sg poolformer_s12 backbone "
        f"({_SAIL.format('poolformer_s12')}) + NetVLAD clusters from models.cluster_init",
        head_params={"num_clusters": 64, "dim": 512},
    )
)
register_model(
    descriptor_cfg(
        "netvlad_poolformer_s12_224",
        "poolformer_s12",
        InputPolicy(resize="exact", size=(224, 224)),
        "as netvlad_poolformer_s12, at 224x224: the small, fast descriptor for tests and smoke "
        "runs",
        head_params={"num_clusters": 64, "dim": 512},
    )
)
