"""The model repository's ``manifest.json``: its schema, reading it and verifying files.

The exporter writes it (``export.repository``); the service reads it at start-up and
refuses to start when a model file is missing or its sha256 differs. This module imports
no torch. The layout is described in ``docs/model-repository.md``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from export.runtime.errors import ExportError
from models.digest import sha256_file

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

Dim = int | str
"""A fixed dim (int) or a symbolic one (its name)."""


class ManifestError(ExportError):
    """The manifest is missing, malformed, or does not match the files beside it."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Strict):
    name: str
    dtype: str
    shape: tuple[Dim, ...]


class LoweringRecord(_Strict):
    """One pooling layer of a model and the lowering kind that wrote it."""

    op: str
    kind: str
    params: dict[str, Any]


class ParityRecord(_Strict):
    """What the parity gate measured for the artifact."""

    shapes: tuple[tuple[int, ...], ...]
    max_abs_error: float
    tolerance: float
    providers: tuple[str, ...]
    min_cosine: float | None = None
    """fp16 variants: the smallest cosine similarity of an output row to torch's fp32 row."""
    min_cosine_bound: float | None = None
    """fp16 variants: the gate's bound on ``min_cosine``."""


ModelKind = Literal["descriptor", "classification", "pool_op"]
"""What a repository model is: an image model, or a pooling op holding its weights."""


class ModelEntry(_Strict):
    """One model of the repository (see ``docs/model-repository.md``)."""

    kind: ModelKind
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int
    opset: int
    ir_version: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    min_hw: int | None = None
    weights: str
    cfg: dict[str, Any] | None = None
    op: str | None = None
    params: dict[str, Any] | None = None
    lowerings: tuple[LoweringRecord, ...] = ()
    parity: ParityRecord


class Manifest(_Strict):
    format_version: int
    created_utc: str
    producer: dict[str, str]
    opset: int
    ir_version: int
    prefer: str
    default_model: str | None = None
    models: dict[str, ModelEntry]


def load_manifest(root: str | Path) -> Manifest:
    """Parse ``<root>/manifest.json``; raises ``ManifestError`` with the reason."""
    path = Path(root) / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_NAME} in {root}: run `python -m export`") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} is not readable JSON: {exc}") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"{path} has format_version {version!r}; this poolserve reads {FORMAT_VERSION}: "
            "re-export the repository"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"{path} does not match the manifest schema: {exc}") from None


def model_path(root: str | Path, entry: ModelEntry) -> Path:
    """The entry's ``.onnx`` file, refusing paths that leave the repository."""
    base = Path(root).resolve()
    path = (base / entry.path).resolve()
    if not path.is_relative_to(base):
        raise ManifestError(f"model path {entry.path!r} points outside the repository")
    return path


def verify_repository(root: str | Path, names: list[str] | None = None) -> Manifest:
    """Load the manifest and check each model file exists and has its recorded sha256.

    Args:
        root: the repository folder.
        names: only these models (all when None); an unknown name is an error.

    Raises:
        ManifestError: naming every model whose file is missing or whose digest differs.
    """
    manifest = load_manifest(root)
    wanted = list(manifest.models) if names is None else names
    problems = []
    for name in wanted:
        entry = manifest.models.get(name)
        if entry is None:
            problems.append(f"{name}: not in the manifest ({sorted(manifest.models)})")
            continue
        path = model_path(root, entry)
        if not path.is_file():
            problems.append(f"{name}: {entry.path} is missing")
        elif (digest := sha256_file(path)) != entry.sha256:
            problems.append(
                f"{name}: {entry.path} has sha256 {digest}, the manifest says {entry.sha256} "
                "(the file was modified or replaced: re-export)"
            )
    if problems:
        raise ManifestError("model repository check failed:\n  " + "\n  ".join(problems))
    return manifest


def merge_repositories(into: str | Path, source: str | Path) -> Manifest:
    """Add every model of ``source`` to ``into``: copy their folders, merge the manifests
    (``source``'s entries win on a clash), verify every file. For models exported elsewhere
    and carried to a host whose torch cannot export them (docs/gpu-check.md).

    Raises:
        ManifestError: either manifest is unreadable, or a merged file's digest is wrong.
    """
    into, source = Path(into), Path(source)
    target, extra = load_manifest(into), load_manifest(source)
    for entry in extra.models.values():
        folder = Path(entry.path).parts[0]
        shutil.copytree(source / folder, into / folder, dirs_exist_ok=True)
    merged = target.model_copy(update={"models": {**target.models, **extra.models}})
    (into / MANIFEST_NAME).write_text(merged.model_dump_json(indent=2) + "\n")
    return verify_repository(into)
