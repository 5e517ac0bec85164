"""``python -m export``: the repository it writes, checked against torch and protobuf.

One small repository (the 224 descriptor and the nonlocal pool op) is exported once per
session; every check reads it back independently: hashlib for the digests, onnx for the
graph's dims, onnxruntime against freshly built torch modules on shapes the export's gate
never ran, Triton's own ModelConfig proto (tritonclient's) for config.pbtxt.
"""

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import text_format  # type: ignore[import-untyped]
from tritonclient.grpc import model_config_pb2 as mc

import export.__main__ as cli
from app.core.config import Settings
from export.repository import (
    NONLOCAL_PARAMS,
    SMOKE_MODEL,
    RepositoryUsageError,
    export_repository,
)
from export.runtime.errors import ExportError
from export.runtime.manifest import MANIFEST_NAME, ManifestError, load_manifest, verify_repository
from export.runtime.sessions import create_session, run
from export.torch_export import torch_reference
from models.pooling.nonlocal_pool import NonLocalParams, NonLocalPool
from models.zoo import build_model

MODELS = [SMOKE_MODEL, "nonlocal_pool"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model_repository")
    export_repository(out, MODELS)
    return out


def graph_dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_layout_is_tritons_with_the_manifest_at_the_root(repo: Path) -> None:
    assert sorted(p.name for p in repo.iterdir()) == sorted([MANIFEST_NAME, *MODELS])
    for name in MODELS:
        assert sorted(str(p.relative_to(repo)) for p in (repo / name).rglob("*")) == [
            f"{name}/1",
            f"{name}/1/model.onnx",
            f"{name}/config.pbtxt",
        ]
    assert not list(repo.rglob(".*.tmp"))


def test_manifest_validates_and_its_digests_are_the_files(repo: Path) -> None:
    manifest = verify_repository(repo)
    assert (manifest.format_version, manifest.opset, manifest.ir_version) == (1, 20, 10)
    assert manifest.prefer == "standard"
    assert manifest.default_model == SMOKE_MODEL  # the default descriptor was not exported
    assert set(manifest.models) == set(MODELS)
    for entry in manifest.models.values():
        data = (repo / entry.path).read_bytes()
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert entry.bytes == len(data)
        model = onnx.load_from_string(data)
        assert (model.ir_version, entry.ir_version) == (10, 10)
        assert {o.domain: o.version for o in model.opset_import}[""] == entry.opset == 20
    assert json.loads((repo / MANIFEST_NAME).read_text())["models"][SMOKE_MODEL]["cfg"]


def test_descriptor_entry_records_io_cfg_lowerings_and_parity(repo: Path) -> None:
    entry = load_manifest(repo).models[SMOKE_MODEL]
    model = onnx.load(str(repo / entry.path))
    assert graph_dims(model.graph.input[0]) == ["N", 3, "H", "W"]
    assert graph_dims(model.graph.output[0]) == ["N", 32768]
    assert [(t.name, t.dtype, list(t.shape)) for t in entry.inputs] == [
        ("x", "float32", ["N", 3, "H", "W"])
    ]
    assert [(t.name, t.dtype, list(t.shape)) for t in entry.outputs] == [
        ("y", "float32", ["N", 32768])
    ]
    assert (entry.kind, entry.min_hw, entry.weights) == ("descriptor", 64, "seeded-init(seed=0)")
    assert entry.cfg is not None
    assert entry.cfg["preprocess"]["size"] == [224, 224]
    assert entry.cfg["preprocess"]["resize"] == "exact"
    # PoolFormer-S12 has 2+2+6+2 token mixers, each written by the native lowering.
    assert [(r.op, r.kind) for r in entry.lowerings] == [("poolformer_mixer", "native")] * 12
    assert entry.lowerings[0].params["pool_size"] == 3
    shapes = entry.parity.shapes
    assert len(shapes) >= 3
    assert {s[0] for s in shapes} - {2}  # a batch other than the traced 2
    assert any(s[2] % 2 and s[3] % 2 for s in shapes)  # odd H and W
    assert entry.parity.max_abs_error <= entry.parity.tolerance == 1e-5


def test_pool_op_entry_records_op_params_and_fixed_spatial_dims(repo: Path) -> None:
    entry = load_manifest(repo).models["nonlocal_pool"]
    assert (entry.kind, entry.op, entry.min_hw, entry.cfg) == ("pool_op", "nonlocal", None, None)
    assert entry.params == NonLocalParams(**NONLOCAL_PARAMS).model_dump(mode="json")
    model = onnx.load(str(repo / entry.path))
    assert graph_dims(model.graph.input[0]) == ["N", 256, 14, 14]
    assert graph_dims(model.graph.output[0]) == ["N", 256, 7, 7]
    assert [list(t.shape) for t in entry.outputs] == [["N", 256, 7, 7]]


def torch_out(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]


def test_onnxruntime_matches_torch_off_the_export_shapes(repo: Path) -> None:
    manifest = load_manifest(repo)
    rng = np.random.default_rng(7)
    descriptor = build_model(SMOKE_MODEL).module
    used = set(manifest.models[SMOKE_MODEL].parity.shapes)
    x = rng.standard_normal((4, 3, 75, 102)).astype(np.float32)
    assert x.shape not in used
    session = create_session(repo / manifest.models[SMOKE_MODEL].path)
    (got,) = run(session, x)
    np.testing.assert_allclose(got, torch_out(descriptor, x), rtol=0, atol=1e-5)

    pool = NonLocalPool(NonLocalParams(**NONLOCAL_PARAMS)).eval()
    x = rng.standard_normal((5, 256, 14, 14)).astype(np.float32)
    (got,) = run(create_session(repo / manifest.models["nonlocal_pool"].path), x)
    np.testing.assert_allclose(got, torch_out(pool, x), rtol=0, atol=1e-5)


def test_a_tampered_or_missing_model_file_is_refused(repo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    path = copy / "nonlocal_pool" / "1" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of the weights
    path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"nonlocal_pool: .* has sha256 .* re-export"):
        verify_repository(copy)
    verify_repository(copy, [SMOKE_MODEL])  # the untouched model still verifies
    (copy / SMOKE_MODEL / "1" / "model.onnx").unlink()
    with pytest.raises(ManifestError, match=f"{SMOKE_MODEL}: .* is missing"):
        verify_repository(copy, [SMOKE_MODEL])


def test_a_failing_parity_gate_stops_the_export_and_leaves_no_manifest(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reference that is off by 1e-3 stands in for an export that is wrong."""
    real = torch_reference

    def off_by_a_little(module: torch.nn.Module) -> object:
        def run_off(*arrays: np.ndarray) -> Sequence[np.ndarray]:
            return [out + np.float32(1e-3) for out in real(module)(*arrays)]

        return run_off

    monkeypatch.setattr("export.repository.torch_reference", off_by_a_little)
    shutil.copy(repo / MANIFEST_NAME, tmp_path / MANIFEST_NAME)  # an older, valid-looking one
    with pytest.raises(
        ExportError, match=r"nonlocal_pool: the parity gate .* max \|onnx - torch\|"
    ):
        export_repository(tmp_path, ["nonlocal_pool"])
    assert not (tmp_path / MANIFEST_NAME).exists()
    assert not (tmp_path / "nonlocal_pool").exists()  # nothing written for a refused model
    assert cli.main(["--out", str(tmp_path), "--models", "nonlocal_pool"]) == cli.EXIT_GATE


def test_bad_requests_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(RepositoryUsageError, match="unknown model.*'nope'"):
        export_repository(tmp_path, ["nonlocal_pool", "nope"])
    with pytest.raises(RepositoryUsageError, match="it is seeded"):
        export_repository(tmp_path, ["nonlocal_pool"], weights={"nonlocal_pool": tmp_path})
    with pytest.raises(RepositoryUsageError, match="no such file"):
        export_repository(tmp_path, [SMOKE_MODEL], weights={SMOKE_MODEL: tmp_path / "x.pth"})
    assert list(tmp_path.iterdir()) == []
    assert cli.main(["--out", str(tmp_path), "--models", "nope"]) == cli.EXIT_USAGE
    assert cli.main(["--out", str(tmp_path), "--weights", "no-equals-sign"]) == cli.EXIT_USAGE


def test_cli_exports_then_skips_with_if_missing(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    command = [sys.executable, "-m", "export", "--out", str(out), "--models", "nonlocal_pool"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].split()[0] == "nonlocal_pool"
    assert "parity" in first.stdout
    assert "wrote" in first.stdout
    verify_repository(out, ["nonlocal_pool"])
    stamp = (out / MANIFEST_NAME).stat().st_mtime_ns
    again = subprocess.run(
        [*command, "--if-missing"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert (out / MANIFEST_NAME).stat().st_mtime_ns == stamp


# config.pbtxt -----------------------------------------------------------------------------

ONNX_TO_TRITON: dict[int, int] = {
    onnx.TensorProto.FLOAT: mc.TYPE_FP32,
    onnx.TensorProto.FLOAT16: mc.TYPE_FP16,
    onnx.TensorProto.INT64: mc.TYPE_INT64,
}
"""The graph's element type -> Triton's, written out here rather than taken from export."""


def triton_config(repo: Path, name: str) -> Any:
    """``<name>/config.pbtxt`` as Triton's own ModelConfig; an unknown field fails the parse."""
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())


def check_tensors(tensors: Any, values: Sequence[onnx.ValueInfoProto], batched: bool) -> None:
    """Names, types and dims as the graph has them, the batch dim left to Triton if batched."""
    assert [t.name for t in tensors] == [v.name for v in values]
    for tensor, value in zip(tensors, values, strict=True):
        assert tensor.data_type == ONNX_TO_TRITON[value.type.tensor_type.elem_type]
        dims = [-1 if isinstance(d, str) else d for d in graph_dims(value)]
        assert ([-1] if batched else []) + list(tensor.dims) == dims


def test_config_pbtxt_is_tritons_model_config_for_the_graph(repo: Path) -> None:
    manifest = load_manifest(repo)
    for name, entry in manifest.models.items():
        config = triton_config(repo, name)
        graph = onnx.load(str(repo / entry.path)).graph
        assert (config.name, config.platform) == (name, "onnxruntime_onnx")
        # Batched exactly when every input and output leads with a symbolic dim (here: all).
        batched = config.max_batch_size > 0
        assert batched == all(
            isinstance(graph_dims(v)[0], str) for v in (*graph.input, *graph.output)
        )
        assert batched
        assert config.max_batch_size == Settings.model_fields["max_batch_size"].default
        check_tensors(config.input, graph.input, batched)
        check_tensors(config.output, graph.output, batched)
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000
        assert [(g.count, g.kind) for g in config.instance_group] == [
            (1, mc.ModelInstanceGroup.KIND_GPU)
        ]
        assert config.parameters["cudnn_conv_algo_search"].string_value == "0"  # EXHAUSTIVE


def test_config_pbtxt_warms_up_every_input_at_a_real_size(repo: Path) -> None:
    sizes = {SMOKE_MODEL: [3, 224, 224], "nonlocal_pool": [256, 14, 14]}
    for name, entry in load_manifest(repo).models.items():
        (warmup,) = triton_config(repo, name).model_warmup
        graph = onnx.load(str(repo / entry.path)).graph
        assert warmup.batch_size == 1
        assert sorted(warmup.inputs) == sorted(v.name for v in graph.input)
        for value in graph.input:
            sample = warmup.inputs[value.name]
            assert sample.data_type == ONNX_TO_TRITON[value.type.tensor_type.elem_type]
            assert sample.zero_data
            assert list(sample.dims) == sizes[name]  # H, W: the preprocessing's size
            for got, dim in zip(sample.dims, graph_dims(value)[1:], strict=True):
                assert got == dim if isinstance(dim, int) else got >= (entry.min_hw or 1)
