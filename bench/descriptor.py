"""Comparison 1: /descriptor images/s and p50/p99 latency at concurrency 1, 8 and 32 for the
default model, against torch eager in-process, onnxruntime in-process and the service with
batching off. Every path does the same work per request: decode one JPEG, preprocess it
with the model's input policy, run the model on it.

In-process paths run ``c`` threads over one shared model (one session, one module), each
handling one image at a time: what a user's own multi-threaded loader would do. Before
timing, the paths' descriptors for one image are checked against each other.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from app.codecs.image import decode_image
from app.codecs.preprocess import Preprocessor
from bench.common import emit_table, served_parser
from bench.load import LoadResult, drive_async, drive_threads
from bench.server import ensure_repository, serve
from export.manifest import load_manifest, model_path
from export.runtime import create_session
from models.zoo import build_model

Describe = Callable[[bytes], np.ndarray]
MAX_PIXELS = 40_000_000


def synthetic_jpegs(count: int, width: int, height: int) -> list[bytes]:
    """Photo-like JPEGs (smooth colour fields plus grain, quality 90), all different."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC))
        grain = rng.normal(0, 8, smooth.shape)
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    return blobs


def in_process_paths(root: Path, name: str, providers: list[str]) -> dict[str, Describe]:
    """onnxruntime and torch eager, each behind the same decode + preprocess; torch on CUDA
    when onnxruntime is asked for CUDA and torch has it."""
    entry = load_manifest(root).models[name]
    assert entry.cfg is not None
    preprocess = Preprocessor.from_dict(entry.cfg["preprocess"])
    session = create_session(model_path(root, entry), providers)
    input_name = session.get_inputs()[0].name
    built = build_model(name)
    if built.provenance != entry.weights:
        raise RuntimeError(f"torch has {built.provenance}, the repository {entry.weights}")
    cuda = "CUDAExecutionProvider" in providers and torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    module = built.module.eval().to(device)

    def pixels(blob: bytes) -> np.ndarray:
        return preprocess(decode_image(blob, MAX_PIXELS))[None]

    def run_ort(blob: bytes) -> np.ndarray:
        return np.asarray(session.run(None, {input_name: pixels(blob)})[0])

    def run_torch(blob: bytes) -> np.ndarray:
        with torch.inference_mode():
            out: torch.Tensor = module(torch.from_numpy(pixels(blob)).to(device))
        return out.cpu().numpy()

    return {"onnxruntime in-process": run_ort, "torch eager in-process": run_torch}


def thread_load(describe: Describe, blobs: list[bytes], concurrency: int, total: int) -> LoadResult:
    """One warm-up round (a request per thread), then the measured run."""

    def call(i: int) -> None:
        describe(blobs[i % len(blobs)])

    drive_threads(call, concurrency, concurrency)
    return drive_threads(call, concurrency, total)


async def post_image(client: httpx.AsyncClient, name: str, blob: bytes) -> np.ndarray:
    reply = await client.post(
        "/descriptor",
        params={"model": name},
        files={"images": ("image.jpg", blob, "image/jpeg")},
        headers={"Accept": "application/x-npy"},
    )
    reply.raise_for_status()
    return np.asarray(np.load(io.BytesIO(reply.content)))


async def service_runs(
    url: str, name: str, blobs: list[bytes], plan: dict[int, int]
) -> tuple[np.ndarray, dict[int, LoadResult]]:
    """The service's descriptor of blobs[0], and a load result per concurrency."""
    limits = httpx.Limits(max_connections=max(plan), max_keepalive_connections=max(plan))
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        first = await post_image(client, name, blobs[0])
        results = {}
        for concurrency, total in plan.items():

            async def send(i: int) -> None:
                await post_image(client, name, blobs[i % len(blobs)])

            await drive_async(send, concurrency, concurrency)  # warm every connection
            results[concurrency] = await drive_async(send, concurrency, total)
    return first, results


def check_agree(reference: np.ndarray, other: np.ndarray, what: str) -> str:
    """Max |difference| against the reference; refuses to benchmark paths that disagree."""
    err = float(np.abs(reference.ravel() - other.ravel()).max())
    if err > 1e-3:
        raise RuntimeError(f"{what} disagrees with onnxruntime in-process: max |d| = {err}")
    return f"{err:.1e}"


def main(argv: list[str] | None = None) -> None:
    parser = served_parser(__doc__, "small model, few requests")
    args = parser.parse_args(argv)
    if args.quick:
        name, size, plan = "netvlad_poolformer_s12_224", (224, 224), {1: 4, 8: 16}
    else:
        name, size, plan = "netvlad_poolformer_s12", (640, 480), {1: 16, 8: 32, 32: 96}
    ensure_repository(args.repository, [name])
    blobs = synthetic_jpegs(16, *size)
    rows, agreement = [], []
    in_process = in_process_paths(args.repository, name, args.providers.split(","))
    reference = in_process["onnxruntime in-process"](blobs[0])
    for label, describe in in_process.items():
        agreement.append([label, check_agree(reference, describe(blobs[0]), label)])
        for concurrency, total in plan.items():
            result = thread_load(describe, blobs, concurrency, total)
            rows.append([label, str(concurrency), *result.row()])
    for batching in (True, False):
        label = f"service, batching {'on' if batching else 'off'}"
        with serve(args.repository, [name], batching=batching, providers=args.providers) as srv:
            first, results = asyncio.run(service_runs(srv.url, name, blobs, plan))
        agreement.append([label, check_agree(reference, first, label)])
        rows += [[label, str(c), *r.row()] for c, r in results.items()]
    emit_table(
        f"/descriptor {name}, {size[0]}x{size[1]} JPEG, one image per request",
        ["path", "concurrency", "requests", "images/s", "p50 ms", "p99 ms"],
        rows,
    )
    emit_table("descriptor agreement with onnxruntime in-process", ["path", "max |d|"], agreement)


if __name__ == "__main__":
    main()
