"""/pool against the torch library op (and torch built-ins), for every op and body form."""

from __future__ import annotations

import io
import json
from typing import Any, cast

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.pooling import create_pool, list_pools
from models.zoo import build_model

NPY = "application/x-npy"
RNG = np.random.default_rng(0)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


CASES: dict[str, dict[str, Any]] = {
    "adaptive_avg": {"output_size": [3, 2]},
    "adaptive_max": {"output_size": 3},
    "avg": {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
    "avgmax_add": {},
    "avgmax_cat": {},
    "bilinear": {},
    "bilinear2": {},
    "fractional_max": {"kernel_size": 2, "output_size": [4, 3]},
    "gem": {"p": 2.5},
    "global_avg": {},
    "global_max": {},
    "lp": {"norm_type": 2.0, "kernel_size": 2},
    "max": {"kernel_size": 2, "stride": 1, "padding": [0, 1, 0, 1]},
    "max_unpool": {"kernel_size": 2},
    "median": {"kernel_size": 3},
    "min": {"kernel_size": 3, "stride": 2},
    "mixed": {"kernel_size": 2, "alpha": 0.3},
    "netvlad": {},
    "nonlocal": {},
    "poolformer_mixer": {"pool_size": 3},
    "rmac": {"levels": 2},
    "softpool": {"kernel_size": 2},
    "spp": {"levels": [1, 2]},
    "sppf": {"kernel_size": 3},
    "stochastic": {"kernel_size": 2},
    "yolo_spp": {"kernel_sizes": [3, 5]},
}
MODELS = {"netvlad": "netvlad_head", "nonlocal": "nonlocal_pool"}


def test_every_registered_op_has_a_case() -> None:
    assert sorted(CASES) == list_pools()


def _inputs(op: str) -> dict[str, np.ndarray]:
    """The request's tensors, by input name."""
    if op == "netvlad":
        return {"x": np.abs(_x(2, 512, 3, 4))}
    if op == "nonlocal":
        return {"x": _x(1, 256, 14, 14)}
    x = _x(2, 3, 9, 8)
    if op in ("stochastic", "gem"):
        x = np.abs(x)
    if op == "bilinear2":
        return {"x": x, "y": _x(2, 4, 9, 8)}
    if op == "max_unpool":
        pooled, idx = F.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
        return {"x": pooled.numpy(), "indices": idx.numpy()}
    if op == "fractional_max":
        return {"x": x, "samples": RNG.random((2, 3, 2), dtype=np.float32)}
    return {"x": x}


_PARAMS_CACHE: dict[str, torch.nn.Module] = {}


def _torch_module(op: str) -> torch.nn.Module:
    """The library op; learnable ops with the weights the repository entry was exported with."""
    if op == "netvlad":
        if op not in _PARAMS_CACHE:
            _PARAMS_CACHE[op] = cast(
                torch.nn.Module, build_model("netvlad_poolformer_s12").module.pool
            )
        return _PARAMS_CACHE[op]
    if op == "nonlocal":
        from export.repository import NONLOCAL_PARAMS

        return create_pool("nonlocal", **NONLOCAL_PARAMS).eval()
    return create_pool(op, **CASES[op]).eval()


def _reference(op: str, tensors: dict[str, np.ndarray]) -> np.ndarray:
    t = {k: torch.from_numpy(v) for k, v in tensors.items()}
    with torch.no_grad():
        if op == "fractional_max":  # torch's own op given the same samples
            p = CASES[op]
            out = F.fractional_max_pool2d(
                t["x"], p["kernel_size"], output_size=p["output_size"], _random_samples=t["samples"]
            )
        elif op in ("bilinear2", "max_unpool"):
            second = t["y"] if op == "bilinear2" else t["indices"]
            out = _torch_module(op)(t["x"], second)
        else:
            out = _torch_module(op)(t["x"])
    return out.numpy()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _json_tensor(arr: np.ndarray) -> dict[str, Any]:
    return {"shape": list(arr.shape), "dtype": arr.dtype.name, "data": arr.ravel().tolist()}


def _send(client, op: str, form: str, tensors: dict[str, np.ndarray], accept: str | None = None):
    params = {} if op in MODELS else CASES[op]
    headers = {"accept": accept} if accept else {}
    model = MODELS.get(op)
    if form == "json":
        body: dict[str, Any] = {"op": op, "params": params, "tensor": _json_tensor(tensors["x"])}
        body.update({k: _json_tensor(v) for k, v in tensors.items() if k != "x"})
        if model:
            body["model"] = model
        return client.post("/pool", json=body, headers=headers)
    if form == "npy":
        query = {"op": op, **{k: json.dumps(v) for k, v in params.items()}}
        if model:
            query["model"] = model
        headers["content-type"] = NPY
        return client.post("/pool", params=query, content=_npy(tensors["x"]), headers=headers)
    files = {("tensor" if k == "x" else k): (f"{k}.npy", _npy(v), NPY) for k, v in tensors.items()}
    data = {"op": op, "params": json.dumps(params)}
    if model:
        data["model"] = model
    return client.post("/pool", files=files, data=data, headers=headers)


def _forms(op: str) -> list[str]:
    """npy carries one tensor only: two-input ops use JSON and multipart."""
    return ["json", "multipart"] if len(_inputs(op)) > 1 else ["json", "npy", "multipart"]


@pytest.mark.parametrize("op", sorted(CASES))
def test_pool_matches_torch_in_every_body_form(app_client, op: str) -> None:
    tensors = _inputs(op)
    expected = _reference(op, tensors)
    for form in _forms(op):
        r = _send(app_client, op, form, tensors)
        assert r.status_code == 200, (form, r.text)
        assert r.headers["x-poolserve-provider"] == "CPUExecutionProvider"
        body = r.json()
        assert body["op"] == op
        got = np.asarray(body["tensor"]["data"], dtype=np.float32).reshape(body["tensor"]["shape"])
        assert got.shape == expected.shape, form
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5, err_msg=form)


@pytest.mark.parametrize("op", ["max", "gem", "rmac", "bilinear2"])
def test_npy_and_json_responses_agree(app_client, op: str) -> None:
    tensors = _inputs(op)
    form = _forms(op)[-1]
    as_json = _send(app_client, op, form, tensors).json()["tensor"]
    r = _send(app_client, op, form, tensors, accept=NPY)
    assert r.status_code == 200
    assert r.headers["content-type"] == NPY
    as_npy = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert list(as_npy.shape) == as_json["shape"]
    assert as_npy.dtype.name == as_json["dtype"]
    np.testing.assert_array_equal(as_npy.ravel(), np.asarray(as_json["data"], dtype=np.float32))


def test_resolved_params_include_defaults(app_client) -> None:
    r = _send(app_client, "max", "json", {"x": _x(1, 1, 4, 4)})
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
        content=_npy(_x(1, 1, 4, 4)),
        headers={"content-type": NPY},
    )
    assert (r.status_code, r.json()["code"]) == (422, "invalid_query")
