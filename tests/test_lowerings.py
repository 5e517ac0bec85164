"""Every lowering of every registered op against the library's torch module, on the registry's
examples.

The torch side is the op's module (``models.pooling.examples_torch``), itself tested against
torch built-ins, plain-loop references and reference packages in the op's own test file. Each
registry example runs through every lowering that accepts it, on several input shapes (odd
sizes, batch 1 to 3) fitted to the dims its params fix, with the extra inputs and weights
drawn as the registry describes them. One graph serves every shape, except where a lowering
is built for one (H, W). Checks specific to one family of lowerings live in
``tests/test_lowerings_<family>.py``.
"""

from typing import Any

import numpy as np
import pytest
import torch

from export.runtime.graph import build_lowered_graph, build_pool_graph
from export.runtime.lowering import STANDARD_KINDS, Lowering, lowered_ops, lowerings_for
from export.runtime.sessions import create_session, run
from models.pooling import create_pool, get_pool_spec, list_pools, parse_params
from models.pooling.examples import example_inputs
from models.pooling.examples_torch import example_module, module_weights, torch_outputs
from tests.reference import CPU, assert_outputs_match, fitting_shapes, input_dims

SHAPES = [(2, 3, 13, 11), (1, 2, 8, 9), (3, 1, 16, 7)]


def accepts(lowering: Lowering, example: Any) -> bool:
    return lowering.refusal(parse_params(lowering.op, **example), "float32") is None


def lowering_examples() -> list[tuple[Lowering, dict, str]]:
    """(lowering, example, test id) for every registry example each lowering builds."""
    return [
        (lowering, dict(example), f"{op}-{lowering.kind}-{i}")
        for op in list_pools()
        if op in lowered_ops()  # an op without one fails test_every_registered_op_is_lowered
        for lowering in lowerings_for(op)
        for i, example in enumerate(get_pool_spec(op).examples)
        if accepts(lowering, example)
    ]


CASES = lowering_examples()
PARITY_CASES = [pytest.param(lw, ex, id=name) for lw, ex, name in CASES]
WEIGHTED_CASES = [pytest.param(lw, ex, id=name) for lw, ex, name in CASES if lw.needs_weights]


@pytest.mark.parametrize(("lowering", "example"), PARITY_CASES)
def test_lowering_matches_torch(lowering: Lowering, example: dict) -> None:
    op = lowering.op
    params = parse_params(op, **example)
    module = example_module(op, example)
    weights = module_weights(module) if lowering.needs_weights else None
    shapes = fitting_shapes(op, params, SHAPES)
    assert shapes, f"{op} {example} fits none of {SHAPES}"
    session = None
    for seed, shape in enumerate(shapes):
        # One graph serves every shape, unless the lowering is built for one (H, W).
        if session is None or lowering.needs_static_hw:
            hw = (shape[2], shape[3]) if lowering.needs_static_hw else None
            model = build_lowered_graph(lowering, params, static_hw=hw, weights=weights)
            session = create_session(model, CPU)
        arrays = example_inputs(op, params, shape, np.random.default_rng(seed))
        got = run(session, *(arrays[name] for name in lowering.inputs))
        want = torch_outputs(op, module, params, arrays)
        assert_outputs_match(got, want, lowering.tolerance)


def test_every_registered_op_is_lowered() -> None:
    assert set(list_pools()) == set(lowered_ops())


def test_every_lowered_op_has_a_standard_lowering() -> None:
    for op in lowered_ops():
        assert any(lw.kind in STANDARD_KINDS for lw in lowerings_for(op)), op


@pytest.mark.parametrize("op", list_pools())
def test_every_example_is_accepted_by_some_lowering(op: str) -> None:
    for example in get_pool_spec(op).examples:
        assert any(accepts(lw, example) for lw in lowerings_for(op)), f"{op} {example}"


@pytest.mark.parametrize("op", list_pools())
def test_every_lowering_builds_some_example(op: str) -> None:
    """Otherwise test_lowering_matches_torch never runs it."""
    for lowering in lowerings_for(op):
        assert any(accepts(lowering, ex) for ex in get_pool_spec(op).examples), lowering.kind


@pytest.mark.parametrize("op", list_pools())
def test_lowerings_need_weights_exactly_for_learnable_ops(op: str) -> None:
    for lowering in lowerings_for(op):
        assert lowering.needs_weights == get_pool_spec(op).learnable, lowering.kind


@pytest.mark.parametrize(("lowering", "example"), WEIGHTED_CASES)
def test_weights_are_the_torch_modules_state_dict(lowering: Lowering, example: dict) -> None:
    """The Lowering says which weights it needs; the module's state_dict supplies exactly
    them (nonlocal's BatchNorm counter is accepted and unused)."""
    expected = lowering.expected_weights(parse_params(lowering.op, **example))
    module = create_pool(lowering.op, **example)
    state = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert {k: v for k, v in state.items() if k not in lowering.unused_weights} == expected


def test_static_hw_fixes_the_grid_of_any_op() -> None:
    kw = dict(kernel_size=3, stride=2)
    model = build_pool_graph("max", parse_params("max", **kw), static_hw=(9, 8))
    assert input_dims(model) == [["N", "C", 9, 8]]
    x = torch.randn(2, 3, 9, 8)
    (got,) = run(create_session(model, CPU), x.numpy())
    np.testing.assert_array_equal(got, create_pool("max", **kw)(x).numpy())
