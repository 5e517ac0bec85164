"""Data-driven NetVLAD initialisation, as the paper does it (Arandjelovic et al., A.1).

Run the backbone over a folder of images, sample local features from each (L2-normalised
when the head normalises its input, as the layer will see them), cluster them with k-means
and set the head from the centroids with ``NetVLAD.init_from_centroids``: for vladv1,
``conv.weight = alpha * c_k / |c_k|`` with the alpha that makes the best cluster's assignment
weight ~100x the runner-up's. The whole model (backbone included) is written as safetensors,
which ``build_model(name, weights=...)`` then loads like any other checkpoint::

    python -m models.cluster_init --model netvlad_poolformer_s12 \\
        --backbone-weights poolformer_s12.pth.tar --images ./db_images --out head.safetensors

pytorch-NetVlad's defaults are kept: 100 features per image, at most 50,000 in all,
100 k-means iterations. The k-means here is our own: k-means++ seeding, then Lloyd steps,
deterministic for a seed.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from models.descriptor import DescriptorNet
from models.pooling.netvlad import NetVLAD
from models.transforms import image_to_tensor
from models.weights import backbone_state_dict, load_strict, read_checkpoint, save_checkpoint
from models.zoo import InputPolicy, build_model, get_model_cfg, resize_descriptor

log = logging.getLogger("models.cluster_init")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class ClusterInitError(ValueError):
    """The inputs cannot give a cluster initialisation (no images, too few features, ...)."""


@dataclass(frozen=True)
class ClusterResult:
    """What one run did.

    Attributes:
        alpha: the assignment sharpness set on the head.
        num_clusters: K.
        num_images: images the features came from.
        num_descriptors: local features clustered.
    """

    alpha: float
    num_clusters: int
    num_images: int
    num_descriptors: int


def _kmeans_pp(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to the
    squared distance to the nearest centre chosen so far."""
    first = int(torch.randint(x.shape[0], (1,), generator=generator))
    centres = [x[first]]
    d2 = (x - x[first]).square().sum(dim=1)
    for _ in range(1, k):
        total = float(d2.sum())
        weights = d2 / total if total > 0 else torch.ones_like(d2)
        idx = int(torch.multinomial(weights, 1, generator=generator))
        centres.append(x[idx])
        d2 = torch.minimum(d2, (x - x[idx]).square().sum(dim=1))
    return torch.stack(centres)


def kmeans(x: Tensor, k: int, iters: int = 100, seed: int = 0) -> Tensor:
    """Lloyd's k-means with k-means++ seeding, deterministic for a seed.

    Args:
        x: points, shape (M, D).
        k: number of clusters, at most M.
        iters: maximum Lloyd iterations (stops early once the centres stop moving).
        seed: seeds the k-means++ draws.

    Returns:
        The centres, shape (k, D). A cluster that loses all its points keeps its centre.
    """
    if x.dim() != 2 or not 1 <= k <= x.shape[0]:
        raise ClusterInitError(f"k-means needs 1 <= k <= points, got k={k}, x={tuple(x.shape)}")
    x = x.double()
    centres = _kmeans_pp(x, k, torch.Generator().manual_seed(seed))
    for _ in range(iters):
        labels = torch.cdist(x, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        moved = torch.where((counts > 0)[:, None], sums / counts.clamp(min=1)[:, None], centres)
        if torch.equal(moved, centres):
            break
        centres = moved
    return centres


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise ClusterInitError(f"{root}: not a folder of images")
    images = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ClusterInitError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def _load_image(path: Path, policy: InputPolicy) -> Tensor:
    try:
        with Image.open(path) as image:
            return image_to_tensor(policy, image)[None]
    except (UnidentifiedImageError, OSError) as exc:
        raise ClusterInitError(f"{path}: cannot read image ({exc})") from None


@torch.no_grad()
def sample_features(
    model: DescriptorNet,
    images: Sequence[Path],
    policy: InputPolicy,
    per_image: int,
    generator: torch.Generator,
) -> Tensor:
    """Up to ``per_image`` random local features from each image, as rows (M, D)."""
    pool = model.pool
    normalize = isinstance(pool, NetVLAD) and pool.params.normalize_input
    rows = []
    for path in images:
        feats = model.local_features(_load_image(path, policy))[0].flatten(1).T  # (h*w, D)
        if normalize:
            feats = F.normalize(feats, p=2, dim=1)
        pick = torch.randperm(feats.shape[0], generator=generator)[:per_image]
        rows.append(feats[pick])
    return torch.cat(rows)


def cluster_init(
    model: DescriptorNet,
    images: Sequence[Path],
    policy: InputPolicy,
    *,
    per_image: int = 100,
    max_descriptors: int = 50_000,
    iters: int = 100,
    seed: int = 0,
) -> ClusterResult:
    """Set ``model.pool`` (a NetVLAD head) from k-means on the backbone's local features.

    Raises:
        ClusterInitError: the head is not NetVLAD, or there are fewer features than clusters.
    """
    pool = model.pool
    if not isinstance(pool, NetVLAD):
        raise ClusterInitError(f"cluster init sets a netvlad head; this model has {model.head}")
    if per_image < 1 or max_descriptors < 1:
        raise ClusterInitError("per_image and max_descriptors must be >= 1")
    generator = torch.Generator().manual_seed(seed)
    wanted = math.ceil(max_descriptors / per_image)
    if len(images) > wanted:  # pytorch-NetVlad samples ceil(N / per_image) images
        order = torch.randperm(len(images), generator=generator)[:wanted].sort().values
        images = [images[int(i)] for i in order]
    descriptors = sample_features(model, images, policy, per_image, generator)[:max_descriptors]
    k = pool.params.num_clusters
    if descriptors.shape[0] < k:
        raise ClusterInitError(
            f"{descriptors.shape[0]} local features for {k} clusters: add images, raise "
            "--per-image, or lower --num-clusters"
        )
    centroids = kmeans(descriptors, k, iters=iters, seed=seed)
    alpha = pool.init_from_centroids(centroids.float(), descriptors)
    return ClusterResult(alpha, k, len(images), int(descriptors.shape[0]))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.cluster_init",
        description="Initialise a NetVLAD head from k-means on a folder of images.",
    )
    parser.add_argument("--model", required=True, help="a named descriptor model with netvlad")
    parser.add_argument("--images", required=True, type=Path, help="folder of images")
    parser.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    parser.add_argument("--backbone-weights", type=Path, help="classifier or descriptor file")
    parser.add_argument("--num-clusters", type=int, help="K (default: the model's)")
    parser.add_argument("--per-image", type=int, default=100)
    parser.add_argument("--max-descriptors", type=int, default=50_000)
    parser.add_argument("--iters", type=int, default=100, help="k-means iterations")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    """The command line: build, load the backbone, cluster, write the checkpoint."""
    args = _parser().parse_args(argv)
    cfg = get_model_cfg(args.model)
    if cfg.task != "descriptor" or cfg.head != "netvlad":
        raise ClusterInitError(f"{args.model} has no netvlad head to initialise")
    if args.num_clusters is not None:
        cfg = resize_descriptor(cfg, {"num_clusters": args.num_clusters})
    built = build_model(cfg, seed=args.seed)
    model = built.module
    if not isinstance(model, DescriptorNet):
        raise ClusterInitError(f"{args.model} is not a descriptor model")
    backbone = built.provenance
    if args.backbone_weights is not None:
        ckpt = read_checkpoint(args.backbone_weights)
        encoder_sd = backbone_state_dict(ckpt.state_dict, cfg.backbone)
        load_strict(model.encoder, encoder_sd, source=f"{ckpt.path} (backbone)")
        backbone = ckpt.provenance
    else:
        log.warning("no --backbone-weights: clustering features of a randomly initialised backbone")
    images = list_images(args.images)
    result = cluster_init(
        model, images, cfg.preprocess, per_image=args.per_image,
        max_descriptors=args.max_descriptors, iters=args.iters, seed=args.seed,
    )  # fmt: skip
    metadata = {
        "model": cfg.name,
        "num_clusters": str(result.num_clusters),
        "alpha": repr(result.alpha),
        "backbone_weights": backbone,
        "num_images": str(result.num_images),
        "num_descriptors": str(result.num_descriptors),
        "kmeans_iters": str(args.iters),
        "seed": str(args.seed),
    }
    out = save_checkpoint(model.state_dict(), args.out, metadata)
    log.info("wrote %s: K=%s alpha=%.4g from %d features", out, metadata["num_clusters"],
             result.alpha, result.num_descriptors)  # fmt: skip
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        main()
    except ValueError as exc:  # our errors (and the loaders') carry actionable messages
        log.error("%s", exc)
        sys.exit(2)
