"""/descriptor's JSON body: base64 and data-URI images reach the same decode, limits and
engine as multipart, so both forms give the same bytes; limits are checked on the encoded
text before decoding. The encoder is the standard library's ``base64``; the reference for
the descriptors is the multipart form and, for one image, the torch model."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.transforms import image_to_tensor
from tests.app_fixtures import SMOKE_MODEL, AppClient

NPY = "application/x-npy"


def _photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    return coarse.resize((width, height), Image.Resampling.BICUBIC)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _npy(reply: Any) -> np.ndarray:
    assert reply.status_code == 200, reply.text[:300]
    return np.asarray(np.load(io.BytesIO(reply.content), allow_pickle=False))


IMAGES = [_encode(_photo(300, 200, 1), "JPEG"), _encode(_photo(180, 240, 2), "PNG")]


def test_json_and_multipart_give_byte_identical_descriptors(app_client: AppClient) -> None:
    files = [
        ("images", (f"i{i}", blob, "application/octet-stream")) for i, blob in enumerate(IMAGES)
    ]
    multipart = app_client.post("/descriptor", files=files, headers={"accept": NPY})
    plain = {"images": [_b64(blob) for blob in IMAGES]}
    uris = {
        "images": [
            f"data:image/jpeg;base64,{_b64(IMAGES[0])}",
            f"DATA:image/png;name=b.png;base64,{_b64(IMAGES[1])}",  # scheme case, parameters
        ],
        "model": SMOKE_MODEL,
    }
    for body in (plain, uris):
        reply = app_client.post("/descriptor", json=body, headers={"accept": NPY})
        assert reply.content == multipart.content  # the whole .npy, header and rows
    as_json = app_client.post("/descriptor", json=plain)
    assert as_json.status_code == 200
    np.testing.assert_array_equal(
        np.asarray(as_json.json()["descriptors"], np.float32), _npy(multipart)
    )


def test_json_descriptor_matches_the_torch_model(app_client: AppClient) -> None:
    from models.zoo import build_model

    built = build_model(SMOKE_MODEL)
    image = Image.open(io.BytesIO(IMAGES[1])).convert("RGB")
    with torch.no_grad():
        want = built.module(image_to_tensor(built.cfg.preprocess, image)[None]).numpy()
    reply = app_client.post("/descriptor", json={"images": [_b64(IMAGES[1])]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["count"] == 1
    np.testing.assert_allclose(reply.json()["descriptors"], want, atol=1e-5, rtol=1e-3)


def test_the_body_names_the_model_and_agrees_with_the_query(app_client: AppClient) -> None:
    body = {"images": [_b64(IMAGES[0])], "model": SMOKE_MODEL}
    assert app_client.post("/descriptor", json=body).json()["model"] == SMOKE_MODEL
    same = app_client.post(f"/descriptor?model={SMOKE_MODEL}", json=body)
    assert same.status_code == 200
    other = app_client.post("/descriptor?model=netvlad_head", json=body)
    assert other.status_code == 422
    assert other.json()["code"] == "validation_error"
    unknown = app_client.post("/descriptor", json={**body, "model": "nope"})
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "unknown_model"


def test_image_bytes_limit_is_exact_and_checked_before_decoding(make_client: Any) -> None:
    blob = IMAGES[0]
    client = make_client(models=[SMOKE_MODEL], max_image_bytes=len(blob))
    assert client.post("/descriptor", json={"images": [_b64(blob)]}).status_code == 200
    over = _b64(blob + b"\0")  # one byte over: 413 whatever the text holds
    for text in (over, over[:-8] + "@@@@@@==", f"data:image/jpeg;base64,{over}"):
        reply = client.post("/descriptor", json={"images": [text]})
        assert reply.status_code == 413, reply.text
        assert reply.json()["code"] == "image_too_large"
    files = [("images", ("a", blob + b"\0", "image/jpeg"))]
    assert client.post("/descriptor", files=files).json()["code"] == "image_too_large"
    raw = client.post("/descriptor", content=blob + b"\0", headers={"content-type": "image/jpeg"})
    assert raw.json()["code"] == "image_too_large"


def test_json_body_limit_holds_on_the_stream(make_client: Any) -> None:
    body = {"images": [_b64(IMAGES[0])]}
    limit = len(_b64(IMAGES[0])) + 10  # under the whole body
    client = make_client(models=[SMOKE_MODEL], max_json_body_bytes=limit)
    reply = client.post("/descriptor", json=body)
    assert reply.status_code == 413
    assert reply.json()["code"] == "body_too_large"


def test_openapi_documents_the_json_body(app_client: AppClient) -> None:
    doc = app_client.get("/openapi.json").json()
    content = doc["paths"]["/descriptor"]["post"]["requestBody"]["content"]
    schema = content["application/json"]["schema"]
    assert schema["required"] == ["images"]
    assert schema["properties"]["images"]["items"] == {"type": "string"}
    assert schema["additionalProperties"] is False
    assert "base64" in schema["properties"]["images"]["description"]
