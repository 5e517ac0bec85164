"""Ray Serve's overhead (issue 16): the same requests to ``python -m app`` and to
``python -m app.ray_serve`` with 1 and 2 replicas, on this machine.

Rows: /descriptor at concurrency 8 (one JPEG per request, images/s and latency), /pool
max 2x2 on a 4 MB npy tensor (median round trip with the raw-socket client, which costs
the client nothing), and a tiny /pool JSON request (the per-request floor of each path).
Each Ray run is the real entry point in a child process: it starts a local Ray cluster,
deploys, and is stopped with SIGTERM. One replica gets every core (``--num-cpus`` = cores,
as ``python -m app`` defaults to); two replicas get half each (one slot, one intra-op
thread), and a control row runs ``python -m app`` with as many uvicorn workers set up the
same way, so what two processes give by themselves is told apart from Ray.
Descriptors through Ray are checked against ``python -m app``'s before timing.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from app.codecs.tensor import encode_npy
from bench.common import emit_table, median, served_parser, time_call
from bench.descriptor import check_agree, service_runs, synthetic_jpegs
from bench.raw_http import RawHttp
from bench.server import READY_TIMEOUT_S, ensure_repository, free_port, serve, wait_ready

TINY_TENSOR = {"shape": [1, 1, 2, 2], "data": [1, 2, 3, 4]}
TINY = {"op": "max", "params": {"kernel_size": 2}, "tensor": TINY_TENSOR}
STOP_TIMEOUT_S = 90.0


@contextmanager
def serve_on_ray(
    repository: Path, models: list[str], replicas: int, num_cpus: float
) -> Iterator[str]:
    """``python -m app.ray_serve`` on a free port until the block exits; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "POOLSERVE_MODEL_REPOSITORY": str(repository),
        "POOLSERVE_MODELS": ",".join(models),
        "POOLSERVE_PROVIDERS": "CPUExecutionProvider",
        "POOLSERVE_LOG_LEVEL": "warning",
        "RAY_DEDUP_LOGS": "1",
    }
    cmd = [sys.executable, "-m", "app.ray_serve", "--port", str(port),
           "--replicas", str(replicas), "--num-cpus", str(num_cpus),
           "--metrics-interval-s", "0"]  # fmt: skip
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/health/ready", process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)  # removes the app, shuts Ray down
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _every_worker_ready(url: str, probes: int = 40) -> None:
    """Readiness over fresh connections until ``probes`` in a row answer 200: each
    connection reaches whichever worker accepts it, and each worker loads its own models."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    in_a_row = 0
    while in_a_row < probes:
        if time.monotonic() > deadline:
            raise RuntimeError("the workers were not all ready in time")
        ok = httpx.get(f"{url}/health/ready", timeout=5.0).status_code == 200
        in_a_row = in_a_row + 1 if ok else 0
        time.sleep(0 if ok else 0.5)


def pool_ms(url: str, x: np.ndarray, repeats: int) -> float:
    """Median round trip of /pool max 2x2 on ``x`` (npy in and out), raw-socket client."""
    body = encode_npy(x)
    headers = {"Content-Type": "application/x-npy", "Accept": "application/x-npy"}
    expected = x.reshape(*x.shape[:2], x.shape[2] // 2, 2, x.shape[3] // 2, 2).max(axis=(3, 5))
    with RawHttp(url) as raw:

        def round_trip() -> None:
            reply = raw.post("/pool?op=max&kernel_size=2", body, headers)
            if reply.status != 200:
                raise RuntimeError(f"/pool: {reply.status} {bytes(reply.body[:200])!r}")
            if not np.array_equal(np.load(io.BytesIO(reply.body)), expected):
                raise RuntimeError("/pool max 2x2 differs from NumPy's")

        return median(time_call(round_trip, repeats)) * 1e3


def tiny_ms(url: str, repeats: int) -> float:
    body = json.dumps(TINY).encode()
    with RawHttp(url) as raw:

        def round_trip() -> None:
            if raw.post("/pool", body, {"Content-Type": "application/json"}).status != 200:
                raise RuntimeError("tiny /pool failed")

        return median(time_call(round_trip, repeats)) * 1e3


def measure(
    label: str, url: str, model: str, blobs: list[bytes], plan: dict[int, int], repeats: int
) -> tuple[list[str], np.ndarray]:
    x = np.random.default_rng(0).random((1, 16, 256, 256), dtype=np.float32)  # 4 MiB
    first, results = asyncio.run(service_runs(url, model, blobs, plan))
    (load,) = results.values()
    ms = pool_ms(url, x, repeats)
    mb_s = x.nbytes / 1e6 / (ms / 1e3)
    row = [label, *load.row()[1:], f"{ms:.1f}", f"{mb_s:.0f}", f"{tiny_ms(url, repeats * 4):.2f}"]
    return row, first


def main(argv: list[str] | None = None) -> None:
    parser = served_parser(__doc__, "small model, few requests")
    args = parser.parse_args(argv)
    if args.quick:
        model, size, plan, repeats = "netvlad_poolformer_s12_224", (224, 224), {8: 16}, 5
    else:
        model, size, plan, repeats = "netvlad_poolformer_s12", (640, 480), {8: 48}, 30
    ensure_repository(args.repository, [model])
    repository = args.repository.resolve()
    blobs = synthetic_jpegs(16, *size)
    cores = len(os.sched_getaffinity(0))
    rows, agreement = [], []
    with serve(repository, [model]) as server:
        row, reference = measure("python -m app", server.url, model, blobs, plan, repeats)
    rows.append(row)
    # Two 1-CPU replicas without Ray: uvicorn workers with a replica's settings (one slot
    # and one intra-op thread each), so the second replica's row can be told apart from
    # what two processes give by themselves.
    split = {"workers": cores, "max_concurrent_inferences": 1, "intra_op_threads": 1}
    with serve(repository, [model], **split) as server:
        _every_worker_ready(server.url)
        label = f"python -m app, {cores} workers x 1 thread"
        rows.append(measure(label, server.url, model, blobs, plan, repeats)[0])
    for replicas in (1, 2):
        label = f"Ray Serve, {replicas} replica{'s' * (replicas > 1)} x {cores / replicas:g} CPU"
        with serve_on_ray(repository, [model], replicas, cores / replicas) as url:
            row, first = measure(label, url, model, blobs, plan, repeats)
        rows.append(row)
        agreement.append([label, check_agree(reference, first, label)])
    (concurrency, total) = next(iter(plan.items()))
    emit_table(
        f"Ray Serve overhead: /descriptor {model} {size[0]}x{size[1]} JPEG at c={concurrency} "
        f"({total} requests), /pool max 2x2 on 4 MiB npy (raw socket, median of {repeats}), "
        f"tiny /pool JSON; {cores} cores",
        ["path", "descriptor images/s", "p50 ms", "p99 ms", "/pool 4 MiB ms", "MB/s",
         "tiny /pool ms"],
        rows,
    )  # fmt: skip
    emit_table(
        "Descriptors through Ray vs python -m app", ["path", "max abs difference"], agreement
    )


if __name__ == "__main__":
    main()
