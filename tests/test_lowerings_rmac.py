"""Lowering of rmac (export/runtime/lowerings/rmac.py): built for one fixed H, W.

The reference is the library's module (tested against a plain loop of cirtorch's LF.rmac in
tests/test_rmac.py); the graph's region count is checked against the plain-loop grid.
"""

import numpy as np
import onnx
import pytest
import torch

from export.runtime.errors import LoweringError
from export.runtime.graph import build_pool_graph
from export.runtime.lowering import lowerings_for
from export.runtime.sessions import ORT_ERRORS, create_session, run
from models.pooling import create_pool, parse_params
from tests.reference import CPU, input_dims, reference_regions, run_without_torch

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


def test_rmac_graph_builds_and_runs_without_torch() -> None:
    """rmac on a 1x1 map has one region, the map itself, so it is twice the normalised MAC:
    2 * 0.5 / (0.5 + 1e-6); torch is blocked."""
    script = """
    import numpy as np
    from export.runtime.graph import build_pool_graph
    from export.runtime.sessions import create_session, run
    from models.pooling import parse_params
    rmac = build_pool_graph("rmac", parse_params("rmac"), static_hw=(1, 1))
    x = np.full((1, 1, 1, 1), 0.5, np.float32)
    (y,) = run(create_session(rmac, ["CPUExecutionProvider"]), x)
    print("rmac", round(float(y.item()), 5))
    """
    assert run_without_torch(script) == ["rmac 2.0", "torch loaded: []"]
