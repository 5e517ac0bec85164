"""The service around /pool: /descriptor against torch, health, models, metrics, start-up
checks, the error envelope for the framework's own errors, body limit and overload."""

from __future__ import annotations

import io
import logging
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from app.inference.sessions import StartupError
from models.transforms import image_to_tensor
from tests.app_fixtures import SMOKE_MODEL, AppClient, app_settings

NPY = "application/x-npy"


def _image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def torch_descriptor():
    """The same model in torch (seeded weights, as exported) and its input policy."""
    from models.zoo import build_model

    built = build_model(SMOKE_MODEL)

    def describe(image: Image.Image) -> np.ndarray:
        with torch.no_grad():
            out = built.module(image_to_tensor(built.cfg.preprocess, image)[None])
        return np.asarray(out.numpy()[0])

    return describe


def test_descriptor_equals_torch_for_raw_and_multipart_bodies(app_client, torch_descriptor) -> None:
    images = [_image(300, 200, 1), _image(180, 240, 2)]
    expected = np.stack([torch_descriptor(im) for im in images])
    raw = app_client.post(
        "/descriptor", content=_png(images[0]), headers={"content-type": "image/png"}
    )
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert (body["model"], body["dim"], body["count"]) == (SMOKE_MODEL, 32768, 1)
    assert body["weights"] == "seeded-init(seed=0)"
    np.testing.assert_allclose(body["descriptors"][0], expected[0], atol=1e-5, rtol=1e-3)
    files = [("images", (f"{i}.png", _png(im), "image/png")) for i, im in enumerate(images)]
    multi = app_client.post(f"/descriptor?model={SMOKE_MODEL}", files=files)
    assert multi.status_code == 200, multi.text
    np.testing.assert_allclose(
        np.asarray(multi.json()["descriptors"]), expected, atol=1e-5, rtol=1e-3
    )
    npy = app_client.post("/descriptor", files=files, headers={"accept": NPY})
    assert npy.headers["content-type"] == NPY
    arr = np.load(io.BytesIO(npy.content), allow_pickle=False)
    assert arr.shape == (2, 32768)
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr, np.asarray(multi.json()["descriptors"], dtype=np.float32))


def test_descriptor_refusals(app_client) -> None:
    png = _png(_image(64, 64, 3))
    unknown = app_client.post(
        "/descriptor?model=../etc", content=png, headers={"content-type": "image/png"}
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_model")
    assert "../etc" not in unknown.text
    pool_entry = app_client.post(
        "/descriptor?model=netvlad_head", content=png, headers={"content-type": "image/png"}
    )
    assert pool_entry.status_code == 404
    garbage = app_client.post(
        "/descriptor", content=b"not an image", headers={"content-type": "image/png"}
    )
    assert (garbage.status_code, garbage.json()["code"]) == (415, "bad_image")
    text = app_client.post("/descriptor", content=b"x", headers={"content-type": "text/plain"})
    assert (text.status_code, text.json()["code"]) == (415, "unsupported_media_type")
    many = [("images", (f"{i}.png", png, "image/png")) for i in range(33)]
    too_many = app_client.post("/descriptor", files=many)
    assert too_many.status_code in (400, 413)
    assert set(too_many.json()) == {"error", "code"}


def test_health_and_ready_report_providers(app_client) -> None:
    assert app_client.get("/health/live").json() == {"status": "live"}
    ready = app_client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["providers"] == {
        name: ["CPUExecutionProvider"]
        for name in ("netvlad_poolformer_s12_224", "netvlad_head", "nonlocal_pool")
    }


def test_ready_is_503_before_start_up(app_repository) -> None:
    from app.main import create_app

    client = AppClient(create_app(app_settings(app_repository)))  # lifespan not entered
    try:
        r = client.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["code"] == "not_ready"
        assert client.get("/health/live").status_code == 200
    finally:
        client.close()


def test_models_lists_models_and_ops(app_client) -> None:
    body = app_client.get("/models").json()
    assert body["default_model"] == SMOKE_MODEL
    models = {m["name"]: m for m in body["models"]}
    smoke = models[SMOKE_MODEL]
    assert smoke["dim"] == 32768
    assert smoke["provider"] == "CPUExecutionProvider"
    assert smoke["inputs"][0]["shape"] == ["N", 3, "H", "W"]
    assert models["netvlad_head"]["op"] == "netvlad"
    ops = {o["name"]: o for o in body["ops"]}
    from models.pooling import list_pools

    assert sorted(ops) == list_pools()
    assert ops["netvlad"]["models"] == ["netvlad_head"]
    assert "kernel_size" in ops["max"]["params_schema"]["properties"]


def test_metrics_count_requests_inference_and_provider(app_client) -> None:
    app_client.get("/health/live")
    png = _png(_image(64, 64, 4))
    app_client.post("/descriptor", content=png, headers={"content-type": "image/png"})
    text = app_client.get("/metrics").text
    assert 'poolserve_requests_total{endpoint="/health/live",method="GET",status="200"}' in text
    assert 'poolserve_request_duration_seconds_bucket{endpoint="/descriptor"' in text
    assert f'poolserve_inference_seconds_count{{model="{SMOKE_MODEL}"}}' in text
    assert f'poolserve_batch_size_count{{model="{SMOKE_MODEL}"}}' in text
    provider = f'{{model="{SMOKE_MODEL}",provider="CPUExecutionProvider"}} 1.0'
    assert f"poolserve_active_provider_info{provider}" in text


def test_framework_errors_use_the_envelope(app_client) -> None:
    missing = app_client.get("/no/such/path")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    wrong = app_client.request("DELETE", "/pool")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "POST"
    bad_json = app_client.post("/pool", content=b"{", headers={"content-type": "application/json"})
    assert (bad_json.status_code, bad_json.json()["code"]) == (400, "invalid_json")
    query = app_client.post(
        "/descriptor?model=", content=b"", headers={"content-type": "image/png"}
    )
    assert set(query.json()) == {"error", "code"}


def test_body_limit_counts_the_stream(make_client) -> None:
    client = make_client(max_body_bytes=1000)
    honest = client.post("/pool", content=b"0" * 2000, headers={"content-type": NPY})
    assert (honest.status_code, honest.json()["code"]) == (413, "body_too_large")

    async def chunks():  # no Content-Length at all: chunked
        for _ in range(10):
            yield b"0" * 200

    streamed = client.post("/pool?op=max", content=chunks(), headers={"content-type": NPY})
    assert (streamed.status_code, streamed.json()["code"]) == (413, "body_too_large")
    spoofed = client.post(
        "/pool?op=max", content=b"0" * 2000, headers={"content-type": NPY, "content-length": "10"}
    )
    assert spoofed.status_code in (400, 413)
    files = {"tensor": ("x.npy", b"0" * 2000, NPY)}
    multipart = client.post("/pool", files=files, data={"op": "max"})
    assert (multipart.status_code, multipart.json()["code"]) == (413, "body_too_large")
    image = client.post("/descriptor", files=[("images", ("a.png", b"0" * 2000, "image/png"))])
    assert (image.status_code, image.json()["code"]) == (413, "body_too_large")
    ok = client.post(
        "/pool", json={"op": "global_max", "tensor": {"shape": [1, 1, 1, 1], "data": [1]}}
    )
    assert ok.status_code == 200


def test_overload_answers_503_with_retry_after(make_client) -> None:
    client = make_client(max_concurrent_inferences=1, max_waiting=0)
    release = threading.Event()
    gate = client.app.state.services.runner.gate
    original = gate.run

    async def slow_run(fn, model=None):
        def blocked():
            release.wait(5)
            return fn()

        return await original(blocked, model)

    gate.run = slow_run
    body = {"op": "global_max", "tensor": {"shape": [1, 1, 1, 1], "data": [1]}}
    threading.Timer(0.5, release.set).start()
    first, second = client.gather(
        ("POST", "/pool", {"json": body}), ("POST", "/pool", {"json": body})
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 503]
    refused = first if first.status_code == 503 else second
    assert refused.json()["code"] == "overloaded"
    assert refused.headers["retry-after"] == "1"


def test_tampered_model_refuses_start_up(repository_copy, make_client) -> None:
    path = repository_copy / "netvlad_head" / "1" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StartupError, match="sha256"):
        make_client(repository_copy)


@pytest.mark.no_cuda
def test_require_cuda_fails_start_up_without_a_gpu(make_client) -> None:
    with pytest.raises(StartupError, match="REQUIRE_CUDA"):
        make_client(require_cuda=True, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


@pytest.mark.no_cuda
def test_cuda_fallback_is_a_loud_warning(make_client, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="poolserve"):
        client = make_client(
            models=["netvlad_head"],
            default_model="",
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
    assert any("fell back" in r.getMessage() for r in caplog.records)
    assert client.get("/health/ready").json()["providers"]["netvlad_head"] == [
        "CPUExecutionProvider"
    ]


@pytest.mark.gpu
def test_require_cuda_serves_on_the_gpu(make_client, torch_descriptor) -> None:
    client = make_client(
        require_cuda=True, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    ready = client.get("/health/ready").json()["providers"]
    assert all(active[0] == "CUDAExecutionProvider" for active in ready.values()), ready
    image = _image(300, 200, 3)
    reply = client.post("/descriptor", content=_png(image), headers={"content-type": "image/png"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-poolserve-provider"] == "CUDAExecutionProvider"
    got, want = np.asarray(reply.json()["descriptors"][0]), torch_descriptor(image)
    # TF32 convolutions on the GPU: a looser bound than CPU's (docs/throughput.md)
    assert float(got @ want) / float(np.linalg.norm(got) * np.linalg.norm(want)) > 0.9999
    x = np.random.default_rng(4).random((1, 2, 6, 8), dtype=np.float32)
    body = {"op": "max", "params": {"kernel_size": 2},
            "tensor": {"shape": list(x.shape), "data": x.ravel().tolist()}}  # fmt: skip
    pooled = client.post("/pool", json=body).json()["tensor"]
    want_pool = x.reshape(1, 2, 3, 2, 4, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(np.reshape(pooled["data"], pooled["shape"]), want_pool)


def test_openapi_documents_bodies_and_errors(app_client) -> None:
    doc = app_client.get("/openapi.json").json()
    pool = doc["paths"]["/pool"]["post"]
    assert set(pool["requestBody"]["content"]) == {"application/json", NPY, "multipart/form-data"}
    assert {"400", "413", "415", "422", "500", "503"} <= set(pool["responses"])
    assert "PoolJsonBody" in doc["components"]["schemas"]
    desc = doc["paths"]["/descriptor"]["post"]
    assert {"multipart/form-data", "image/jpeg", "image/png", "image/webp"} <= set(
        desc["requestBody"]["content"]
    )
    assert any(p["name"] == "model" for p in desc["parameters"])


def test_unexpected_fault_is_a_generic_500_and_logged(make_client, caplog) -> None:
    client = make_client(models=[SMOKE_MODEL])
    engine = client.app.state.services.pools
    original = engine.run

    async def broken(request):
        raise RuntimeError("secret internal detail")

    engine.run = broken
    body = {"op": "global_max", "tensor": {"shape": [1, 1, 1, 1], "data": [1]}}
    with caplog.at_level(logging.ERROR, logger="poolserve"):
        r = client.post("/pool", json=body)
    assert r.status_code == 500
    assert r.json() == {"error": "internal server error", "code": "internal"}
    assert "secret" not in r.text
    assert any(rec.exc_info and "secret" in str(rec.exc_info[1]) for rec in caplog.records)
    engine.run = original
    assert client.post("/pool", json=body).status_code == 200


def test_float16_tensors_pool_in_float16(app_client) -> None:
    x = np.random.default_rng(5).standard_normal((1, 2, 4, 4)).astype(np.float16)
    buf = io.BytesIO()
    np.save(buf, x)
    r = app_client.post(
        "/pool?op=max&kernel_size=2",
        content=buf.getvalue(),
        headers={"content-type": NPY, "accept": NPY},
    )
    assert r.status_code == 200, r.text
    out = np.load(io.BytesIO(r.content), allow_pickle=False)
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x.astype(np.float32)), 2)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, expected.numpy().astype(np.float16))


def test_concurrent_requests_each_get_their_own_result(make_client) -> None:
    client = make_client(models=[SMOKE_MODEL], max_concurrent_inferences=2, max_waiting=16)
    inputs = [
        np.random.default_rng(i).standard_normal((1, 2, 6, 6)).astype(np.float32) for i in range(8)
    ]
    requests = [
        ("POST", "/pool", {"json": {"op": "avg", "params": {"kernel_size": 3},
                                    "tensor": {"shape": [1, 2, 6, 6], "data": x.ravel().tolist()}}})
        for x in inputs
    ]  # fmt: skip
    for x, r in zip(inputs, client.gather(*requests), strict=True):
        assert r.status_code == 200, r.text
        expected = torch.nn.functional.avg_pool2d(torch.from_numpy(x), 3).numpy()
        np.testing.assert_allclose(
            np.asarray(r.json()["tensor"]["data"]), expected.ravel(), atol=1e-6
        )
