"""Lowerings of bilinear and bilinear2 (export/runtime/lowerings/bilinear.py) against torch.

The torch side is the library's module (``create_pool``), itself tested against einsum and
plain loops in tests/test_bilinear.py. Each graph is built once and run on several input
sizes, odd ones and a 1x1 map included, with the output shapes' closed form checked too.
"""

import numpy as np
import onnx
import pytest
import torch

from export.runtime.graph import build_pool_graph
from export.runtime.lowering import lowerings_for
from export.runtime.sessions import create_session, run
from models.pooling import create_pool, parse_params
from tests.reference import CPU

BILINEAR_CASES = [
    dict(),
    dict(signed_sqrt=False),
    dict(normalize=False),
    dict(signed_sqrt=False, normalize=False, eps=1e-3),
]
PAIR_SHAPES = [((2, 3, 7, 5), 4), ((1, 1, 1, 1), 2), ((3, 5, 4, 9), 1)]  # (x shape, y's C)


def session_for(op: str, kw: dict) -> object:
    model = build_pool_graph(op, parse_params(op, **kw))
    onnx.checker.check_model(model, full_check=True)
    return create_session(model, CPU)


@pytest.mark.parametrize("kw", BILINEAR_CASES)
def test_bilinear_matches_torch(kw: dict) -> None:
    session = session_for("bilinear", kw)
    for shape, _ in PAIR_SHAPES:
        x = torch.randn(shape)
        (got,) = run(session, x.numpy())
        want = create_pool("bilinear", **kw)(x).numpy()
        assert got.shape == want.shape == (shape[0], shape[1] ** 2)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kw", BILINEAR_CASES)
def test_bilinear2_matches_torch_with_different_channel_counts(kw: dict) -> None:
    session = session_for("bilinear2", kw)
    for shape, c2 in PAIR_SHAPES:
        x, y = torch.randn(shape), torch.randn(shape[0], c2, *shape[2:])
        (got,) = run(session, x.numpy(), y.numpy())
        want = create_pool("bilinear2", **kw)(x, y).numpy()
        assert got.shape == want.shape == (shape[0], shape[1] * c2)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_bilinear2_graph_has_inputs_x_and_y_and_output_y_out() -> None:
    model = build_pool_graph("bilinear2", parse_params("bilinear2"))
    assert [v.name for v in model.graph.input] == ["x", "y"]
    assert [v.name for v in model.graph.output] == ["y_out"]
    dims = [[d.dim_param for d in v.type.tensor_type.shape.dim] for v in model.graph.input]
    assert dims == [["N", "C", "H", "W"], ["N", "C2", "H", "W"]]


def test_bilinear_of_zeros_is_zero_not_nan() -> None:
    """sign(0) * sqrt(0 + eps) is 0, and the norm is floored at eps, so 0 stays 0."""
    (got,) = run(session_for("bilinear", {}), np.zeros((1, 2, 3, 3), np.float32))
    np.testing.assert_array_equal(got, np.zeros((1, 4), np.float32))


def test_bilinear_worked_example() -> None:
    """One channel of [1, 2, 3, 4]: mean square 7.5; signed sqrt gives sqrt(7.5 + eps)."""
    x = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    (got,) = run(session_for("bilinear", dict(normalize=False)), x)
    np.testing.assert_allclose(got, [[np.sqrt(7.5)]], rtol=1e-6)


def test_bilinear2_in_float16() -> None:
    x, y = torch.randn(2, 3, 5, 7), torch.randn(2, 2, 5, 7)
    model = build_pool_graph("bilinear2", parse_params("bilinear2"), dtype="float16")
    (got,) = run(create_session(model, CPU), x.half().numpy(), y.half().numpy())
    assert got.dtype == np.float16
    want = create_pool("bilinear2")(x.half().float(), y.half().float()).numpy()
    # Normalised entries lie in [-1, 1]; float16 keeps about 3 decimal digits there.
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)


@pytest.mark.parametrize("op", ["bilinear", "bilinear2"])
def test_each_op_has_one_decomposition(op: str) -> None:
    assert [lw.kind for lw in lowerings_for(op)] == ["decomposition"]


def test_bilinear_exports_inside_a_model_with_dynamic_sizes() -> None:
    from export.parity import check_artifact
    from export.torch_export import export_module, torch_reference

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), create_pool("bilinear")).eval()
    result = export_module(model, torch.randn(2, 3, 12, 10), {0: "N", 2: "H", 3: "W"})
    assert [(n.op, n.kind) for n in result.lowered] == [("bilinear", "decomposition")]
    shapes = [(2, 3, 12, 10), (1, 3, 9, 15), (3, 3, 7, 7)]
    check_artifact(result.model, torch_reference(model), shapes, {"x": [0, 2, 3]}, shapes[0])


def test_two_input_ops_are_not_swapped_for_the_one_input_placeholder() -> None:
    from export.torch_export import LoweredPool, swap_pools

    assert isinstance(swap_pools(create_pool("bilinear")), LoweredPool)
    for pair in (create_pool("bilinear2"), create_pool("max_unpool", kernel_size=2)):
        swapped = swap_pools(pair)
        assert type(swapped) is type(pair)
