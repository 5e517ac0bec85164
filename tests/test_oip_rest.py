"""The Open Inference Protocol over REST, spoken by the real ``tritonclient`` to a real server.

References: /pool and /descriptor on the same server (themselves tested against torch), numpy
closed forms, and onnxruntime run directly on the repository's model file.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from PIL import Image

from bench.server import serve
from tests.app_fixtures import SMOKE_MODEL, pool_npy

NPY = "application/x-npy"
RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def server(app_repository: Path) -> Iterator[str]:
    with serve(app_repository, [], shared_memory=True) as running:
        yield running.url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.removeprefix("http://"), network_timeout=60)
    yield c
    c.close()


@pytest.fixture(scope="module")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


def _pool_json(http: httpx.Client, op: str, params: dict[str, Any], **tensors: np.ndarray):
    body: dict[str, Any] = {"op": op, "params": params}
    for name, value in tensors.items():
        key = "tensor" if name == "x" else name
        body[key] = {"shape": list(value.shape), "dtype": value.dtype.name,
                     "data": value.ravel().tolist()}  # fmt: skip
    r = http.post("/pool", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _input(name: str, value: np.ndarray, binary: bool = True) -> triton.InferInput:
    datatype = {"float32": "FP32", "float16": "FP16", "int64": "INT64"}.get(value.dtype.name)
    tensor = triton.InferInput(name, list(value.shape), datatype or "BYTES")
    tensor.set_data_from_numpy(value, binary_data=binary)
    return tensor


def _outputs(names: list[str], binary: bool) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(n, binary_data=binary) for n in names]


def _jpeg(seed: int, size: tuple[int, int] = (300, 240)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# health and metadata ------------------------------------------------------------------------


def test_health_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("pool.max")
    assert client.is_model_ready(SMOKE_MODEL, "1")
    assert not client.is_model_ready("pool.nope")
    assert not client.is_model_ready("pool.max", "2")
    meta = client.get_server_metadata()
    assert meta["name"] == "poolserve"
    assert set(meta["extensions"]) == {"binary_tensor_data", "system_shared_memory"}


def test_model_metadata_from_the_registry(client: triton.InferenceServerClient) -> None:
    unpool = client.get_model_metadata("pool.max_unpool")
    assert [(t["name"], t["datatype"]) for t in unpool["inputs"]] == [
        ("x", "FP32"), ("indices", "INT64")
    ]  # fmt: skip
    assert unpool["versions"] == ["1"]
    pool_max = client.get_model_metadata("pool.max")
    assert [t["name"] for t in pool_max["outputs"]] == ["y", "indices"]
    image = client.get_model_metadata(SMOKE_MODEL)
    assert image["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1]}]
    assert image["outputs"] == [{"name": "DESCRIPTOR", "datatype": "FP32", "shape": [-1, 32768]}]
    graph = client.get_model_metadata(f"onnx.{SMOKE_MODEL}")
    assert graph["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]


def test_repository_index_lists_every_family(http: httpx.Client) -> None:
    names = {m["name"] for m in http.post("/v2/repository/index").json()}
    assert {"pool.max", "pool.bilinear2", SMOKE_MODEL, f"onnx.{SMOKE_MODEL}"} <= names


# inference, JSON and binary -----------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_max_with_indices_equals_pool_and_closed_form(
    client: triton.InferenceServerClient, http: httpx.Client, binary: bool
) -> None:
    params = {"kernel_size": 2, "return_indices": True}
    result = client.infer(
        "pool.max", [_input("x", X, binary)], parameters=params,
        outputs=_outputs(["y", "indices"], binary),
    )  # fmt: skip
    y, indices = result.as_numpy("y"), result.as_numpy("indices")
    windows = X.reshape(2, 3, 4, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 4, 4, 4)
    np.testing.assert_array_equal(y, windows.max(axis=-1))
    native = _pool_json(http, "max", params, x=X)
    np.testing.assert_array_equal(y.ravel(), np.asarray(native["tensor"]["data"], np.float32))
    np.testing.assert_array_equal(indices.ravel(), native["indices"]["data"])
    assert indices.dtype == np.int64


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_two_inputs_bilinear2_equals_pool(
    client: triton.InferenceServerClient, http: httpx.Client, binary: bool
) -> None:
    y_in = RNG.standard_normal((2, 4, 8, 8)).astype(np.float32)
    result = client.infer(
        "pool.bilinear2", [_input("x", X, binary), _input("y", y_in, binary)],
        outputs=_outputs(["y"], binary),
    )  # fmt: skip
    native = _pool_json(http, "bilinear2", {}, x=X, y=y_in)
    out = result.as_numpy("y")
    assert list(out.shape) == native["tensor"]["shape"]
    np.testing.assert_allclose(out.ravel(), native["tensor"]["data"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_list_param_as_json_string_equals_pool(
    client: triton.InferenceServerClient, http: httpx.Client, binary: bool
) -> None:
    result = client.infer(
        "pool.avg", [_input("x", X, binary)],
        parameters={"kernel_size": "[2, 4]", "stride": "[2, 2]"},
        outputs=_outputs(["y"], binary),
    )  # fmt: skip
    native = pool_npy(http, "avg", X, kernel_size="[2,4]", stride="[2,2]")
    np.testing.assert_array_equal(result.as_numpy("y"), native)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_int64_input_max_unpool_equals_pool(
    client: triton.InferenceServerClient, http: httpx.Client, binary: bool
) -> None:
    pooled = client.infer("pool.max", [_input("x", X)], parameters={"kernel_size": 2,
                          "return_indices": True})  # fmt: skip
    y, idx = pooled.as_numpy("y"), pooled.as_numpy("indices")
    result = client.infer(
        "pool.max_unpool", [_input("x", y, binary), _input("indices", idx, binary)],
        parameters={"kernel_size": 2}, outputs=_outputs(["y"], binary),
    )  # fmt: skip
    native = _pool_json(http, "max_unpool", {"kernel_size": 2}, x=y, indices=idx)
    expected = np.asarray(native["tensor"]["data"], np.float32)
    np.testing.assert_array_equal(result.as_numpy("y").ravel(), expected)
    assert (result.as_numpy("y") != 0).sum() == y.size  # each max back at its argmax


def test_gem_float_param_equals_pool(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    x = np.abs(X) + 0.1
    result = client.infer("pool.gem", [_input("x", x)], parameters={"p": 3.0})
    native = pool_npy(http, "gem", x, p="3.0")
    np.testing.assert_array_equal(result.as_numpy("y"), native)


def _descriptor_npy(http: httpx.Client, blobs: list[bytes]) -> np.ndarray:
    files = [("images", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]
    r = http.post("/descriptor", params={"model": SMOKE_MODEL}, files=files,
                  headers={"accept": NPY})  # fmt: skip
    assert r.status_code == 200, r.text
    return np.asarray(np.load(io.BytesIO(r.content), allow_pickle=False))


def test_image_model_bytes_equals_descriptor(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    blobs = [_jpeg(1), _jpeg(2, (200, 320))]
    images = np.array(blobs, dtype=np.object_)
    result = client.infer(SMOKE_MODEL, [_input("IMAGE", images)])
    np.testing.assert_allclose(result.as_numpy("DESCRIPTOR"), _descriptor_npy(http, blobs),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_image_model_json_base64_equals_descriptor(http: httpx.Client) -> None:
    blobs = [_jpeg(3)]
    body = {
        "inputs": [{
            "name": "IMAGE", "datatype": "BYTES", "shape": [1],
            "parameters": {"content_type": "base64"},
            "data": [base64.b64encode(b).decode() for b in blobs],
        }],
    }  # fmt: skip
    r = http.post(f"/v2/models/{SMOKE_MODEL}/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert (out["name"], out["datatype"], out["shape"]) == ("DESCRIPTOR", "FP32", [1, 32768])
    np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(1, -1),
                               _descriptor_npy(http, blobs), rtol=1e-5, atol=1e-6)  # fmt: skip


def test_onnx_model_equals_onnxruntime_on_the_file(
    client: triton.InferenceServerClient, app_repository: Path
) -> None:
    x = RNG.standard_normal((1, 3, 64, 80)).astype(np.float32)
    result = client.infer(f"onnx.{SMOKE_MODEL}", [_input("x", x)])
    path = app_repository / SMOKE_MODEL / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-5, atol=1e-6)


def test_learnable_op_names_its_entry(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    x = RNG.standard_normal((1, 512, 4, 4)).astype(np.float32)
    result = client.infer("pool.netvlad", [_input("x", x)], parameters={"model": "netvlad_head"})
    native = pool_npy(http, "netvlad", x, model="netvlad_head")
    np.testing.assert_array_equal(result.as_numpy("y"), native)


# system shared memory -----------------------------------------------------------------------


def test_shared_memory_input_and_output_equal_pool(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    import tritonclient.utils.shared_memory as shm

    out_bytes = X.nbytes // 4
    key_in, key_out = "/poolserve_test_in", "/poolserve_test_out"
    region_in = shm.create_shared_memory_region("in", key_in, X.nbytes + 64)
    region_out = shm.create_shared_memory_region("out", key_out, out_bytes + 32)
    try:
        shm.set_shared_memory_region(region_in, [X], offset=64)
        client.register_system_shared_memory("in", key_in, X.nbytes + 64)
        client.register_system_shared_memory("out", key_out, out_bytes + 32)
        tensor = triton.InferInput("x", list(X.shape), "FP32")
        tensor.set_shared_memory("in", X.nbytes, offset=64)
        wanted = triton.InferRequestedOutput("y")
        wanted.set_shared_memory("out", out_bytes, offset=32)
        result = client.infer("pool.max", [tensor], outputs=[wanted],
                              parameters={"kernel_size": 2})  # fmt: skip
        output = result.get_output("y")  # in the region, not the body
        assert "data" not in output
        assert output["parameters"]["shared_memory_region"] == "out"
        y = shm.get_contents_as_numpy(region_out, np.float32, [2, 3, 4, 4], offset=32)
        np.testing.assert_array_equal(y, pool_npy(http, "max", X, kernel_size="2"))
        status = client.get_system_shared_memory_status()
        assert {s["name"] for s in status} == {"in", "out"}
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(region_in)
        shm.destroy_shared_memory_region(region_out)
    assert client.get_system_shared_memory_status() == []


def test_readme_example_runs(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Open Inference Protocol", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("127.0.0.1:8000", server.removeprefix("http://"))
    code = code.replace('"netvlad_poolformer_s12"', f'"{SMOKE_MODEL}"')
    (tmp_path / "a.jpg").write_bytes(_jpeg(5))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(buf, "PNG")
    (tmp_path / "b.png").write_bytes(buf.getvalue())
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)  # with this server's address and model
    assert scope["descriptors"].shape == (2, 32768)
    assert scope["y"].shape == (1, 8, 16, 16)
    assert scope["indices"].dtype == np.int64
