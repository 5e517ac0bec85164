"""Lowerings of fractional_max (export/runtime/lowerings/fractional.py): samples as a second
input.

The reference is torch's own ``F.fractional_max_pool2d`` given the same ``_random_samples``;
every lowering must match it exactly (values and indices), since the interval arithmetic is
replayed in float32 step for step.
"""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch

from export.runtime.errors import LoweringError
from export.runtime.graph import build_pool_function, build_pool_graph
from export.runtime.lowering import LoweringKind, select_lowering
from export.runtime.sessions import create_session, run
from models.pooling import create_pool, parse_params
from models.pooling.fractional import FractionalMaxParams, fractional_max_pool
from tests.reference import (
    CPU,
    as_arrays,
    assert_outputs_match,
    input_dims,
    run_without_torch,
    torch_fractional_max,
)

KINDS: list[LoweringKind] = ["decomposition", "custom"]
X_VALUE = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["N", 3, 8, 8]))
FRACTIONAL_CASES = [
    ((25, 25), dict(kernel_size=2, output_ratio=0.7)),  # Graham's sqrt(2)-ish reduction
    ((10, 13), dict(kernel_size=2, output_size=(7, 9))),
    ((13, 10), dict(kernel_size=(3, 2), output_size=(5, 8))),
    ((17, 32), dict(kernel_size=3, output_ratio=(0.5, 0.75))),
    ((6, 9), dict(kernel_size=2, output_size=(1, 3))),  # one row: its start is in - k
    ((8, 8), dict(kernel_size=1, output_size=(8, 8))),  # every pixel once
    ((9, 11), dict(kernel_size=(4, 5), output_size=(6, 7))),  # the largest output allowed
    ((11, 7), dict(kernel_size=3, output_ratio=(0.3, 0.45))),  # ratio giving 3 x 3
]


def fractional_session(kw: dict, kind: LoweringKind, dtype: str = "float32") -> object:
    model = build_pool_graph(
        "fractional_max", parse_params("fractional_max", **kw), dtype, kind=kind
    )
    onnx.checker.check_model(model, full_check=True)
    return create_session(model, CPU)


def torch_arrays(x: torch.Tensor, samples: torch.Tensor, kw: dict) -> list[np.ndarray]:
    return as_arrays(torch_fractional_max(x, samples, **kw))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("return_indices", [False, True])
@pytest.mark.parametrize(("hw", "base"), FRACTIONAL_CASES)
def test_fractional_matches_torch_exactly(hw, base, return_indices, kind) -> None:
    kw = dict(base, return_indices=return_indices)
    session = fractional_session(kw, kind)
    h, w = hw
    for shape in [(2, 3, h, w), (1, 1, h + 3, w + 2), (3, 2, h + 1, w)]:
        x, samples = torch.randn(shape), torch.rand(shape[0], shape[1], 2)
        got = run(session, x.numpy(), samples.numpy())
        assert_outputs_match(got, torch_arrays(x, samples, kw), 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_fractional_extreme_samples(kind: LoweringKind) -> None:
    """u = 0 and the largest float32 below 1, where truncation is closest to changing."""
    kw = dict(kernel_size=2, output_ratio=(0.6, 0.55), return_indices=True)
    session = fractional_session(kw, kind)
    below_one = np.nextafter(np.float32(1), np.float32(0))
    for h, w in [(20, 29), (31, 17), (7, 100)]:
        x = torch.randn(2, 2, h, w)
        samples = torch.tensor([[[0.0, below_one], [below_one, 0.0]]] * 2)
        got = run(session, x.numpy(), samples.numpy())
        assert_outputs_match(got, torch_arrays(x, samples, kw), 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_fractional_ties_take_the_first_and_nan_the_last_as_torch(kind: LoweringKind) -> None:
    kw = dict(kernel_size=3, output_size=(4, 5), return_indices=True)
    session = fractional_session(kw, kind)
    x = torch.randint(0, 3, (2, 3, 9, 11)).float()  # many equal maxima per window
    x[0, 0, 2:5, 2:5] = float("nan")
    x[1, 2, 0, :] = float("nan")
    samples = torch.rand(2, 3, 2)
    got = run(session, x.numpy(), samples.numpy())
    assert np.isnan(got[0]).any()
    assert_outputs_match(got, torch_arrays(x, samples, kw), 0.0)


def test_fractional_graph_inputs_and_their_dims() -> None:
    model = build_pool_graph(
        "fractional_max", parse_params("fractional_max", kernel_size=2, output_ratio=0.5)
    )
    assert [v.name for v in model.graph.input] == ["x", "samples"]
    assert input_dims(model) == [["N", "C", "H", "W"], ["N", "C", 2]]
    assert [v.name for v in model.graph.output] == ["y"]


def test_fractional_float16_decomposition_matches_the_library() -> None:
    """In float16 the library (like torch on CUDA) does the interval arithmetic in float32;
    a max selects an input value, so the result is exact."""
    kw = dict(kernel_size=2, output_ratio=0.7, return_indices=True)
    session = fractional_session(kw, "decomposition", dtype="float16")
    x, samples = torch.randn(2, 3, 15, 12).half(), torch.rand(2, 3, 2).half()
    got = run(session, x.numpy(), samples.numpy())
    want = fractional_max_pool(x, FractionalMaxParams.model_validate(kw), samples)
    assert isinstance(want, tuple)
    assert_outputs_match(got, as_arrays(want), 0.0)
    with pytest.raises(LoweringError, match="not float16"):
        build_pool_graph(
            "fractional_max", parse_params("fractional_max", **kw), "float16", kind="custom"
        )


def test_fractional_cannot_replace_a_layer_inside_a_model() -> None:
    """A model has no samples input to give it: the refusal is a LoweringError."""
    from export.torch_export import export_module

    params = parse_params("fractional_max", kernel_size=2, output_size=(4, 4))
    lowering = select_lowering("fractional_max", params)
    with pytest.raises(LoweringError, match="needs inputs \\('x', 'samples'\\)"):
        build_pool_function(lowering, params, X_VALUE, "fractional_0")
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        create_pool("fractional_max", kernel_size=2, output_size=4, seed=1),
    ).eval()
    with pytest.raises(LoweringError):
        export_module(model, torch.randn(2, 3, 12, 12), {0: "N"})


def test_fractional_graphs_build_and_run_without_torch() -> None:
    """Fractional 2x2 windows of a 4x4 ramp with u = 0: alpha = (4 - 2) / (2 - 1) = 2,
    starts 0 and 2, so the maxima are the 2x2 blocks' bottom-right corners 5, 7, 13, 15, at
    those flat indices; torch is blocked."""
    script = """
    import numpy as np
    from export.runtime.graph import build_pool_graph
    from export.runtime.sessions import create_session, run
    from models.pooling import parse_params
    x, u = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), np.zeros((1, 1, 2), np.float32)
    params = parse_params("fractional_max", kernel_size=2, output_size=2, return_indices=True)
    for kind in ("decomposition", "custom"):
        model = build_pool_graph("fractional_max", params, kind=kind)
        y, i = run(create_session(model, ["CPUExecutionProvider"]), x, u)
        print(kind, y.ravel().tolist(), i.ravel().tolist())
    """
    assert run_without_torch(script) == [
        "decomposition [5.0, 7.0, 13.0, 15.0] [5, 7, 13, 15]",
        "custom [5.0, 7.0, 13.0, 15.0] [5, 7, 13, 15]",
        "torch loaded: []",
    ]
