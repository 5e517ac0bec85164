"""Lowering of nonlocal (export/runtime/lowerings/nonlocal_pool.py): weights as initializers.

The reference is the real ``nonlocalpooling`` package's ``NonLocalPool2d``, whose
``state_dict()`` feeds the graph directly. The graph is built for the params' in_size, and
runs on several batch sizes.
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
from models.pooling.examples_torch import module_weights
from tests.reference import CPU, input_dims, nonlocal_reference

TOLERANCE = 1e-5
NONLOCAL_CASES = [
    ((8, 8), 4, None, False),
    ((8, 12), 3, 16, True),
    ((6, 10), 2, 5, False),  # odd token grid 3x5
    ((8, 8), 5, 128, False),  # out >= 128: tokens carry out // 2 = 64 channels
    ((8, 4), 3, 130, True),
]


@pytest.mark.parametrize(("size", "c", "o", "squeeze"), NONLOCAL_CASES)
def test_nonlocal_matches_the_nonlocalpooling_package(size, c, o, squeeze) -> None:
    ref = nonlocal_reference(size, c, o, squeeze).eval()
    params = parse_params("nonlocal", in_size=size, in_channels=c, out_channels=o, squeeze=squeeze)
    model = build_pool_graph("nonlocal", params, weights=module_weights(ref))
    onnx.checker.check_model(model, full_check=True)
    assert input_dims(model) == [["N", c, *size]]
    session = create_session(model, CPU)
    for n in (1, 2, 3):
        x = torch.randn(n, c, *size)
        (got,) = run(session, x.numpy())
        with torch.no_grad():
            want = ref(x).numpy()
        assert got.shape == want.shape == (n, o or c, size[0] // 2, size[1] // 2)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)


def test_nonlocal_matches_the_library_module_with_seeded_weights() -> None:
    kw = dict(in_size=(8, 6), in_channels=3, out_channels=4, seed=7)
    module = create_pool("nonlocal", **kw).eval()
    params = parse_params("nonlocal", **kw)
    model = build_pool_graph("nonlocal", params, weights=module_weights(module))
    x = torch.randn(2, 3, 8, 6)
    (got,) = run(create_session(model, CPU), x.numpy())
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=0, atol=TOLERANCE)


def test_static_hw_must_agree_with_nonlocal_in_size() -> None:
    """in_size fixes H and W without static_hw; a static_hw that agrees is accepted."""
    (lowering,) = lowerings_for("nonlocal")
    assert not lowering.needs_static_hw
    weights = module_weights(nonlocal_reference((8, 8), 2).eval())
    params = parse_params("nonlocal", in_size=(8, 8), in_channels=2)
    model = build_pool_graph("nonlocal", params, static_hw=(8, 8), weights=weights)
    assert input_dims(model) == [["N", 2, 8, 8]]
    with pytest.raises(LoweringError, match="needs H = 8, but static_hw gives 6"):
        build_pool_graph("nonlocal", params, static_hw=(6, 8), weights=weights)


def test_a_wrong_input_size_is_refused_by_onnxruntime_before_running() -> None:
    weights = module_weights(nonlocal_reference((8, 8), 2).eval())
    params = parse_params("nonlocal", in_size=(8, 8), in_channels=2)
    session = create_session(build_pool_graph("nonlocal", params, weights=weights), CPU)
    with pytest.raises(ORT_ERRORS, match="Got invalid dimensions for input: x"):
        run(session, np.zeros((1, 2, 8, 10), np.float32))
