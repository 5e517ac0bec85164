"""Every lowering of every lowered op against the library's torch module.

The torch side is ``create_pool(op, **params)``, itself tested against torch built-ins and
plain-loop references in the op's own test file. Each case runs through every lowering
that accepts its parameters (native, decomposition, custom) on several input shapes,
including odd sizes, so one graph is checked at more than the size it was built for.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import models.pooling.adaptive  # noqa: F401  (each import registers its ops)
import models.pooling.gem  # noqa: F401
import models.pooling.lp  # noqa: F401
import models.pooling.median  # noqa: F401
import models.pooling.mixed  # noqa: F401
import models.pooling.pyramid  # noqa: F401
import models.pooling.softpool  # noqa: F401
import models.pooling.stochastic  # noqa: F401
import models.pooling.token_mixer  # noqa: F401
from export.runtime.graph import build_pool_graph
from export.runtime.lowering import STANDARD_KINDS, Kind, lowered_ops, lowerings_for
from export.runtime.sessions import create_session, run
from models.pooling import PoolError, create_pool, list_pools, parse_params
from tests.test_export_lowerings_learnable import COVERED as LEARNABLE
from tests.test_export_lowerings_more import COVERED as MULTI_INPUT
from tests.test_export_lowerings_rmac_fractional import COVERED as STATIC_OR_SAMPLED

CPU = ["CPUExecutionProvider"]
SHAPES = [(2, 3, 13, 11), (1, 2, 8, 9), (3, 1, 16, 7)]

CASES = [
    ("max", dict(kernel_size=3, stride=2, padding=1)),
    ("max", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=True)),
    ("max", dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1), return_indices=True)),
    ("max", dict(kernel_size=2, stride=1, padding=(0, 1, 0, 1), return_indices=True)),
    ("max", dict(kernel_size=5, stride=3, padding=(2, 0, 1, 2), dilation=2, ceil_mode=True)),
    ("min", dict(kernel_size=3, stride=2, padding=(1, 0, 0, 1), ceil_mode=True)),
    ("min", dict(kernel_size=2, return_indices=True)),
    ("avg", dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avg", dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0, 1, 0), dilation=(2, 1))),
    ("avg", dict(kernel_size=3, stride=2, padding=(0, 1, 1, 0), count_include_pad=False)),
    ("avg", dict(kernel_size=(2, 3), stride=(1, 2), divisor_override=4)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, divisor_override=5)),
    ("median", dict(kernel_size=3, stride=1, padding=1)),
    ("median", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("median", dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0, 1, 0), padding_mode="zeros")),
    ("median", dict(kernel_size=2, dilation=2, ceil_mode=True, padding_mode="replicate")),
    ("median", dict(kernel_size=4, stride=3, padding=(2, 1, 0, 2), ceil_mode=True)),
    ("adaptive_avg", dict(output_size=3)),
    ("adaptive_avg", dict(output_size=(4, 2))),
    ("adaptive_avg", dict(output_size=(5, None))),
    ("adaptive_avg", dict(output_size=(20, 1))),
    ("adaptive_avg", dict(output_size=1)),
    ("adaptive_max", dict(output_size=3)),
    ("adaptive_max", dict(output_size=(4, 5), return_indices=True)),
    ("adaptive_max", dict(output_size=(None, 3))),
    ("adaptive_max", dict(output_size=(3, None), return_indices=True)),
    ("adaptive_max", dict(output_size=(17, 2), return_indices=True)),
    ("adaptive_max", dict(output_size=1, return_indices=True)),
    ("global_avg", dict()),
    ("global_max", dict()),
    ("avgmax_add", dict()),
    ("avgmax_add", dict(output_size=3)),
    ("avgmax_cat", dict(output_size=(2, 3))),
    ("gem", dict()),
    ("gem", dict(p=1.5, eps=1e-3)),
    ("lp", dict(norm_type=2, kernel_size=3, stride=2)),
    ("lp", dict(norm_type=3, kernel_size=(2, 3), stride=(2, 1), ceil_mode=True)),
    ("lp", dict(norm_type=1.5, kernel_size=2, ceil_mode=True)),
    ("lp", dict(norm_type=float("inf"), kernel_size=3, stride=2, ceil_mode=True)),
    ("softpool", dict(kernel_size=2)),
    ("softpool", dict(kernel_size=3, stride=2, padding=(1, 0, 1, 1), ceil_mode=True)),
    ("mixed", dict(kernel_size=3, stride=2, padding=1, alpha=0.3, count_include_pad=False)),
    ("mixed", dict(kernel_size=2, alpha=0.0, ceil_mode=True)),
    ("mixed", dict(kernel_size=2, stride=1, padding=(0, 1, 0, 1), alpha=1.0)),
    ("stochastic", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("stochastic", dict(kernel_size=2, dilation=2)),
    ("spp", dict()),
    ("spp", dict(levels=(1, 3, 6), mode="avg")),
    ("yolo_spp", dict()),
    ("yolo_spp", dict(kernel_sizes=(3, 7))),
    ("sppf", dict()),
    ("poolformer_mixer", dict()),
    ("poolformer_mixer", dict(pool_size=5)),
]


COVERED_ELSEWHERE = LEARNABLE | MULTI_INPUT | STATIC_OR_SAMPLED
NOT_LOWERED_YET: set[str] = set()
"""Registered ops without a lowering (see docs/export-design.md): none are left."""


def test_every_lowered_op_has_a_standard_lowering_and_a_test_case() -> None:
    tested = {op for op, _ in CASES} | COVERED_ELSEWHERE
    for op in lowered_ops():
        assert any(lw.kind in STANDARD_KINDS for lw in lowerings_for(op)), op
        assert op in tested, f"{op} has a lowering but no parity case"


def test_registered_ops_without_a_lowering_are_exactly_the_known_ones() -> None:
    import models.pooling.bilinear  # noqa: F401  (registers the ops)
    import models.pooling.fractional  # noqa: F401
    import models.pooling.netvlad  # noqa: F401
    import models.pooling.nonlocal_pool  # noqa: F401
    import models.pooling.rmac  # noqa: F401
    import models.pooling.unpool  # noqa: F401

    assert set(list_pools()) - set(lowered_ops()) == NOT_LOWERED_YET == set()


def torch_outputs(op: str, kw: dict, x: torch.Tensor) -> list[np.ndarray]:
    out = create_pool(op, **kw)(x)
    return [t.detach().numpy() for t in (out if isinstance(out, tuple) else (out,))]


def assert_matches(got: list[np.ndarray], want: list[np.ndarray], atol: float) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g, w, rtol=0, atol=atol)


def accepted_kinds(op: str, kw: dict) -> list[Kind]:
    params = parse_params(op, **kw)
    return [lw.kind for lw in lowerings_for(op) if lw.refusal(params, "float32") is None]


@pytest.mark.parametrize(("op", "kw"), CASES)
def test_every_lowering_matches_torch(op: str, kw: dict) -> None:
    params = parse_params(op, **kw)
    kinds = accepted_kinds(op, kw)
    assert kinds, f"no lowering accepts {op} {kw}"
    for lowering in lowerings_for(op):
        if lowering.kind not in kinds:
            continue
        session = create_session(build_pool_graph(op, params, kind=lowering.kind), CPU)
        for shape in SHAPES:
            x = torch.randn(shape)
            got = run(session, x.numpy())
            assert_matches(got, torch_outputs(op, kw, x), lowering.tolerance)


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
        assert_matches([got], torch_outputs("median", kw, x), 0.0)


def test_divisor_override_is_applied_where_standard_export_drops_it() -> None:
    """AveragePool has no divisor: a correct graph differs from plain AveragePool by 9/4."""
    kw = dict(kernel_size=3, stride=3, divisor_override=4)
    x = torch.ones(1, 1, 6, 6)
    session = create_session(build_pool_graph("avg", parse_params("avg", **kw)), CPU)
    (got,) = run(session, x.numpy())
    np.testing.assert_allclose(got, np.full((1, 1, 2, 2), 9 / 4), rtol=0, atol=1e-6)


@pytest.mark.parametrize("op", ["avg", "max", "median"])
def test_standard_lowerings_in_float16(op: str) -> None:
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    x = torch.randn(2, 3, 11, 10).half()
    want = create_pool(op, **kw)(x.float()).numpy()
    for kind in accepted_kinds(op, kw):
        if kind == "custom":
            continue
        model = build_pool_graph(op, parse_params(op, **kw), dtype="float16", kind=kind)
        (got,) = run(create_session(model, CPU), x.numpy())
        assert got.dtype == np.float16
        # float16 keeps 11 significant bits: values of |x| < 4 are within about 2e-3.
        np.testing.assert_allclose(got, want, rtol=0, atol=4e-3)


@settings(max_examples=40, deadline=None)
@given(
    op=st.sampled_from(["max", "avg", "median"]),
    h=st.integers(3, 10),
    w=st.integers(3, 10),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    ceil=st.booleans(),
)
def test_window_lowerings_property(op, h, w, k, s, d, pads, ceil) -> None:
    """Valid params: every accepted lowering gives torch's shape and values at two sizes;
    invalid ones are the library's PoolError before any graph is built."""
    kw = dict(kernel_size=k, stride=s, padding=pads, dilation=d, ceil_mode=ceil)
    if op == "median":
        kw["padding_mode"] = "replicate"
    try:
        params = parse_params(op, **kw)
        xs = [torch.randn(1, 2, h, w), torch.randn(2, 1, h + 3, w + 1)]
        wants = [torch_outputs(op, kw, x) for x in xs]
    except PoolError:
        return
    for kind in accepted_kinds(op, kw):
        session = create_session(build_pool_graph(op, params, kind=kind), CPU)
        for x, want in zip(xs, wants, strict=True):
            assert_matches(run(session, x.numpy()), want, 1e-5)
