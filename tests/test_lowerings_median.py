"""Lowerings of median (export/runtime/lowerings/median.py) beyond the registry's examples:
the NaN rule, float16, and random window params against the torch module."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from export.runtime.graph import build_pool_graph
from export.runtime.sessions import create_session, run
from models.pooling import parse_params
from tests.reference import (
    CPU,
    accepted_kinds,
    assert_lowerings_match_or_refuse,
    assert_outputs_match,
    assert_standard_lowerings_in_float16,
    module_outputs,
)


def test_median_nan_in_a_window_gives_nan_in_every_lowering() -> None:
    kw = dict(kernel_size=3, stride=1, padding=1)
    x = torch.randn(1, 2, 9, 8)
    x[0, 1, 4, 4] = float("nan")
    for kind in accepted_kinds("median", kw):
        session = create_session(
            build_pool_graph("median", parse_params("median", **kw), kind=kind), CPU
        )
        (got,) = run(session, x.numpy())
        assert np.isnan(got[0, 1, 3:6, 3:6]).all()
        assert np.isnan(got).sum() == 9
        assert_outputs_match([got], module_outputs("median", kw, x), 0.0)


def test_standard_lowerings_in_float16() -> None:
    assert_standard_lowerings_in_float16(
        "median", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    )


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(3, 10),
    w=st.integers(3, 10),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    ceil=st.booleans(),
)
def test_median_lowerings_property(h, w, k, s, d, pads, ceil) -> None:
    kw = dict(
        kernel_size=k, stride=s, padding=pads, dilation=d, ceil_mode=ceil, padding_mode="replicate"
    )
    assert_lowerings_match_or_refuse("median", kw, h, w)
