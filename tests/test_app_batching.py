"""Dynamic batching of /descriptor: concurrent requests are coalesced into one onnxruntime
run, and every request still gets exactly its own rows (equal to torch and to batching off)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.transforms import image_to_tensor
from tests.app_fixtures import SMOKE_MODEL

NPY = "application/x-npy"


def _png(seed: int, width: int = 96, height: int = 80) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def _describe_concurrently(client, images: list[bytes]) -> list[np.ndarray]:
    requests = [
        ("POST", f"/descriptor?model={SMOKE_MODEL}",
         {"content": im, "headers": {"content-type": "image/png", "accept": NPY}})
        for im in images
    ]  # fmt: skip
    out = []
    for response in client.gather(*requests):
        assert response.status_code == 200, response.text
        out.append(np.load(io.BytesIO(response.content), allow_pickle=False))
    return out


def _batch_sizes(client) -> dict[float, float]:
    """The batch-size histogram's per-bucket counts for the smoke model, from /metrics."""
    text = client.get("/metrics").text
    counts = {}
    for line in text.splitlines():
        if line.startswith("poolserve_batch_size_bucket") and SMOKE_MODEL in line:
            le = line.split('le="')[1].split('"')[0]
            counts[float(le)] = float(line.rsplit(" ", 1)[1])
    return counts


@pytest.fixture(scope="module")
def torch_rows():
    from models.zoo import build_model

    built = build_model(SMOKE_MODEL)

    def describe(png: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(png)).convert("RGB")
        with torch.no_grad():
            return np.asarray(
                built.module(image_to_tensor(built.cfg.preprocess, image)[None]).numpy()
            )

    return describe


def test_concurrent_requests_share_one_run_and_get_their_own_rows(make_client, torch_rows) -> None:
    images = [_png(seed) for seed in range(4)]
    # A long delay and a batch of exactly 4: the four requests must go as one full batch.
    batched = make_client(
        models=[SMOKE_MODEL], batching=True, max_batch_size=4, max_queue_delay_ms=2000
    )
    unbatched = make_client(models=[SMOKE_MODEL], batching=False)
    before = _batch_sizes(batched)
    rows = _describe_concurrently(batched, images)
    after = _batch_sizes(batched)
    alone = _describe_concurrently(unbatched, images)
    for png, got, solo in zip(images, rows, alone, strict=True):
        assert got.shape == (1, 32768)
        np.testing.assert_allclose(got, solo, atol=1e-6)
        np.testing.assert_allclose(got, torch_rows(png), atol=1e-5, rtol=1e-3)
    # One new observation, in the bucket for 4 rows and not in the one below it.
    assert after[4.0] - before.get(4.0, 0) == 1
    assert after[2.0] - before.get(2.0, 0) == 0
    # Each request's wait in the queue: four of them, the first arrival waiting the longest
    # (the batch went when full, well inside the 2 s delay).
    waits = _queue_metrics(batched)
    assert waits["count"] == 4
    assert 0 <= waits["sum"] < 4 * 2.0


def _queue_metrics(client) -> dict[str, float]:
    """count and sum of the smoke model's queue-time histogram, from /metrics."""
    found = {}
    for line in client.get("/metrics").text.splitlines():
        batch_queue = SMOKE_MODEL in line and 'queue="batch"' in line
        if line.startswith("poolserve_queue_duration_seconds_") and batch_queue:
            kind = line.split("{")[0].rsplit("_", 1)[1]
            found[kind] = float(line.rsplit(" ", 1)[1])
    return found


def test_a_request_larger_than_the_batch_is_split_and_reassembled(make_client, torch_rows) -> None:
    images = [_png(seed) for seed in range(10, 13)]
    client = make_client(models=[SMOKE_MODEL], batching=True, max_batch_size=2)
    files = [("images", (f"{i}.png", im, "image/png")) for i, im in enumerate(images)]
    response = client.post(f"/descriptor?model={SMOKE_MODEL}", files=files, headers={"accept": NPY})
    assert response.status_code == 200, response.text
    got = np.load(io.BytesIO(response.content), allow_pickle=False)
    expected = np.concatenate([torch_rows(im) for im in images])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-3)


def test_a_full_batch_queue_answers_503_with_retry_after(make_client) -> None:
    client = make_client(
        models=[SMOKE_MODEL], batching=True, max_batch_size=8, max_queue_delay_ms=1000,
        max_queue_size=1,
    )  # fmt: skip
    images = [_png(seed) for seed in range(20, 22)]
    requests = [
        ("POST", f"/descriptor?model={SMOKE_MODEL}",
         {"content": im, "headers": {"content-type": "image/png"}})
        for im in images
    ]  # fmt: skip
    statuses = sorted(r.status_code for r in client.gather(*requests))
    assert statuses == [200, 503]
    refused = [r for r in client.gather(*requests) if r.status_code == 503][0]
    assert refused.json()["code"] == "overloaded"
    assert int(refused.headers["retry-after"]) >= 1
    # The service still answers a normal request afterwards.
    ok = client.post(
        f"/descriptor?model={SMOKE_MODEL}", content=images[0],
        headers={"content-type": "image/png"},
    )  # fmt: skip
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("active", "settings", "expected"),
    [
        # cuDNN searches conv algorithms per input shape: every batch size is warmed
        (
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            {"batching": True},
            [1, 2, 3, 4, 5, 6, 7, 8],
        ),
        (["CPUExecutionProvider"], {"batching": True}, [1, 8]),  # the largest sizes the arena
        (["CUDAExecutionProvider"], {"batching": False}, [1]),
        (["CPUExecutionProvider"], {"batching": True, "max_batch_size": 1}, [1]),
        (["CPUExecutionProvider"], {}, [1]),  # unset: tune() turns batching off on CPU
    ],
)
def test_warmup_covers_the_batches_the_batcher_forms(active, settings, expected) -> None:
    from app.core.config import Settings
    from app.inference.sessions import warmup_batches

    assert warmup_batches(active, Settings(**settings)) == expected
