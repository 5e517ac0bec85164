"""/pool against the torch library op (and torch built-ins), for every op and body form."""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.repository import make_job
from models.pooling import get_pool_spec, list_pools, parse_params
from models.pooling.examples import example_inputs, example_shape
from models.pooling.examples_torch import example_module, torch_outputs
from tests.app_fixtures import npy_bytes

NPY = "application/x-npy"
RNG = np.random.default_rng(0)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@dataclass(frozen=True)
class Case:
    """One op's /pool request and its torch reference, from the op's registry entry."""

    params: dict[str, Any]  # what the request sends (none for a learnable op's entry)
    model: str | None  # the repository entry holding a learnable op's weights
    tensors: dict[str, np.ndarray]
    expected: np.ndarray


def _entry(app_client, op: str) -> tuple[str, dict[str, Any]]:
    """The repository entry that holds a learnable op's weights, and its fixed params."""
    listing = app_client.get("/models").json()
    (name,) = next(o["models"] for o in listing["ops"] if o["name"] == op)
    params = next(m["params"] for m in listing["models"] if m["name"] == name)
    return name, params


@functools.cache
def _case(app_client, op: str) -> Case:
    """The op's first registry example (a learnable op: its entry's params and the very
    module that entry was exported from), inputs drawn as the registry describes them."""
    if get_pool_spec(op).learnable:
        model, stored = _entry(app_client, op)
        module, params, sent = make_job(model, {}).module.eval(), stored, {}
    else:
        example = dict(get_pool_spec(op).examples[0])
        model, module, sent = None, example_module(op, example), example
        params = example
    validated = parse_params(op, **params)
    shape = example_shape(op, validated, (2, 3, 9, 8))
    tensors = example_inputs(op, validated, shape, np.random.default_rng(0))
    expected = torch_outputs(op, module, validated, tensors)[0]
    return Case(json.loads(json.dumps(sent)), model, tensors, expected)


def _json_tensor(arr: np.ndarray) -> dict[str, Any]:
    return {"shape": list(arr.shape), "dtype": arr.dtype.name, "data": arr.ravel().tolist()}


def _send(client, op: str, form: str, case: Case, accept: str | None = None):
    headers = {"accept": accept} if accept else {}
    x, params, model = case.tensors["x"], case.params, case.model
    if form == "json":
        body: dict[str, Any] = {"op": op, "params": params, "tensor": _json_tensor(x)}
        body.update({k: _json_tensor(v) for k, v in case.tensors.items() if k != "x"})
        if model:
            body["model"] = model
        return client.post("/pool", json=body, headers=headers)
    if form == "npy":
        query = {"op": op, **{k: json.dumps(v) for k, v in params.items()}}
        if model:
            query["model"] = model
        headers["content-type"] = NPY
        return client.post("/pool", params=query, content=npy_bytes(x), headers=headers)
    files = {
        ("tensor" if k == "x" else k): (f"{k}.npy", npy_bytes(v), NPY)
        for k, v in case.tensors.items()
    }
    data = {"op": op, "params": json.dumps(params)}
    if model:
        data["model"] = model
    return client.post("/pool", files=files, data=data, headers=headers)


def _forms(case: Case) -> list[str]:
    """npy carries one tensor only: two-input ops use JSON and multipart."""
    return ["json", "multipart"] if len(case.tensors) > 1 else ["json", "npy", "multipart"]


@pytest.mark.parametrize("op", list_pools())
def test_pool_matches_torch_in_every_body_form(app_client, op: str) -> None:
    case = _case(app_client, op)
    for form in _forms(case):
        r = _send(app_client, op, form, case)
        assert r.status_code == 200, (form, r.text)
        assert r.headers["x-poolserve-provider"] == "CPUExecutionProvider"
        body = r.json()
        assert body["op"] == op
        got = np.asarray(body["tensor"]["data"], dtype=np.float32).reshape(body["tensor"]["shape"])
        assert got.shape == case.expected.shape, form
        np.testing.assert_allclose(got, case.expected, rtol=1e-4, atol=2e-5, err_msg=form)


@pytest.mark.parametrize("op", ["max", "gem", "rmac", "bilinear2"])
def test_npy_and_json_responses_agree(app_client, op: str) -> None:
    case = _case(app_client, op)
    form = _forms(case)[-1]
    as_json = _send(app_client, op, form, case).json()["tensor"]
    r = _send(app_client, op, form, case, accept=NPY)
    assert r.status_code == 200
    assert r.headers["content-type"] == NPY
    as_npy = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert list(as_npy.shape) == as_json["shape"]
    assert as_npy.dtype.name == as_json["dtype"]
    np.testing.assert_array_equal(as_npy.ravel(), np.asarray(as_json["data"], dtype=np.float32))


def test_resolved_params_include_defaults(app_client) -> None:
    params = {"kernel_size": 2, "stride": 1, "padding": [0, 1, 0, 1]}
    body = {"op": "max", "params": params, "tensor": _json_tensor(_x(1, 1, 4, 4))}
    r = app_client.post("/pool", json=body)
    assert r.json()["params"] == {
        "kernel_size": [2, 2], "stride": [1, 1], "padding": [0, 1, 0, 1],
        "dilation": [1, 1], "ceil_mode": False, "return_indices": False,
    }  # fmt: skip


def test_return_indices_come_back_in_json(app_client) -> None:
    x = _x(1, 2, 6, 6)
    body = {"op": "max", "params": {"kernel_size": 2, "return_indices": True},
            "tensor": _json_tensor(x)}  # fmt: skip
    r = app_client.post("/pool", json=body)
    assert r.status_code == 200, r.text
    values, idx = F.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    out = r.json()
    np.testing.assert_array_equal(np.asarray(out["indices"]["data"]), idx.numpy().ravel())
    np.testing.assert_allclose(np.asarray(out["tensor"]["data"]), values.numpy().ravel())
    npy = app_client.post("/pool", json=body, headers={"accept": NPY})
    assert npy.status_code == 406
    assert npy.json()["code"] == "not_acceptable"


def test_graph_cache_hits_on_repeat(app_client) -> None:
    def count(name: str) -> float:
        text = app_client.get("/metrics").text
        line = next(ln for ln in text.splitlines() if ln.startswith(name + " "))
        return float(line.split()[1])

    body = {
        "op": "avg",
        "params": {"kernel_size": 2, "stride": 2},
        "tensor": _json_tensor(_x(1, 1, 4, 4)),
    }
    app_client.post("/pool", json=body)
    hits, misses = (
        count("poolserve_graph_cache_hits_total"),
        count("poolserve_graph_cache_misses_total"),
    )
    assert app_client.post("/pool", json=body).status_code == 200
    assert count("poolserve_graph_cache_hits_total") == hits + 1
    assert count("poolserve_graph_cache_misses_total") == misses


def test_fractional_max_draws_seeded_samples_when_none_are_sent(app_client) -> None:
    x = _x(1, 2, 9, 9)
    body = {"op": "fractional_max", "params": {"kernel_size": 2, "output_size": 4, "seed": 7},
            "tensor": _json_tensor(x)}  # fmt: skip
    first, second = app_client.post("/pool", json=body), app_client.post("/pool", json=body)
    assert first.status_code == 200, first.text
    assert first.headers["x-poolserve-samples"] == "numpy-seed=7"
    assert first.json()["tensor"] == second.json()["tensor"]
    samples = np.random.default_rng(7).random((1, 2, 2), dtype=np.float32)
    expected = F.fractional_max_pool2d(
        torch.from_numpy(x), 2, output_size=4, _random_samples=torch.from_numpy(samples)
    )
    np.testing.assert_allclose(np.asarray(first.json()["tensor"]["data"]), expected.numpy().ravel())


def _t(shape: list[int], data: list[Any] | None = None) -> dict[str, Any]:
    return {"shape": shape, "data": data if data is not None else [0] * int(np.prod(shape))}


MAX2 = {"op": "max", "params": {"kernel_size": 2}}
BAD_REQUESTS = [
    ({"op": "no_such_op", "tensor": _t([1])}, "unknown_op"),
    ({"op": "max", "params": {"kernel_size": 0}, "tensor": _t([1, 1, 4, 4])}, "invalid_params"),
    ({"op": "max", "params": {"kernel_size": 5}, "tensor": _t([1, 1, 4, 4])}, "invalid_input"),
    ({**MAX2, "tensor": _t([4, 4])}, "invalid_input"),
    ({"op": "fractional_max", "params": {"kernel_size": 2, "output_size": 2}, "tensor": _t([9])},
     "invalid_input"),
    ({**MAX2, "tensor": _t([1, 1, 2, 2], [0, 1, 2, float("nan")])}, "non_finite"),
    ({"op": "netvlad", "tensor": _t([1, 512, 2, 2])}, "model_required"),
    (
        {"op": "netvlad", "model": "netvlad_head", "params": {"num_clusters": 8},
         "tensor": _t([1, 512, 2, 2])},
        "params_mismatch",
    ),
    ({**MAX2, "tensor": _t([1, 1, 2, 2]), "model": "netvlad_head"}, "unexpected_model"),
    ({**MAX2, "op": "max_unpool", "tensor": _t([1, 1, 2, 2])}, "wrong_tensors"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "code"), BAD_REQUESTS)
def test_bad_requests_get_422_in_the_envelope(app_client, body: dict[str, Any], code: str) -> None:
    r = app_client.post(
        "/pool", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code
    assert set(r.json()) == {"error", "code"}
    assert "no_such_op" not in r.text  # never echoed
    ok = app_client.post("/pool", json={"op": "global_max", "tensor": _json_tensor(_x(1, 1, 2, 2))})
    assert ok.status_code == 200


def test_npy_form_refuses_a_repeated_op(app_client) -> None:
    r = app_client.post(
        "/pool",
        params=[("op", "max"), ("op", "avg"), ("kernel_size", "2")],
        content=npy_bytes(_x(1, 1, 4, 4)),
        headers={"content-type": NPY},
    )
    assert (r.status_code, r.json()["code"]) == (422, "invalid_query")
