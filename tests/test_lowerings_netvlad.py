"""Lowering of netvlad (export/runtime/lowerings/netvlad.py): weights as initializers.

The reference is the library's module (tested against pytorch-NetVlad's formulas in
tests/test_netvlad.py), whose ``state_dict()`` feeds the graph. Each graph runs on several
batch and spatial sizes (its H and W stay dynamic); the weight checks are the graph builder's,
shown on netvlad.
"""

import numpy as np
import onnx
import pytest
import torch

from export.runtime.errors import LoweringError
from export.runtime.graph import build_pool_graph
from export.runtime.lowering import lowerings_for
from export.runtime.sessions import create_session, run
from models.pooling import create_pool, parse_params
from models.pooling.examples_torch import module_weights
from models.pooling.netvlad import NetVLAD
from tests.reference import CPU, input_dims

TOLERANCE = 1e-5
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
    params = parse_params("netvlad", **kw)
    model = build_pool_graph("netvlad", params, weights=module_weights(module))
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
    params = parse_params("netvlad", **kw)
    model = build_pool_graph("netvlad", params, weights=module_weights(module))
    x = torch.randn(2, 8, 6, 7)
    (got,) = run(create_session(model, CPU), x.numpy())
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=0, atol=TOLERANCE)


def test_netvlad_graph_fixes_channels_and_keeps_batch_and_grid_symbolic() -> None:
    kw = dict(num_clusters=4, dim=6)
    (lowering,) = lowerings_for("netvlad")
    assert not lowering.needs_static_hw
    weights = module_weights(netvlad_module(kw))
    model = build_pool_graph("netvlad", parse_params("netvlad", **kw), weights=weights)
    assert input_dims(model) == [["N", 6, "H", "W"]]
    assert sorted(i.name for i in model.graph.initializer) == ["centroids", "conv.weight"]


def test_missing_wrong_and_unknown_weights_are_listed() -> None:
    kw = dict(num_clusters=3, dim=5, vladv2=True)
    params = parse_params("netvlad", **kw)
    weights = module_weights(netvlad_module(kw))
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
    weights = module_weights(netvlad_module(kw))
    weights["centroids"] = np.array([["a"] * 3] * 2)
    with pytest.raises(LoweringError, match="'centroids' must be a real numeric array"):
        build_pool_graph("netvlad", parse_params("netvlad", **kw), weights=weights)


def test_float64_weights_become_float32_initializers() -> None:
    kw = dict(num_clusters=3, dim=4)
    module = netvlad_module(kw)
    weights = {k: v.astype(np.float64) for k, v in module_weights(module).items()}
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
            weights=module_weights(netvlad_module(kw)),
        )
