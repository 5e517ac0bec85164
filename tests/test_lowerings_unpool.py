"""Lowering of max_unpool (export/runtime/lowerings/unpool.py) against torch.

The torch side is the library's module (``create_pool``), itself tested against
F.max_unpool2d in tests/test_unpool.py. Its inputs are the values and indices of the
library's max pool, the only indices it is defined for; one graph serves several sizes.
"""

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from export.runtime.graph import build_pool_graph
from export.runtime.lowering import lowerings_for
from export.runtime.sessions import create_session, run
from models.pooling import PoolError, create_pool, parse_params
from tests.reference import CPU

UNPOOL_CASES = [  # (the max pool's params, its input shape, whether output_size is given)
    (dict(kernel_size=2), (2, 3, 8, 6), False),
    (dict(kernel_size=3, stride=2, padding=1), (1, 2, 9, 7), False),
    (dict(kernel_size=3, stride=2, padding=1), (2, 2, 10, 8), True),
    (dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0, 1, 1)), (1, 3, 9, 8), True),
    (dict(kernel_size=3, stride=3), (1, 1, 11, 13), True),
]


def session_for(kw: dict) -> object:
    model = build_pool_graph("max_unpool", parse_params("max_unpool", **kw))
    onnx.checker.check_model(model, full_check=True)
    return create_session(model, CPU)


def unpool_case(pool: dict, shape: tuple, explicit: bool) -> tuple[dict, list, np.ndarray]:
    """Unpool params, its (values, indices) inputs from the library's max pool, and torch's
    unpooled result."""
    kw = dict(pool, output_size=shape[2:]) if explicit else pool
    values, indices = create_pool("max", return_indices=True, **pool)(torch.randn(shape))
    want = create_pool("max_unpool", **kw)(values, indices).numpy()
    return kw, [values.numpy(), indices.numpy()], want


@pytest.mark.parametrize(("pool", "shape", "explicit"), UNPOOL_CASES)
def test_max_unpool_matches_torch(pool: dict, shape: tuple, explicit: bool) -> None:
    kw, inputs, want = unpool_case(pool, shape, explicit)
    (got,) = run(session_for(kw), *inputs)
    assert got.shape == want.shape
    assert (got != 0).any()
    np.testing.assert_array_equal(got, want)


def test_max_unpool_default_size_graph_serves_several_sizes() -> None:
    session = session_for(dict(kernel_size=2, stride=2))
    for shape in [(2, 3, 8, 6), (1, 1, 4, 10), (1, 2, 2, 2)]:
        kw, inputs, want = unpool_case(dict(kernel_size=2, stride=2), shape, False)
        (got,) = run(session, *inputs)
        np.testing.assert_array_equal(got, want)


def test_max_unpool_indices_input_is_int64() -> None:
    model = build_pool_graph("max_unpool", parse_params("max_unpool", kernel_size=2))
    assert [v.name for v in model.graph.input] == ["x", "indices"]
    assert model.graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_max_unpool_worked_example() -> None:
    """2x2 pool of a 4x4 plane: each max lands back on its index, zeros elsewhere."""
    values = np.array([[[[5.0, 7.0], [13.0, 15.0]]]], np.float32)
    indices = np.array([[[[5, 7], [13, 15]]]], np.int64)
    (got,) = run(session_for(dict(kernel_size=2)), values, indices)
    want = np.zeros(16, np.float32)
    want[[5, 7, 13, 15]] = [5.0, 7.0, 13.0, 15.0]
    np.testing.assert_array_equal(got, want.reshape(1, 1, 4, 4))


@settings(max_examples=30, deadline=None)
@given(
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    pads=st.tuples(*[st.integers(0, 1)] * 4),
    h=st.integers(3, 9),
    w=st.integers(3, 9),
)
def test_max_unpool_property(k, s, pads, h, w) -> None:
    """Valid params: the graph gives torch's shape and values for the pool's own input
    size; invalid ones are the library's PoolError before any graph is built."""
    pool = dict(kernel_size=k, stride=s, padding=pads)
    try:
        kw, inputs, want = unpool_case(pool, (1, 2, h, w), True)
    except PoolError:
        return
    assert want.shape == (1, 2, h, w)
    (got,) = run(session_for(kw), *inputs)
    np.testing.assert_array_equal(got, want)


def test_max_unpool_has_one_decomposition() -> None:
    assert [lw.kind for lw in lowerings_for("max_unpool")] == ["decomposition"]
