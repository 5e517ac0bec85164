"""merge_repositories: models exported elsewhere join a repository, digests checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export.runtime.manifest import ManifestError, load_manifest, merge_repositories


def _split(repository: Path, root: Path, moved: str) -> tuple[Path, Path]:
    """Two repositories from one: ``moved`` alone in the second, the rest in the first."""
    into, source = root / "into", root / "source"
    shutil.copytree(repository, into)
    raw = json.loads((into / "manifest.json").read_text())
    source.mkdir()
    shutil.move(into / moved, source / moved)
    only = {**raw, "models": {moved: raw["models"].pop(moved)}}
    (source / "manifest.json").write_text(json.dumps(only))
    (into / "manifest.json").write_text(json.dumps(raw))
    return into, source


def test_merge_restores_the_whole_repository(app_repository: Path, tmp_path: Path) -> None:
    into, source = _split(app_repository, tmp_path, "netvlad_head")
    assert "netvlad_head" not in load_manifest(into).models
    merged = merge_repositories(into, source)
    assert sorted(merged.models) == sorted(load_manifest(app_repository).models)
    assert load_manifest(into).models == load_manifest(app_repository).models


def test_merge_refuses_a_file_that_does_not_match_its_digest(
    app_repository: Path, tmp_path: Path
) -> None:
    into, source = _split(app_repository, tmp_path, "netvlad_head")
    model = source / "netvlad_head" / "1" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    with pytest.raises(ManifestError, match="netvlad_head"):
        merge_repositories(into, source)
