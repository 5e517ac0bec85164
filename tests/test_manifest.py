"""The manifest reader the service starts with: schema, digests, paths, and no torch."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from export.runtime.manifest import MANIFEST_NAME, ManifestError, load_manifest, verify_repository

ROOT = Path(__file__).resolve().parents[1]


def entry(path: str, data: bytes) -> dict[str, Any]:
    return {
        "kind": "pool_op",
        "path": path,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "opset": 20,
        "ir_version": 10,
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["N", 8, 4, 4]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["N", 8, 2, 2]}],
        "min_hw": None,
        "weights": "seeded-init(seed=0)",
        "op": "nonlocal",
        "params": {"in_channels": 8},
        "parity": {
            "shapes": [[2, 8, 4, 4], [1, 8, 4, 4], [3, 8, 4, 4]],
            "max_abs_error": 1e-7,
            "tolerance": 1e-5,
            "providers": ["CPUExecutionProvider"],
        },
    }


def write_repo(root: Path, models: dict[str, dict[str, Any]], **top: Any) -> None:
    manifest = {
        "format_version": 1,
        "created_utc": "2026-12-03T07:30:00Z",
        "producer": {"poolserve": "0.1.0"},
        "opset": 20,
        "ir_version": 10,
        "prefer": "standard",
        "default_model": None,
        "models": models,
        **top,
    }
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    data = b"not really onnx, but bytes with a digest"
    (tmp_path / "op" / "1").mkdir(parents=True)
    (tmp_path / "op" / "1" / "model.onnx").write_bytes(data)
    write_repo(tmp_path, {"op": entry("op/1/model.onnx", data)})
    return tmp_path


def test_a_consistent_repository_verifies(repo: Path) -> None:
    manifest = verify_repository(repo)
    assert manifest.models["op"].inputs[0].shape == ("N", 8, 4, 4)


def test_missing_or_unreadable_manifest_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="run `python -m export`"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not readable JSON"):
        load_manifest(tmp_path)


def test_other_format_versions_and_unknown_fields_are_refused(repo: Path) -> None:
    write_repo(repo, {}, format_version=2)
    with pytest.raises(ManifestError, match="format_version 2.*re-export"):
        load_manifest(repo)
    write_repo(repo, {}, surprise=True)
    with pytest.raises(ManifestError, match="does not match the manifest schema"):
        load_manifest(repo)


def test_a_bad_digest_a_path_outside_and_an_unknown_name_are_refused(repo: Path) -> None:
    data = (repo / "op" / "1" / "model.onnx").read_bytes()
    write_repo(repo, {"op": {**entry("op/1/model.onnx", data), "sha256": "a" * 64}})
    with pytest.raises(ManifestError, match="op: op/1/model.onnx has sha256"):
        verify_repository(repo)
    write_repo(repo, {"op": entry("../outside.onnx", data)})
    with pytest.raises(ManifestError, match="points outside the repository"):
        verify_repository(repo)
    write_repo(repo, {"op": entry("op/1/model.onnx", data)})
    with pytest.raises(ManifestError, match="other: not in the manifest"):
        verify_repository(repo, ["other"])


def test_reader_and_pbtxt_import_without_torch() -> None:
    code = "import sys, export.runtime.manifest, export.pbtxt; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
