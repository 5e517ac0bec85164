"""fp16 variants: float32 on the wire, float16 inside, and the gate's bounds against the
torch fp32 original (torch is the reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.fp16 import MIN_COSINE, check_fp16, row_cosines, to_fp16
from export.parity import Reference
from export.runtime.errors import ExportError
from export.runtime.manifest import load_manifest, model_path
from models.zoo import build_model
from tests.app_fixtures import SMOKE_MODEL

SHAPES = [(1, 3, 224, 224), (2, 3, 224, 224)]


@pytest.fixture(scope="module")
def small_model(app_repository: Path) -> tuple[onnx.ModelProto, Reference]:
    """The exported small descriptor and its torch fp32 original (same seeded weights)."""
    entry = load_manifest(app_repository).models[SMOKE_MODEL]
    module = build_model(SMOKE_MODEL).module.eval()

    def reference(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [module(torch.from_numpy(x)).numpy()]

    return onnx.load(str(model_path(app_repository, entry))), reference


def test_fp16_keeps_float32_io_and_runs_float16_inside(small_model) -> None:
    half = to_fp16(small_model[0])
    float32 = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == float32 for v in half.graph.input)
    assert all(v.type.tensor_type.elem_type == float32 for v in half.graph.output)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)


def test_fp16_descriptor_passes_the_gate_against_torch_fp32(small_model) -> None:
    model, reference = small_model
    report = check_fp16(to_fp16(model), reference, SHAPES)
    assert report.min_cosine >= MIN_COSINE
    assert 0 < report.max_abs_error <= 1e-3  # float16 really rounds: not a float32 copy
    with pytest.raises(ExportError, match="max"):
        check_fp16(to_fp16(model), reference, SHAPES[:1], max_abs_error=1e-9)


def test_row_cosines_closed_form() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(row_cosines(a, b), [0.0, 1.0, 1.0, 0.0])
