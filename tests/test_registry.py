"""The op registry: torch-free schemas, every op resolvable and buildable, published schemas."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.pooling import (
    PoolError,
    PoolSpec,
    UnknownPoolError,
    create_pool,
    get_pool_spec,
    list_pools,
    parse_params,
)
from models.pooling.examples import example_inputs, example_shape
from models.pooling.schemas.window import MaxParams

REPO = Path(__file__).resolve().parents[1]

EXPECTED = {
    "max",
    "avg",
    "min",
    "lp",
    "median",
    "stochastic",
    "softpool",
    "mixed",
    "adaptive_avg",
    "adaptive_max",
    "global_avg",
    "global_max",
    "avgmax_add",
    "avgmax_cat",
    "spp",
    "yolo_spp",
    "sppf",
    "gem",
    "rmac",
    "bilinear",
    "bilinear2",
    "max_unpool",
    "fractional_max",
    "poolformer_mixer",
    "netvlad",
    "nonlocal",
}


def test_schema_layer_imports_without_torch() -> None:
    code = (
        "import sys; import models.pooling as p; p.parse_params('max', kernel_size=2); "
        "p.list_pools(); assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_list_pools_is_exactly_the_expected_ops() -> None:
    assert set(list_pools()) == EXPECTED
    assert list_pools() == sorted(EXPECTED)


def _example_cases() -> list[Any]:
    return [
        pytest.param(name, i, id=f"{name}-{i}")
        for name in sorted(EXPECTED)
        for i in range(len(get_pool_spec(name).examples))
    ]


@pytest.mark.parametrize(("name", "index"), _example_cases())
def test_every_example_resolves_builds_and_runs(name: str, index: int) -> None:
    spec = get_pool_spec(name)
    module_file, _, class_name = spec.module_path.partition(":")
    assert module_file.startswith("models.pooling.")
    assert isinstance(spec.module, type)
    assert issubclass(spec.module, nn.Module)
    assert spec.module.__name__ == class_name
    example = spec.examples[index]
    pool = create_pool(name, **example)
    assert type(pool) is spec.module
    params = parse_params(name, **example)
    x_shape = example_shape(name, params, (2, 3, 13, 11))
    arrays = example_inputs(name, params, x_shape, np.random.default_rng(index))
    args = [torch.from_numpy(arrays[n]) for n in spec.module_inputs]
    out = pool(*args)
    outputs = out if isinstance(out, tuple) else (out,)
    assert len(outputs) == len(spec.output_names(params))
    want = params.output_shape(*(tuple(a.shape) for a in args))
    assert all(tuple(o.shape) == want for o in outputs)


def test_module_to_name_map_is_one_to_one() -> None:
    # The exporter finds an op's name from its module class, so no two ops share one.
    names = {get_pool_spec(name).module: name for name in list_pools()}
    assert len(names) == len(EXPECTED)
    assert names[get_pool_spec("bilinear2").module] == "bilinear2"


def test_unknown_op_lists_the_choices() -> None:
    with pytest.raises(UnknownPoolError, match="unknown pooling op 'nope'") as info:
        get_pool_spec("nope")
    assert isinstance(info.value, PoolError)
    assert isinstance(info.value, ValueError)
    for name in ("max", "netvlad", "yolo_spp"):
        assert repr(name) in str(info.value)
    with pytest.raises(UnknownPoolError):
        create_pool("maxx", kernel_size=2)
    with pytest.raises(UnknownPoolError):
        parse_params("", kernel_size=2)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_params_json_schema_is_generated(name: str) -> None:
    schema = get_pool_spec(name).params.model_json_schema()
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    fields = set(get_pool_spec(name).params.model_fields)
    assert set(schema["properties"]) == fields
    assert set(schema.get("required", [])) <= set(get_pool_spec(name).examples[0])


def test_malformed_module_path_is_a_clear_error() -> None:
    spec = PoolSpec("broken", MaxParams, "models.pooling.window.MaxPool", "no colon")
    with pytest.raises(ValueError, match="package.module:Class"):
        _ = spec.module


def test_dynamic_shapes_are_not_specialised() -> None:
    # check_nchw must pass symbolic dims through: int() would pin batch, H and W to 2x8x8.
    pool = create_pool("avg", kernel_size=2)
    batch, h, w = (torch.export.Dim(n, min=2, max=64) for n in ("batch", "h", "w"))
    exported = torch.export.export(
        pool, (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: batch, 2: 2 * h, 3: 2 * w},)
    )
    x = torch.randn(3, 3, 10, 6)
    assert torch.allclose(exported.module()(x), F.avg_pool2d(x, 2))
