"""Lowerings of max / min / avg (export/runtime/lowerings/window.py) beyond the registry's
examples: divisor_override, float16, and random window params against the torch module."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from export.runtime.graph import build_pool_graph
from export.runtime.sessions import create_session, run
from models.pooling import parse_params
from tests.reference import (
    CPU,
    assert_lowerings_match_or_refuse,
    assert_standard_lowerings_in_float16,
)


def test_divisor_override_is_applied_where_standard_export_drops_it() -> None:
    """AveragePool has no divisor: a correct graph differs from plain AveragePool by 9/4."""
    kw = dict(kernel_size=3, stride=3, divisor_override=4)
    x = torch.ones(1, 1, 6, 6)
    session = create_session(build_pool_graph("avg", parse_params("avg", **kw)), CPU)
    (got,) = run(session, x.numpy())
    np.testing.assert_allclose(got, np.full((1, 1, 2, 2), 9 / 4), rtol=0, atol=1e-6)


@pytest.mark.parametrize("op", ["avg", "max"])
def test_standard_lowerings_in_float16(op: str) -> None:
    assert_standard_lowerings_in_float16(
        op, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    )


@settings(max_examples=40, deadline=None)
@given(
    op=st.sampled_from(["max", "avg"]),
    h=st.integers(3, 10),
    w=st.integers(3, 10),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    ceil=st.booleans(),
)
def test_window_lowerings_property(op, h, w, k, s, d, pads, ceil) -> None:
    kw = dict(kernel_size=k, stride=s, padding=pads, dilation=d, ceil_mode=ceil)
    assert_lowerings_match_or_refuse(op, kw, h, w)
