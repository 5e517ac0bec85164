"""Checkpoint reading, layout conversion and strict loading.

Files are read as safetensors (preferred) or with ``torch.load(weights_only=True)``: nothing
is ever unpickled beyond tensors, plain containers and numpy scalars (pytorch-NetVlad stores
its recalls as numpy floats). A truncated or corrupt file, or one that carries other Python
objects, raises ``CheckpointError`` naming the file.

Layouts understood (all mapped onto our modules' keys, which equal the first of each pair):

- PoolFormer, sail-sg release: a raw state_dict, ``patch_embed.proj.*``, ``network.*``,
  ``norm.*``, ``head.*``, used as is.
- PoolFormer, timm port (``stem.conv.*``, ``stages.{i}.blocks.{j}.*``,
  ``stages.{i}.downsample.conv.*``, ``head.norm.*``, ``head.fc.*``): renamed to sail-sg's.
  The tensors are the same, but timm's graph differs at the head: timm pools first and
  applies its norm (a LayerNorm2d, eps 1e-6) to the pooled 1x1 map, while sail-sg applies
  GroupNorm(1, C) to the full map and then pools. Our model keeps sail-sg's order, so with
  timm weights its logits differ slightly from timm's own model (timm reports 77.15% top-1
  for S12 against the paper's 77.2%).
- pytorch-NetVlad: ``{'state_dict': {...}, 'epoch', 'recalls', ...}`` with ``encoder.N.*``
  and ``pool.*``; ``.module.`` segments from DataParallel are dropped.
- Patch-NetVLAD: the same plus ``WPCA.0.weight`` (num_pcs, K*D, 1, 1) and ``WPCA.0.bias``,
  and a top-level ``num_pcs`` that must agree with them.
- torchvision VGG16 (``features.N.*``): a backbone for ``models.cluster_init`` only.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from numpy._core import multiarray
from torch import Tensor, nn

from models.digest import sha256_file


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or holds something other than weights."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys or shapes do not fit the model."""


@dataclass(frozen=True)
class Checkpoint:
    """A state_dict read from disk, with where it came from.

    Attributes:
        path: the file, resolved.
        sha256: hex digest of the file's bytes.
        state_dict: the weights, DataParallel prefixes removed.
        extra: the file's non-tensor top-level values (``num_pcs``, ``epoch``, ...) or its
            safetensors metadata.
    """

    path: Path
    sha256: str
    state_dict: dict[str, Tensor]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def provenance(self) -> str:
        """``<path> sha256:<digest>``, what the service reports as the weights' source."""
        return f"{self.path} sha256:{self.sha256}"


def seeded_provenance(seed: int) -> str:
    """The provenance string of a model whose weights come from a seeded init."""
    return f"seeded-init(seed={seed})"


# numpy scalars rebuild from a dtype and raw bytes; nothing in them can run code.
_NUMPY_SAFE: list[Any] = [
    multiarray.scalar,
    (multiarray.scalar, "numpy.core.multiarray.scalar"),  # name in numpy 1.x pickles
    np.dtype,
    *[getattr(np.dtypes, f"{t}DType") for t in ("Float16", "Float32", "Float64", "Bool")],
    *[getattr(np.dtypes, f"{s}{b}DType") for s in ("Int", "UInt") for b in (8, 16, 32, 64)],
]


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte header length and then a JSON object."""
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (not a dict)
            return tensors, dict(f.metadata() or {})
    except safetensors.SafetensorError as exc:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({exc})") from None


def _offending_object(message: str) -> str:
    """The global or class torch's weights-only unpickler refused, else its reason."""
    for pattern in (r"GLOBAL (\S+)", r"got <class '([^']+)'>", r"Unpickler error:\s*(\S.*)"):
        found = re.search(pattern, message)
        if found:
            return found[1].strip()
    return "unknown content"


def _read_torch(path: Path) -> object:
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Weights only load failed" not in message:
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({message})") from None
        what = _offending_object(message)
        raise CheckpointError(
            f"{path}: refused: its pickle holds more than weights ({what}): Python objects, "
            "or corruption. Re-save its state_dict as safetensors on a machine you trust."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({reason})") from None


def _unwrap(obj: object, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Find the state_dict inside a training checkpoint; keep scalar extras."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    for key in ("state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            extra = {k: v for k, v in obj.items() if isinstance(v, int | float | str | bool)}
            return dict(inner), extra
    return dict(obj), {}


def strip_data_parallel(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop DataParallel's ``module.`` segments (``encoder.module.0.w`` -> ``encoder.0.w``)."""
    return {re.sub(r"(^|\.)module\.", r"\1", k): v for k, v in state_dict.items()}


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a safetensors or torch checkpoint safely and return its tensors.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, carries pickled objects,
            or holds no state_dict of tensors. The message names the file.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if _is_safetensors(path):
        state, extra = _read_safetensors(path)
    else:
        state, extra = _unwrap(_read_torch(path), path)
    bad = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
    if bad or not state:
        raise CheckpointError(
            f"{path}: expected a state_dict of tensors; non-tensor entries: {bad[:5]}"
        )
    return Checkpoint(path, sha256_file(path), strip_data_parallel(state), extra)


def save_checkpoint(
    state_dict: Mapping[str, Tensor], path: str | Path, metadata: Mapping[str, str]
) -> Path:
    """Write tensors (made contiguous, on CPU) and string metadata as safetensors."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    out = Path(path)
    safetensors.torch.save_file(tensors, str(out), metadata=dict(metadata))
    return out


def detect_layout(state_dict: Mapping[str, Tensor]) -> str:
    """Name the published layout a state_dict follows (used for conversion and messages)."""
    keys = state_dict.keys()
    if "stem.conv.weight" in keys:
        return "timm-poolformer"
    if "patch_embed.proj.weight" in keys:
        return "sail-sg-poolformer"
    if "features.0.weight" in keys:
        return "torchvision-vgg16"
    if "WPCA.0.weight" in keys:
        return "patch-netvlad"
    if any(k.startswith("pool.") for k in keys):
        return "pytorch-netvlad" if "encoder.0.weight" in keys else "descriptor"
    return "unknown"


_TIMM_RULES: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
    (r"^stem\.conv\.", "patch_embed.proj."),
    (r"^stages\.(\d+)\.downsample\.conv\.", lambda m: f"network.{2 * int(m[1]) - 1}.proj."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"network.{2 * int(m[1])}.{m[2]}."),
    (r"layer_scale(\d)\.scale$", r"layer_scale_\1"),
    (r"^head\.norm\.", "norm."),
    (r"^head\.fc\.", "head."),
]


def timm_to_sailsg(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename timm's PoolFormer (v1) keys to sail-sg's; the tensors are unchanged."""
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _TIMM_RULES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def poolformer_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A PoolFormer classifier state_dict in sail-sg's layout, whichever it came in."""
    if detect_layout(state_dict) == "timm-poolformer":
        return timm_to_sailsg(state_dict)
    return dict(state_dict)


def backbone_state_dict(state_dict: Mapping[str, Tensor], backbone: str) -> dict[str, Tensor]:
    """The backbone's weights out of a classifier or descriptor checkpoint, keyed for
    ``DescriptorNet.encoder`` (classifier head, pool and whitening keys are dropped)."""
    layout = detect_layout(state_dict)
    if backbone == "vgg16" and layout == "torchvision-vgg16":
        prefix = "features."
    elif backbone.startswith("poolformer") and layout.endswith("poolformer"):
        sd = poolformer_state_dict(state_dict)
        return {k: v for k, v in sd.items() if k.split(".")[0] in ("patch_embed", "network")}
    else:
        prefix = "encoder."
    return {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}


def _listing(title: str, items: list[str], limit: int = 12) -> str:
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}): {', '.join(items[:limit])}{more}"


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Load every key or nothing; a mismatch lists the missing, unexpected and
    wrongly-shaped keys.

    Raises:
        CheckpointMismatchError: the keys or shapes differ from the module's.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {list(v.shape)} vs model {list(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        message = f"{source} does not fit the model (layout: {detect_layout(state_dict)})"
        for title, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", shapes),
        ):
            if items:
                message += _listing(title, items)
        raise CheckpointMismatchError(message)
    module.load_state_dict(dict(state_dict), strict=True)


def infer_descriptor_shapes(ckpt: Checkpoint) -> dict[str, Any]:
    """Structure read off a descriptor checkpoint: K (``num_clusters``) and ``vladv2`` from
    ``pool.*``, and ``num_pcs`` from ``WPCA.0.bias`` or ``whiten.bias``.

    Raises:
        CheckpointError: a Patch-NetVLAD file whose ``num_pcs`` disagrees with its WPCA.
    """
    sd, found = ckpt.state_dict, {}
    centroids = sd.get("pool.centroids")
    if centroids is not None and centroids.dim() == 2:
        found["num_clusters"] = int(centroids.shape[0])
        found["vladv2"] = "pool.conv.bias" in sd
    for key in ("WPCA.0.bias", "whiten.bias"):
        if key in sd:
            found["num_pcs"] = int(sd[key].shape[0])
    declared = ckpt.extra.get("num_pcs")
    if declared is not None and "num_pcs" in found and int(declared) != found["num_pcs"]:
        raise CheckpointError(
            f"{ckpt.path}: num_pcs is {declared} but the whitening has {found['num_pcs']} outputs"
        )
    return found
