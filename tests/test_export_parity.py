"""The parity gate: it passes a correct artifact and names the check a broken one fails."""

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from export.parity import check_artifact
from export.runtime.errors import ExportError
from export.runtime.graph import build_pool_graph
from models.pooling import create_pool, parse_params

MAX = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
SHAPES = [(2, 3, 16, 16), (1, 2, 17, 23), (3, 1, 9, 8)]
DYNAMIC = {"x": [0, 1, 2, 3]}


def reference(x: np.ndarray) -> list[np.ndarray]:
    return [create_pool("max", **MAX)(torch.from_numpy(x)).numpy()]


def good_model() -> onnx.ModelProto:
    return build_pool_graph("max", parse_params("max", **MAX))


def test_correct_artifact_passes_and_reports_the_error() -> None:
    report = check_artifact(good_model(), reference, SHAPES, DYNAMIC, traced_shape=SHAPES[0])
    assert report.shapes == tuple(SHAPES)
    assert report.max_abs_error == 0.0
    assert report.tolerance == 1e-5


def test_wrong_numbers_fail_with_the_measured_error() -> None:
    model = good_model()
    (node,) = model.graph.node
    for attr in node.attribute:
        if attr.name == "kernel_shape":
            attr.ints[:] = [5, 5]  # a different pool that still runs
    with pytest.raises(ExportError, match=r"input shape \(2, 3, 16, 16\), output 0: .*shape"):
        check_artifact(model, reference, SHAPES, DYNAMIC)
    loose = build_pool_graph("avg", parse_params("avg", **MAX))
    with pytest.raises(ExportError, match=r"max \|onnx - torch\| = .* > 1e-05"):
        check_artifact(loose, reference, SHAPES, DYNAMIC)


def test_frozen_dynamic_dim_fails() -> None:
    model = good_model()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 16
    with pytest.raises(
        ExportError, match="axis 2 was declared dynamic but the graph fixes it to 16"
    ):
        check_artifact(model, reference, SHAPES, DYNAMIC)


def test_checker_failure_is_reported() -> None:
    model = good_model()
    model.graph.node.append(helper.make_node("Relu", ["missing"], ["z"]))
    with pytest.raises(ExportError, match="onnx.checker"):
        check_artifact(model, reference, SHAPES, DYNAMIC)


def test_shape_cover_rules() -> None:
    with pytest.raises(ExportError, match="at least 3 input shapes"):
        check_artifact(good_model(), reference, SHAPES[:2], DYNAMIC)
    with pytest.raises(ExportError, match="other than the traced"):
        check_artifact(good_model(), reference, [SHAPES[0]] * 3, DYNAMIC, traced_shape=SHAPES[0])


def test_onnxruntime_failure_at_run_time_is_an_export_error() -> None:
    """A graph that hard-codes the traced size fails inside onnxruntime at another size;
    the gate names the shape."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", "C", "H", "W"])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3, 16, 16])
    fixed = helper.make_tensor("fixed", onnx.TensorProto.INT64, [4], [2, 3, 16, 16])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "fixed"], ["y"])], "g", [x], [y], [fixed]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    with pytest.raises(ExportError, match=r"onnxruntime failed at input shape \(1, 2, 17, 23\)"):
        check_artifact(model, lambda a: [a], SHAPES, DYNAMIC)
