"""Comparison 2: /pool max 2x2 on a float32 tensor, end to end over HTTP (npy body and npy
reply; the JSON form at 4 MB, its size limit's order), against onnxruntime and torch
``max_pool2d`` in-process on the same tensor and a memcpy of the same bytes (the bound).

An HTTP row's time is the client's whole round trip: send the prepared body, wait, decode
the reply into an array (``np.load`` / ``json.loads``). Bodies are encoded before timing.
Every npy row is measured twice: with httpx, the client people use, and with the raw-socket
client (``bench.raw_http``), because httpx's sync client is slower than the server; the JSON
row is httpx only. Every /pool result is checked against torch ``max_pool2d`` first.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F

from app.codecs.tensor import encode_npy
from app.inference.binding import run_bound_or_plain
from bench.common import emit_table, median, time_call
from bench.raw_http import RawHttp
from bench.server import ensure_repository, serve, serve_echo
from export.runtime.graph import build_pool_graph
from export.runtime.sessions import CUDA, create_session, run
from models.pooling import parse_params

SERVER_MODELS = ["netvlad_poolformer_s12_224"]
"""The /pool server needs some model loaded; the small one starts fastest."""


def feature_map(megabytes: int) -> np.ndarray:
    channels = megabytes * 1024 * 1024 // (4 * 512 * 512)
    return np.random.default_rng(0).random((1, channels, 512, 512), dtype=np.float32)


def row(name: str, nbytes: int, seconds: float) -> list[str]:
    return [name, f"{nbytes / 1e6:.1f}", f"{seconds * 1e3:.1f}", f"{nbytes / seconds / 1e9:.3f}"]


def in_process_rows(x: np.ndarray, repeats: int) -> list[list[str]]:
    session = create_session(max_2x2(), ["CPUExecutionProvider"])
    target = np.empty_like(x)
    xt = torch.from_numpy(x)
    cases = {
        "memcpy (bound)": lambda: np.copyto(target, x),
        "onnxruntime in-process": lambda: run(session, x),
        "torch max_pool2d in-process": lambda: F.max_pool2d(xt, 2),
    }
    return [row(name, x.nbytes, median(time_call(fn, repeats))) for name, fn in cases.items()]


def max_2x2() -> onnx.ModelProto:
    return build_pool_graph("max", parse_params("max", kernel_size=2))


def gpu_rows(x: np.ndarray, repeats: int) -> list[list[str]]:
    """The same op on the GPU: host arrays in and out (what /pool does), and device-resident
    (the kernel alone), for onnxruntime CUDA and torch CUDA, beside the copy to the device."""
    session = create_session(max_2x2(), [CUDA, "CPUExecutionProvider"])
    if session.get_providers()[0] != CUDA or not torch.cuda.is_available():
        return [["GPU rows", "-", "-", "not measured: no CUDA session or no torch CUDA"]]
    feeds = {"x": x}
    on_device = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    xd = torch.from_numpy(x).cuda()

    def ort_resident() -> None:
        binding = session.io_binding()
        binding.bind_ortvalue_input("x", on_device)
        binding.bind_output("y", "cuda", 0)
        session.run_with_iobinding(binding)

    def synced(fn: Callable[[], object]) -> Callable[[], None]:
        def call() -> None:
            fn()
            torch.cuda.synchronize()

        return call

    cases: dict[str, Callable[[], object]] = {
        "host -> device copy (torch, pageable)": synced(lambda: torch.from_numpy(x).cuda()),
        "onnxruntime CUDA, I/O binding, host in/out": lambda: run_bound_or_plain(
            session, feeds, True
        ),
        "onnxruntime CUDA, plain run, host in/out": lambda: run_bound_or_plain(
            session, feeds, False
        ),
        "onnxruntime CUDA, device-resident": ort_resident,
        "torch CUDA, host in/out": lambda: F.max_pool2d(torch.from_numpy(x).cuda(), 2).cpu(),
        "torch CUDA, device-resident": synced(lambda: F.max_pool2d(xd, 2)),
    }
    (want,) = run_bound_or_plain(session, {"x": x}, True)
    if not np.array_equal(want, F.max_pool2d(torch.from_numpy(x), 2).numpy()):
        raise RuntimeError("onnxruntime CUDA max 2x2 differs from torch's CPU max_pool2d")
    return [row(name, x.nbytes, median(time_call(fn, repeats))) for name, fn in cases.items()]


def npy_request(x: np.ndarray) -> tuple[bytes, str, dict[str, str]]:
    """The npy form of /pool max 2x2: body, path with the query, headers."""
    headers = {"Content-Type": "application/x-npy", "Accept": "application/x-npy"}
    return encode_npy(x), "/pool?op=max&kernel_size=2", headers


def checked_seconds(
    what: str, round_trip: Callable[[], np.ndarray], x: np.ndarray, repeats: int
) -> float:
    """Median seconds of ``round_trip``, after checking its result against torch once."""
    if not np.array_equal(round_trip(), F.max_pool2d(torch.from_numpy(x), 2).numpy()):
        raise RuntimeError(f"{what} does not match torch max_pool2d")
    return median(time_call(round_trip, repeats))


def http_seconds(client: httpx.Client, x: np.ndarray, form: str, repeats: int) -> float:
    """Median round trip of /pool max 2x2 on ``x`` with httpx, in the ``npy`` or ``json``
    form."""
    if form == "npy":
        body, path, headers = npy_request(x)
    else:
        tensor = {"shape": list(x.shape), "dtype": "float32", "data": x.ravel().tolist()}
        payload = {"op": "max", "params": {"kernel_size": 2}, "tensor": tensor}
        body, path = json.dumps(payload).encode(), "/pool"
        headers = {"Content-Type": "application/json"}

    def round_trip() -> np.ndarray:
        reply = client.post(path, content=body, headers=headers)
        reply.raise_for_status()
        if form == "npy":
            return np.asarray(np.load(io.BytesIO(reply.content)))
        out = reply.json()["tensor"]
        return np.asarray(out["data"], np.float32).reshape(out["shape"])

    return checked_seconds(f"/pool {form} (httpx)", round_trip, x, repeats)


def raw_seconds(url: str, x: np.ndarray, repeats: int) -> float:
    """The npy form's median round trip with the raw-socket client (``bench.raw_http``)."""
    body, path, headers = npy_request(x)
    with RawHttp(url) as raw:

        def round_trip() -> np.ndarray:
            reply = raw.post(path, body, headers)
            if reply.status != 200:
                raise RuntimeError(f"/pool npy: {reply.status} {bytes(reply.body[:200])!r}")
            return np.asarray(np.load(io.BytesIO(reply.body)))

        return checked_seconds("/pool npy (raw socket)", round_trip, x, repeats)


def echo_seconds(x: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median round trips of the same npy body through the bare echo app (the HTTP floor),
    with httpx and with the raw-socket client."""
    body = encode_npy(x)
    with serve_echo() as server, httpx.Client(base_url=server.url, timeout=600) as client:
        by_httpx = median(time_call(lambda: client.post("/", content=body).content, repeats))
        with RawHttp(server.url) as raw:
            by_raw = median(time_call(lambda: raw.post("/", body).body, repeats))
    return by_httpx, by_raw


def http_rows(
    repository: Path, big: np.ndarray, small: np.ndarray, repeats: int
) -> list[list[str]]:
    """Every HTTP row with httpx, and the npy rows again with the raw-socket client (httpx's
    sync client is slower than the server); the JSON row stays httpx."""
    ensure_repository(repository, SERVER_MODELS)
    floor_httpx, floor_raw = echo_seconds(big, repeats)
    floor = "HTTP floor: bare ASGI echo, same uvicorn"
    rows = [row(f"{floor}, httpx", big.nbytes, floor_httpx),
            row(f"{floor}, raw socket", big.nbytes, floor_raw)]  # fmt: skip
    with (
        serve(repository, SERVER_MODELS, providers="CPUExecutionProvider") as server,
        httpx.Client(base_url=server.url, timeout=600) as client,
    ):
        for x in (big, small):
            rows.append(row("/pool npy over HTTP, httpx", x.nbytes,
                            http_seconds(client, x, "npy", repeats)))  # fmt: skip
            rows.append(row("/pool npy over HTTP, raw socket", x.nbytes,
                            raw_seconds(server.url, x, repeats)))  # fmt: skip
        rows.append(row("/pool JSON over HTTP, httpx", small.nbytes,
                        http_seconds(client, small, "json", 5)))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="16 MB, 3 repeats (smoke only)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--gpu", action="store_true", help="add the CUDA rows")
    parser.add_argument("--no-http", action="store_true", help="in-process rows only")
    args = parser.parse_args(argv)
    megabytes, repeats = (16, 3) if args.quick else (64, 20)
    big, small = feature_map(megabytes), feature_map(4)
    rows = in_process_rows(big, repeats)
    if args.gpu:
        rows += gpu_rows(big, repeats)
    if not args.no_http:
        rows += http_rows(args.repository, big, small, repeats)
    emit_table(
        f"/pool max 2x2, {megabytes} MB and 4 MB float32",
        ["path", "MB in", "median ms", "GB/s of input"],
        rows,
    )


if __name__ == "__main__":
    main()
