"""Comparison 1: /descriptor images/s and p50/p99 latency at concurrency 1, 8 and 32 for the
default model (or ``--models``), against torch eager in-process, onnxruntime in-process and
the service under each ``--configs`` entry (default: batching on, batching off). Every path
does the same work per image: decode one JPEG, preprocess it with the model's input policy,
run the model on it.

In-process paths run ``c`` threads over one shared model (one session, one module), each
handling one image at a time: what a user's own multi-threaded loader would do. With
``--batch-sizes``, onnxruntime also runs batches of that many images (decoded in the loop)
on ``c // size`` threads. Before timing, the paths' descriptors for one image are checked
against each other. ``--providers`` puts every path on CUDA (torch too, where it has CUDA).
"""

from __future__ import annotations

import argparse
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
from app.inference.binding import run_bound_or_plain
from bench.common import emit_table, served_parser
from bench.load import LoadResult, drive_async, drive_threads
from bench.server import ensure_repository, serve
from export.runtime.manifest import load_manifest, model_path
from export.runtime.sessions import create_session
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


def in_process_paths(
    root: Path, name: str, providers: list[str]
) -> tuple[dict[str, Describe], Callable[[list[bytes]], np.ndarray]]:
    """onnxruntime and torch eager, each behind the same decode + preprocess, and a batched
    onnxruntime call; torch on CUDA when onnxruntime is asked for CUDA and torch has it."""
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

    def pixels(blobs: list[bytes]) -> np.ndarray:
        return np.stack([preprocess(decode_image(blob, MAX_PIXELS)) for blob in blobs])

    def run_ort(blobs: list[bytes]) -> np.ndarray:
        return run_bound_or_plain(session, {input_name: pixels(blobs)}, io_binding=True)[0]

    def run_torch(blob: bytes) -> np.ndarray:
        with torch.inference_mode():
            out: torch.Tensor = module(torch.from_numpy(pixels([blob])).to(device))
        return out.cpu().numpy()

    paths = {"onnxruntime in-process": lambda b: run_ort([b]), "torch eager in-process": run_torch}
    return paths, run_ort


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


def parse_configs(text: str) -> dict[str, dict[str, str]]:
    """``"batching=0;batching=1,max_batch_size=32"`` -> service settings per run; an empty
    part is the provider's defaults."""
    configs = {}
    for part in text.split(";"):
        pairs = dict(item.split("=", 1) for item in part.split(",") if item)
        configs[f"service, {part or 'defaults'}"] = pairs
    return configs


def in_process_rows(
    paths: dict[str, Describe], blobs: list[bytes], plan: dict[int, int], reference: np.ndarray
) -> tuple[list[list[str]], list[list[str]]]:
    rows, agreement = [], []
    for label, describe in paths.items():
        agreement.append([label, check_agree(reference, describe(blobs[0]), label), "-"])
        for concurrency, total in plan.items():
            result = thread_load(describe, blobs, concurrency, total)
            rows.append([label, str(concurrency), *result.row()])
    return rows, agreement


def batched_rows(
    describe_batch: Callable[[list[bytes]], np.ndarray],
    blobs: list[bytes],
    sizes: list[int],
    plan: dict[int, int],
) -> list[list[str]]:
    """In-process batches of each size, ``c // size`` threads each (so images in flight
    match concurrency ``c``); images/s counts images, not calls."""
    rows = []
    for size in sizes:
        for concurrency, total in plan.items():
            if concurrency < size:
                continue
            threads = max(1, concurrency // size)
            calls = max(threads, total // size)

            def call(i: int, n: int = size) -> None:
                describe_batch([blobs[(i * n + k) % len(blobs)] for k in range(n)])

            drive_threads(call, threads, threads)
            result = drive_threads(call, threads, calls)
            images = LoadResult(calls * size, result.wall_s, result.latencies_s)
            label = f"onnxruntime in-process, batches of {size}"
            rows.append([label, str(concurrency), *images.row()])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = served_parser(__doc__, "small model, few requests")
    parser.add_argument("--models", help="comma list (default: the 640x480 model)")
    parser.add_argument("--scale", type=int, default=1, help="multiply every request count")
    parser.add_argument("--batch-sizes", default="", help="in-process batched rows, e.g. 8,32")
    parser.add_argument("--configs", default=";batching=1", help="see parse_configs")
    args = parser.parse_args(argv)
    if args.quick:
        default, size, plan = "netvlad_poolformer_s12_224", (224, 224), {1: 4, 8: 16}
    else:
        default, size, plan = "netvlad_poolformer_s12", (640, 480), {1: 16, 8: 32, 32: 96}
    plan = {c: n * args.scale for c, n in plan.items()}
    blobs = synthetic_jpegs(16, *size)
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    for name in (args.models or default).split(","):
        ensure_repository(args.repository, [name])
        describe_model(args, name, blobs, plan, sizes)


def describe_model(
    args: argparse.Namespace,
    name: str,
    blobs: list[bytes],
    plan: dict[int, int],
    sizes: list[int],
) -> None:
    """Every path for one model: in-process, in-process batched, the service per config."""
    paths, describe_batch = in_process_paths(args.repository, name, args.providers.split(","))
    reference = paths["onnxruntime in-process"](blobs[0])
    rows, agreement = in_process_rows(paths, blobs, plan, reference)
    rows += batched_rows(describe_batch, blobs, sizes, plan)
    for label, settings in parse_configs(args.configs).items():
        with serve(args.repository, [name], providers=args.providers, **settings) as srv:
            first, results = asyncio.run(service_runs(srv.url, name, blobs, plan))
        agreement.append([label, check_agree(reference, first, label), f"{srv.startup_s:.1f}"])
        rows += [[label, str(c), *r.row()] for c, r in results.items()]
    width, height = Image.open(io.BytesIO(blobs[0])).size
    emit_table(
        f"/descriptor {name}, {width}x{height} JPEG, one image per request ({args.providers})",
        ["path", "concurrency", "requests", "images/s", "p50 ms", "p99 ms"],
        rows,
    )
    emit_table(
        f"{name}: agreement with onnxruntime in-process; service start-up (load, warm-up)",
        ["path", "max |d|", "start-up s"],
        agreement,
    )


if __name__ == "__main__":
    main()
