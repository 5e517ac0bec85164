"""The serving-side graph builder: torch-free, symbolic dims, pinned versions, lowering choice,
and the runtime helper that registers custom kernels."""

import numpy as np
import onnx
import pytest
import torch

from export.runtime.errors import LoweringError
from export.runtime.graph import build_pool_graph
from export.runtime.lowering import select_lowering
from export.runtime.sessions import create_session, run, uses_custom_ops
from export.runtime.versions import CUSTOM_DOMAIN, IR_VERSION, OPSET
from models.pooling import create_pool, parse_params
from tests.reference import run_without_torch

CPU = ["CPUExecutionProvider"]


def test_graph_builder_and_runtime_run_without_torch() -> None:
    """The serving path never imports torch: a blocked torch import does not stop it."""
    script = """
    import types
    import numpy as np
    from export.runtime.graph import build_pool_graph
    from export.runtime.sessions import create_session, run
    params = types.SimpleNamespace(
        kernel_size=(3, 3), stride=(1, 1), strides=(1, 1), padding=(1, 1, 1, 1),
        dilation=(1, 1), ceil_mode=False, padding_mode="reflect",
        model_dump_json=lambda: '{"kernel_size": [3, 3], "stride": [1, 1],'
        ' "padding": [1, 1, 1, 1], "dilation": [1, 1], "ceil_mode": false,'
        ' "padding_mode": "reflect"}',
    )
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    for prefer in ("standard", "custom"):
        model = build_pool_graph("median", params, prefer=prefer)
        (y,) = run(create_session(model, ["CPUExecutionProvider"]), x)
        print(prefer, float(y[0, 0, 2, 2]), float(y[0, 0, 0, 0]))
    """
    # 3x3 median at the centre of 0..24 is 12; at the reflect-padded corner, median of
    # [6, 5, 6, 1, 0, 1, 6, 5, 6] is 5.
    assert run_without_torch(script) == [
        "standard 12.0 5.0",
        "custom 12.0 5.0",
        "torch loaded: []",
    ]


def test_built_graph_pins_versions_and_keeps_every_dim_symbolic() -> None:
    model = build_pool_graph("max", parse_params("max", kernel_size=2, return_indices=True))
    assert model.ir_version == IR_VERSION
    assert {o.domain: o.version for o in model.opset_import} == {"": OPSET}
    (x,) = model.graph.input
    assert [d.dim_param for d in x.type.tensor_type.shape.dim] == ["N", "C", "H", "W"]
    assert [o.name for o in model.graph.output] == ["y", "indices"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta == {"poolserve.op": "max", "poolserve.lowering": "native"}
    onnx.checker.check_model(model, full_check=True)


def test_one_graph_serves_many_input_sizes() -> None:
    params = parse_params("avg", kernel_size=3, stride=2, padding=1, ceil_mode=True)
    session = create_session(build_pool_graph("avg", params), CPU)
    for shape in [(1, 1, 5, 5), (4, 7, 32, 17), (2, 3, 3, 64)]:
        x = torch.randn(shape)
        (got,) = run(session, x.numpy())
        want = create_pool("avg", kernel_size=3, stride=2, padding=1, ceil_mode=True)(x)
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-6)


def test_prefer_switch_picks_custom_only_where_one_exists() -> None:
    median = parse_params("median", kernel_size=3)
    assert select_lowering("median", median).kind == "decomposition"
    assert select_lowering("median", median, prefer="custom").kind == "custom"
    # max has no custom lowering: prefer="custom" falls back to the standard one.
    assert select_lowering("max", parse_params("max", kernel_size=2), prefer="custom").kind == (
        "native"
    )
    custom = build_pool_graph("median", median, prefer="custom")
    assert uses_custom_ops(custom)
    assert {o.domain for o in custom.opset_import} == {"", CUSTOM_DOMAIN}
    assert not uses_custom_ops(build_pool_graph("median", median))


def test_divisor_override_skips_the_native_lowering() -> None:
    params = parse_params("avg", kernel_size=2, divisor_override=3)
    assert select_lowering("avg", params).kind == "decomposition"
    with pytest.raises(LoweringError, match="divisor_override"):
        build_pool_graph("avg", params, kind="native")


MAX2 = dict(kernel_size=2)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: build_pool_graph("maxx", None), "no ONNX lowering for op 'maxx'"),
        (lambda: build_pool_graph("max", parse_params("max", **MAX2), "int8"), "dtype"),
        (lambda: build_pool_graph("max", parse_params("max", **MAX2), kind="custom"), "no custom"),
        (lambda: select_lowering("max", parse_params("max", **MAX2), prefer="gpu"), "prefer"),  # type: ignore[arg-type]
        (
            lambda: build_pool_graph(
                "median", parse_params("median", kernel_size=3), "float16", kind="custom"
            ),
            "float32",
        ),
    ],
)
def test_bad_requests_raise_lowering_error(call, fragment: str) -> None:
    with pytest.raises(LoweringError, match=fragment):
        call()


def test_custom_graph_needs_the_registered_kernels() -> None:
    """Without the extensions library onnxruntime cannot load the contrib node; the helper
    registers it."""
    import onnxruntime as ort

    model = build_pool_graph("median", parse_params("median", kernel_size=3), prefer="custom")
    with pytest.raises(Exception, match="MedianPool2d"):
        ort.InferenceSession(model.SerializeToString(), providers=CPU)
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    (got,) = run(create_session(model, CPU), x)
    assert got.shape == (1, 2, 2, 2)
