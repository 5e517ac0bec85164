"""Every lowering's cost estimate against the graph it really builds and runs.

For each op, each of its lowerings and each registry example the lowering accepts:
``nodes`` must equal the built graph's node count exactly, and ``peak_bytes`` must be within
``PEAK_FACTOR`` of the peak that ``tests/graph_memory.py`` measures from a real run (at
shapes where the tensors, not the handful of int64 shape constants, dominate). The op's
output elements and result bytes (``export.runtime.cost.estimate``) must be what the run
returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export.runtime.cost import estimate
from export.runtime.graph import build_lowered_graph, build_pool_graph
from export.runtime.lowering import Lowering, lowerings_for
from export.runtime.sessions import create_session
from models.pooling import get_pool_spec, list_pools, parse_params
from models.pooling.examples import example_inputs, example_weights
from tests.graph_memory import measured_peak_bytes
from tests.reference import fitting_shapes

NODE_SHAPES: list[tuple[int, ...]] = [(2, 3, 13, 11), (1, 4, 8, 9), (3, 2, 16, 7)]
PEAK_SHAPES: list[tuple[int, ...]] = [(2, 8, 48, 40), (1, 16, 33, 29), (4, 4, 56, 20)]
PEAK_FACTOR = 2.0
"""The estimate may be at most this many times the measured peak, or this many times less."""


def cases() -> list[Any]:
    found = []
    for op in list_pools():
        for lowering in lowerings_for(op):
            for i, example in enumerate(get_pool_spec(op).examples):
                if lowering.refusal(parse_params(op, **example), "float32") is None:
                    found.append(pytest.param(op, lowering.kind, i, id=f"{op}-{lowering.kind}-{i}"))
    return found


def _lowering(op: str, kind: str) -> Lowering:
    return next(lw for lw in lowerings_for(op) if lw.kind == kind)


def _graph(lowering: Lowering, params: Any, x_shape: tuple[int, ...]) -> Any:
    rng = np.random.default_rng(0)
    weights = (
        example_weights(lowering.expected_weights(params), rng) if lowering.needs_weights else None
    )
    hw = (x_shape[2], x_shape[3]) if lowering.needs_static_hw else None
    return build_pool_graph(lowering.op, params, kind=lowering.kind, static_hw=hw, weights=weights)


@pytest.mark.parametrize(("op", "kind", "index"), cases())
def test_node_count_is_exact(op: str, kind: str, index: int) -> None:
    lowering = _lowering(op, kind)
    params = parse_params(op, **get_pool_spec(op).examples[index])
    assert lowering.nodes is not None, f"{op} {kind} states no node count"
    shapes = fitting_shapes(op, params, NODE_SHAPES)
    assert shapes, "no test shape fits this example"
    for x_shape in shapes:
        model = _graph(lowering, params, x_shape)
        assert lowering.nodes(params, x_shape) == len(model.graph.node), x_shape


@pytest.mark.parametrize(("op", "kind", "index"), cases())
def test_peak_bytes_and_outputs_match_a_run(op: str, kind: str, index: int) -> None:
    lowering = _lowering(op, kind)
    params = parse_params(op, **get_pool_spec(op).examples[index])
    assert lowering.peak_bytes is not None, f"{op} {kind} states no peak memory"
    model = None
    for x_shape in fitting_shapes(op, params, PEAK_SHAPES):
        if model is None or lowering.needs_static_hw:
            model = _graph(lowering, params, x_shape)
        feeds = example_inputs(op, params, x_shape, np.random.default_rng(1))
        names = [i.name for i in model.graph.input if i.name in feeds]
        shapes = [feeds[name].shape for name in names]
        cost = estimate(lowering, params, shapes, "float32")
        outputs = create_session(model, ["CPUExecutionProvider"]).run(None, feeds)
        assert cost.output_elements == sum(o.size for o in outputs)
        assert cost.result_bytes == sum(o.nbytes for o in outputs)
        measured = measured_peak_bytes(model, feeds)
        ratio = cost.peak_bytes / measured
        assert 1 / PEAK_FACTOR <= ratio <= PEAK_FACTOR, (x_shape, cost.peak_bytes, measured)


@settings(max_examples=25, deadline=None)
@given(
    op=st.sampled_from(["max", "avg", "lp", "median", "softpool", "mixed", "stochastic"]),
    k=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    ceil=st.booleans(),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(12, 40), st.integers(12, 40)),
)
def test_an_admitted_window_op_never_needs_more_than_the_stated_factor(
    op: str, k: tuple[int, int], s: tuple[int, int], ceil: bool, shape: tuple[int, ...]
) -> None:
    """What admission control relies on: the measured peak of a run is at most
    ``PEAK_FACTOR`` times the estimate it was admitted on, for any window params."""
    extra = {"norm_type": 2.0} if op == "lp" else {}
    params = parse_params(op, kernel_size=k, stride=s, ceil_mode=ceil, **extra)
    lowering = next(lw for lw in lowerings_for(op) if lw.refusal(params, "float32") is None)
    feeds = example_inputs(op, params, shape, np.random.default_rng(2))
    cost = estimate(lowering, params, [shape], "float32")
    measured = measured_peak_bytes(build_lowered_graph(lowering, params), feeds)
    assert measured <= PEAK_FACTOR * cost.peak_bytes, (cost.peak_bytes, measured)
