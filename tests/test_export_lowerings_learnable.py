"""Lowerings of the learnable ops (netvlad, nonlocal): weights as initializers, against torch.

netvlad's reference is the library's module (tested against pytorch-NetVlad's formulas in
tests/test_netvlad.py); nonlocal's is the real ``nonlocalpooling`` package's
``NonLocalPool2d``, whose ``state_dict()`` feeds the graph directly. Each graph runs on
several batch sizes, and netvlad's on several spatial sizes (its H and W stay dynamic).
"""

import numpy as np
import onnx
import pytest
import torch
from nonlocalpooling.pool import NonLocalPool2d

import models.pooling.netvlad  # noqa: F401  (each import registers its op)
import models.pooling.nonlocal_pool  # noqa: F401
from export.runtime.errors import LoweringError
from export.runtime.graph import build_pool_graph
from export.runtime.lowering import lowerings_for
from export.runtime.sessions import create_session, run
from models.pooling import create_pool, parse_params
from models.pooling.netvlad import NetVLAD

CPU = ["CPUExecutionProvider"]
COVERED = {"netvlad", "nonlocal"}
"""Ops whose parity cases live here rather than in test_export_lowerings.CASES."""
TOLERANCE = 1e-5


def arrays(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {key: value.detach().numpy() for key, value in module.state_dict().items()}


def input_dims(model: onnx.ModelProto) -> list[list[str | int]]:
    return [
        [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in model.graph.input
    ]


NETVLAD_CASES = [
    dict(num_clusters=8, dim=16),
    dict(num_clusters=3, dim=5, normalize_input=False),
    dict(num_clusters=6, dim=4, vladv2=True),
    dict(num_clusters=1, dim=7, vladv2=True, normalize_input=False),
    dict(num_clusters=16, dim=32, seed=3),
]
NETVLAD_SIZES = [(2, 7, 5), (1, 1, 1), (3, 12, 9)]  # (N, H, W)


def netvlad_module(kw: dict) -> NetVLAD:
    module = create_pool("netvlad", **kw)
    assert isinstance(module, NetVLAD)
    return module.eval()


@pytest.mark.parametrize("kw", NETVLAD_CASES)
def test_netvlad_matches_torch(kw: dict) -> None:
    module = netvlad_module(kw)
    model = build_pool_graph("netvlad", parse_params("netvlad", **kw), weights=arrays(module))
    onnx.checker.check_model(model, full_check=True)
    session = create_session(model, CPU)
    for n, h, w in NETVLAD_SIZES:
        x = torch.randn(n, kw["dim"], h, w)
        (got,) = run(session, x.numpy())
        want = module(x).detach().numpy()
        assert got.shape == want.shape == (n, kw["num_clusters"] * kw["dim"])
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("vladv2", [False, True])
def test_netvlad_with_the_papers_initialisation(vladv2: bool) -> None:
    """Sharp assignments (alpha from k-means-style centroids), where the softmax saturates."""
    kw = dict(num_clusters=5, dim=8, vladv2=vladv2)
    module = netvlad_module(kw)
    generator = torch.Generator().manual_seed(1)
    descriptors = torch.randn(200, 8, generator=generator)
    module.init_from_centroids(descriptors[:5].clone(), descriptors)
    model = build_pool_graph("netvlad", parse_params("netvlad", **kw), weights=arrays(module))
    x = torch.randn(2, 8, 6, 7)
    (got,) = run(create_session(model, CPU), x.numpy())
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=0, atol=TOLERANCE)


def test_netvlad_graph_fixes_channels_and_keeps_batch_and_grid_symbolic() -> None:
    kw = dict(num_clusters=4, dim=6)
    model = build_pool_graph(
        "netvlad", parse_params("netvlad", **kw), weights=arrays(netvlad_module(kw))
    )
    assert input_dims(model) == [["N", 6, "H", "W"]]
    assert sorted(i.name for i in model.graph.initializer) == ["centroids", "conv.weight"]


def nonlocal_reference(size, c, o=None, squeeze=False, seed=0) -> NonLocalPool2d:
    """The package's layer with random weights and non-trivial BatchNorm statistics, alpha."""
    torch.manual_seed(seed)
    ref = NonLocalPool2d(list(size), c, o, scale=2, squeeze=squeeze)
    with torch.no_grad():
        ref.alpha.fill_(0.3)
        ref.norm.running_mean.uniform_(-1, 1)
        ref.norm.running_var.uniform_(0.5, 2)
        ref.norm.weight.uniform_(0.5, 1.5)
        ref.norm.bias.uniform_(-1, 1)
        ref.token_mix[1].weight.uniform_(0.5, 1.5)
        ref.channel_mix[1].bias.uniform_(-1, 1)
    return ref.eval()


NONLOCAL_CASES = [
    ((8, 8), 4, None, False),
    ((8, 12), 3, 16, True),
    ((6, 10), 2, 5, False),  # odd token grid 3x5
    ((8, 8), 5, 128, False),  # out >= 128: tokens carry out // 2 = 64 channels
    ((8, 4), 3, 130, True),
]


@pytest.mark.parametrize(("size", "c", "o", "squeeze"), NONLOCAL_CASES)
def test_nonlocal_matches_the_nonlocalpooling_package(size, c, o, squeeze) -> None:
    ref = nonlocal_reference(size, c, o, squeeze)
    params = parse_params("nonlocal", in_size=size, in_channels=c, out_channels=o, squeeze=squeeze)
    model = build_pool_graph("nonlocal", params, weights=arrays(ref))
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
    model = build_pool_graph("nonlocal", parse_params("nonlocal", **kw), weights=arrays(module))
    x = torch.randn(2, 3, 8, 6)
    (got,) = run(create_session(model, CPU), x.numpy())
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(
    ("op", "kw"),
    [
        ("netvlad", dict(num_clusters=3, dim=5)),
        ("netvlad", dict(num_clusters=3, dim=5, vladv2=True)),
        ("nonlocal", dict(in_size=(8, 12), in_channels=3, out_channels=16, squeeze=True)),
    ],
)
def test_weight_shapes_are_the_torch_modules_state_dict(op: str, kw: dict) -> None:
    """The Lowering says which weights it needs; a module's state_dict supplies exactly them
    (nonlocal's BatchNorm counter is accepted and unused)."""
    (lowering,) = lowerings_for(op)
    assert lowering.needs_weights
    assert not lowering.needs_static_hw
    expected = lowering.expected_weights(parse_params(op, **kw))
    state = {k: tuple(v.shape) for k, v in create_pool(op, **kw).state_dict().items()}
    assert {k: v for k, v in state.items() if k not in lowering.unused_weights} == expected


def test_missing_wrong_and_unknown_weights_are_listed() -> None:
    kw = dict(num_clusters=3, dim=5, vladv2=True)
    params = parse_params("netvlad", **kw)
    weights = arrays(netvlad_module(kw))
    del weights["centroids"]
    weights["conv.bias"] = np.zeros(4, np.float32)
    weights["extra"] = np.zeros(1, np.float32)
    with pytest.raises(LoweringError) as info:
        build_pool_graph("netvlad", params, weights=weights)
    message = str(info.value)
    assert "missing 'centroids' (3, 5)" in message
    assert "'conv.bias' must be (3,), got (4,)" in message
    assert "unknown 'extra'" in message


def test_weights_are_required_and_refused_where_unused() -> None:
    params = parse_params("netvlad", num_clusters=2, dim=3)
    with pytest.raises(LoweringError, match=r"pass weights= with \['centroids', 'conv.weight'\]"):
        build_pool_graph("netvlad", params)
    with pytest.raises(LoweringError, match="has no learned weights"):
        build_pool_graph("global_max", parse_params("global_max"), weights={})


def test_non_numeric_weights_are_refused() -> None:
    kw = dict(num_clusters=2, dim=3)
    weights = arrays(netvlad_module(kw))
    weights["centroids"] = np.array([["a"] * 3] * 2)
    with pytest.raises(LoweringError, match="'centroids' must be a real numeric array"):
        build_pool_graph("netvlad", parse_params("netvlad", **kw), weights=weights)


def test_float64_weights_become_float32_initializers() -> None:
    kw = dict(num_clusters=3, dim=4)
    module = netvlad_module(kw)
    weights = {k: v.astype(np.float64) for k, v in arrays(module).items()}
    model = build_pool_graph("netvlad", parse_params("netvlad", **kw), weights=weights)
    assert {i.data_type for i in model.graph.initializer} == {onnx.TensorProto.FLOAT}
    x = torch.randn(1, 4, 3, 5)
    (got,) = run(create_session(model, CPU), x.numpy())
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=0, atol=TOLERANCE)


def test_learnable_lowerings_are_float32_only() -> None:
    kw = dict(num_clusters=2, dim=3)
    with pytest.raises(LoweringError, match="supports \\['float32'\\], not float16"):
        build_pool_graph(
            "netvlad",
            parse_params("netvlad", **kw),
            dtype="float16",
            weights=arrays(netvlad_module(kw)),
        )


def test_static_hw_must_agree_with_nonlocal_in_size() -> None:
    ref = nonlocal_reference((8, 8), 2)
    params = parse_params("nonlocal", in_size=(8, 8), in_channels=2)
    model = build_pool_graph("nonlocal", params, static_hw=(8, 8), weights=arrays(ref))
    assert input_dims(model) == [["N", 2, 8, 8]]
    with pytest.raises(LoweringError, match="needs H = 8, but static_hw gives 6"):
        build_pool_graph("nonlocal", params, static_hw=(6, 8), weights=arrays(ref))


def test_a_wrong_input_size_is_refused_by_onnxruntime_before_running() -> None:
    from export.runtime.sessions import ORT_ERRORS

    ref = nonlocal_reference((8, 8), 2)
    params = parse_params("nonlocal", in_size=(8, 8), in_channels=2)
    session = create_session(build_pool_graph("nonlocal", params, weights=arrays(ref)), CPU)
    with pytest.raises(ORT_ERRORS, match="Got invalid dimensions for input: x"):
        run(session, np.zeros((1, 2, 8, 10), np.float32))
