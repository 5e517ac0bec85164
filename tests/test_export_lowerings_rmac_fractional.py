"""Lowerings of rmac (built for a fixed H, W) and fractional_max (samples as a second input).

fractional_max's reference is torch's own ``F.fractional_max_pool2d`` given the same
``_random_samples``; every lowering must match it exactly (values and indices), since the
interval arithmetic is replayed in float32 step for step. rmac's reference is the library's
module, and its region count is checked against the plain-loop grid of tests/test_rmac.py.
"""

import subprocess
import sys

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
import torch.nn.functional as F

import models.pooling.fractional  # noqa: F401  (each import registers its op)
import models.pooling.rmac  # noqa: F401
from export.runtime.errors import LoweringError
from export.runtime.graph import build_pool_function, build_pool_graph
from export.runtime.lowering import Kind, lowerings_for, select_lowering
from export.runtime.sessions import ORT_ERRORS, create_session, run
from models.pooling import create_pool, parse_params
from models.pooling.fractional import FractionalMaxParams, fractional_max_pool
from tests.test_rmac import reference_regions

CPU = ["CPUExecutionProvider"]
COVERED = {"fractional_max", "rmac"}
"""Ops whose parity cases live here rather than in test_export_lowerings.CASES."""
KINDS: list[Kind] = ["decomposition", "custom"]
X_VALUE = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["N", 3, 8, 8]))


def input_dims(model: onnx.ModelProto) -> list[list[str | int]]:
    return [
        [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in model.graph.input
    ]


# ---------------------------------------------------------------- fractional_max

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


def torch_fractional(x: torch.Tensor, samples: torch.Tensor, kw: dict) -> list[np.ndarray]:
    """torch's built-in with the same samples (it wants the ratio as a pair)."""
    ratio = kw.get("output_ratio")
    out = F.fractional_max_pool2d(
        x,
        kw["kernel_size"],
        output_size=kw.get("output_size"),
        output_ratio=(ratio, ratio) if isinstance(ratio, float) else ratio,
        return_indices=kw.get("return_indices", False),
        _random_samples=samples,
    )
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def fractional_session(kw: dict, kind: Kind, dtype: str = "float32") -> object:
    model = build_pool_graph(
        "fractional_max", parse_params("fractional_max", **kw), dtype, kind=kind
    )
    onnx.checker.check_model(model, full_check=True)
    return create_session(model, CPU)


def assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)  # NaN positions included


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
        assert_same(got, torch_fractional(x, samples, kw))


@pytest.mark.parametrize("kind", KINDS)
def test_fractional_extreme_samples(kind: Kind) -> None:
    """u = 0 and the largest float32 below 1, where truncation is closest to changing."""
    kw = dict(kernel_size=2, output_ratio=(0.6, 0.55), return_indices=True)
    session = fractional_session(kw, kind)
    below_one = np.nextafter(np.float32(1), np.float32(0))
    for h, w in [(20, 29), (31, 17), (7, 100)]:
        x = torch.randn(2, 2, h, w)
        samples = torch.tensor([[[0.0, below_one], [below_one, 0.0]]] * 2)
        assert_same(run(session, x.numpy(), samples.numpy()), torch_fractional(x, samples, kw))


@pytest.mark.parametrize("kind", KINDS)
def test_fractional_ties_take_the_first_and_nan_the_last_as_torch(kind: Kind) -> None:
    kw = dict(kernel_size=3, output_size=(4, 5), return_indices=True)
    session = fractional_session(kw, kind)
    x = torch.randint(0, 3, (2, 3, 9, 11)).float()  # many equal maxima per window
    x[0, 0, 2:5, 2:5] = float("nan")
    x[1, 2, 0, :] = float("nan")
    samples = torch.rand(2, 3, 2)
    got = run(session, x.numpy(), samples.numpy())
    assert np.isnan(got[0]).any()
    assert_same(got, torch_fractional(x, samples, kw))


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
    want = fractional_max_pool(x, FractionalMaxParams(**kw), samples)
    assert isinstance(want, tuple)
    assert_same(got, [t.numpy() for t in want])
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


# ---------------------------------------------------------------- rmac

RMAC_SIZES = [
    (7, 7),
    (10, 13),
    (10, 14),
    (13, 10),
    (2, 32),
    (11, 47),
    (1, 1),
    (1, 6),
    (5, 3),
    (30, 40),
]


def rmac_model(hw: tuple[int, int], levels: int = 3, dtype: str = "float32") -> onnx.ModelProto:
    model = build_pool_graph("rmac", parse_params("rmac", levels=levels), dtype, static_hw=hw)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("hw", RMAC_SIZES)
def test_rmac_matches_torch_at_its_fixed_size(hw: tuple[int, int]) -> None:
    session = create_session(rmac_model(hw), CPU)
    for n, c in [(1, 3), (2, 5), (3, 1)]:
        for x in (torch.rand(n, c, *hw), torch.randn(n, c, *hw)):
            (got,) = run(session, x.numpy())
            want = create_pool("rmac")(x).numpy()
            assert got.shape == want.shape == (n, c, 1, 1)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("levels", [1, 2, 5])
def test_rmac_other_level_counts(levels: int) -> None:
    session = create_session(rmac_model((17, 23), levels), CPU)
    x = torch.rand(2, 4, 17, 23)
    (got,) = run(session, x.numpy())
    np.testing.assert_allclose(
        got, create_pool("rmac", levels=levels)(x).numpy(), rtol=0, atol=1e-5
    )


def test_rmac_graph_has_one_slice_per_region_of_the_reference_grid() -> None:
    """The grid is baked in: the region count follows (H, W), as the loop reference's does."""
    counts = {}
    for hw in RMAC_SIZES:
        slices = sum(node.op_type == "Slice" for node in rmac_model(hw).graph.node)
        assert slices == len(reference_regions(*hw, 3))
        counts[hw] = slices
    assert len(set(counts.values())) >= 4  # the sizes above change the grid


def test_rmac_needs_static_hw() -> None:
    (lowering,) = lowerings_for("rmac")
    assert lowering.needs_static_hw
    assert not lowering.needs_weights
    with pytest.raises(LoweringError, match=r"pass static_hw=\(H, W\)"):
        build_pool_graph("rmac", parse_params("rmac"))
    for bad in [(0, 5), (3,), (2.5, 4)]:
        with pytest.raises(LoweringError, match="static_hw must be two positive ints"):
            build_pool_graph("rmac", parse_params("rmac"), static_hw=bad)  # type: ignore[arg-type]


def test_rmac_graph_fixes_h_and_w_and_refuses_other_sizes() -> None:
    model = rmac_model((10, 13))
    assert input_dims(model) == [["N", "C", 10, 13]]
    session = create_session(model, CPU)
    with pytest.raises(ORT_ERRORS, match="Got invalid dimensions for input: x"):
        run(session, np.zeros((1, 2, 10, 14), np.float32))


def test_rmac_in_float16() -> None:
    x = torch.rand(2, 3, 9, 12).half()
    (got,) = run(create_session(rmac_model((9, 12), dtype="float16"), CPU), x.numpy())
    assert got.dtype == np.float16
    want = create_pool("rmac")(x.float()).numpy()
    # The descriptor sums 21 unit-norm vectors, so entries reach ~10, where float16's
    # spacing is 2**-7; the maxima and norms round at 11 significant bits along the way.
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_static_hw_fixes_the_grid_of_any_op() -> None:
    kw = dict(kernel_size=3, stride=2)
    model = build_pool_graph("max", parse_params("max", **kw), static_hw=(9, 8))
    assert input_dims(model) == [["N", "C", 9, 8]]
    x = torch.randn(2, 3, 9, 8)
    (got,) = run(create_session(model, CPU), x.numpy())
    np.testing.assert_array_equal(got, create_pool("max", **kw)(x).numpy())


TORCH_FREE = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
from export.runtime.graph import build_pool_graph
from export.runtime.sessions import create_session, run
from models.pooling import parse_params
cpu = ["CPUExecutionProvider"]
rmac = build_pool_graph("rmac", parse_params("rmac"), static_hw=(1, 1))
(y,) = run(create_session(rmac, cpu), np.full((1, 1, 1, 1), 0.5, np.float32))
print("rmac", round(float(y.item()), 5))
x, u = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), np.zeros((1, 1, 2), np.float32)
params = parse_params("fractional_max", kernel_size=2, output_size=2, return_indices=True)
for kind in ("decomposition", "custom"):
    session = create_session(build_pool_graph("fractional_max", params, kind=kind), cpu)
    y, i = run(session, x, u)
    print(kind, y.ravel().tolist(), i.ravel().tolist())
print("torch loaded:", [m for m in sys.modules if m.startswith("torch") and sys.modules[m]])
"""


def test_rmac_and_fractional_graphs_build_and_run_without_torch() -> None:
    """Worked examples with torch blocked. rmac on a 1x1 map has one region, the map itself,
    so it is twice the normalised MAC: 2 * 0.5 / (0.5 + 1e-6). Fractional 2x2 windows of a
    4x4 ramp with u = 0: alpha = (4 - 2) / (2 - 1) = 2, starts 0 and 2, so the maxima are the
    2x2 blocks' bottom-right corners 5, 7, 13, 15, at those flat indices."""
    result = subprocess.run(
        [sys.executable, "-c", TORCH_FREE], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == [
        "rmac 2.0",
        "decomposition [5.0, 7.0, 13.0, 15.0] [5, 7, 13, 15]",
        "custom [5.0, 7.0, 13.0, 15.0] [5, 7, 13, 15]",
        "torch loaded: []",
    ]
