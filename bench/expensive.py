"""Comparison 5: normal requests while 8 clients send the most expensive *admissible* ones.

p50 and p99 of a small /pool request and of a one-image /descriptor request, first on a
quiet server, then while 8 clients loop over requests the default budgets only just admit
(/pool softpool and median 7x7 on 4 MiB, a max-size /descriptor batch). Target: the loaded
p99 is at most 3x the quiet p99. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import numpy as np

from app.codecs.tensor import encode_npy
from bench.common import emit_table, served_parser
from bench.descriptor import synthetic_jpegs
from bench.load import LoadResult, drive_async
from bench.server import ensure_repository, serve

MODEL = "netvlad_poolformer_s12_224"
NPY = "application/x-npy"
HEAVY_CLIENTS = 8
HEAVY_DEADLINE_S = 300.0
Send = Callable[[httpx.AsyncClient], Awaitable[int]]


def normal_requests() -> dict[str, Send]:
    x = encode_npy(np.random.default_rng(0).random((1, 8, 32, 32), dtype=np.float32))
    jpeg = synthetic_jpegs(1, 224, 224)[0]

    async def pool(client: httpx.AsyncClient) -> int:
        params = {"op": "max", "kernel_size": "2"}
        headers = {"content-type": NPY, "accept": NPY}
        return (await client.post("/pool", params=params, content=x, headers=headers)).status_code

    async def describe(client: httpx.AsyncClient) -> int:
        files = {"images": ("a.jpg", jpeg, "image/jpeg")}
        r = await client.post("/descriptor", params={"model": MODEL}, files=files)
        return r.status_code

    return {"/pool max 2x2, 32 KiB": pool, f"/descriptor {MODEL}, 1 image": describe}


def heavy_requests(images: int) -> list[Send]:
    """The most expensive requests the default budgets admit (each checked to be 200)."""
    x = encode_npy(np.random.default_rng(1).random((1, 16, 256, 256), dtype=np.float32))
    jpegs = synthetic_jpegs(images, 224, 224)

    def pool(op: str) -> Send:
        params = {"op": op, "kernel_size": "7", "stride": "1"}

        async def send(client: httpx.AsyncClient) -> int:
            headers = {"content-type": NPY, "accept": NPY}
            r = await client.post("/pool", params=params, content=x, headers=headers)
            return r.status_code

        return send

    async def describe(client: httpx.AsyncClient) -> int:
        files = [("images", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(jpegs)]
        r = await client.post("/descriptor", params={"model": MODEL}, files=files)
        return r.status_code

    return [pool("softpool"), pool("median"), describe]


async def timed(send: Send, client: httpx.AsyncClient, total: int) -> LoadResult:
    async def one(_: int) -> None:
        status = await send(client)
        if status != 200:
            raise RuntimeError(f"a normal request got {status}")

    await drive_async(one, 1, 2)  # warm: graph built, connection open
    return await drive_async(one, 1, total)


async def heavy_loop(client: httpx.AsyncClient, sends: list[Send], stop: asyncio.Event) -> int:
    done, start = 0, time.monotonic()
    while not stop.is_set() and time.monotonic() - start < HEAVY_DEADLINE_S:
        status = await sends[done % len(sends)](client)
        if status != 200:
            raise RuntimeError(f"an admissible heavy request got {status}")
        done += 1
    return done


async def measure(url: str, total: int, images: int) -> list[list[str]]:
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        heavy = heavy_requests(images)
        for send in heavy:  # admissible, and built once before timing
            if await send(client) != 200:
                raise RuntimeError("a heavy request is not admitted: the budgets changed")
        rows = []
        for label, send in normal_requests().items():
            quiet = await timed(send, client, total)
            stop = asyncio.Event()
            loops = [asyncio.create_task(heavy_loop(client, heavy[i % 3 :], stop))
                     for i in range(HEAVY_CLIENTS)]  # fmt: skip
            loaded = await timed(send, client, total)
            stop.set()
            heavy_done = sum(await asyncio.gather(*loops))
            rows += _rows(label, quiet, loaded, heavy_done)
        return rows


def _rows(label: str, quiet: LoadResult, loaded: LoadResult, heavy: int) -> list[list[str]]:
    ratio = loaded.percentile_ms(99) / quiet.percentile_ms(99)
    return [
        [label, "quiet", str(quiet.requests), *quiet.row()[2:], "-", "-"],
        [label, f"{HEAVY_CLIENTS} heavy clients", str(loaded.requests), *loaded.row()[2:],
         str(heavy), f"{ratio:.2f}x"],
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = served_parser(__doc__, "few requests").parse_args(argv)
    total, images = (10, 8) if args.quick else (60, 32)
    ensure_repository(args.repository, [MODEL])
    with serve(args.repository, [MODEL], providers=args.providers) as server:
        rows = asyncio.run(measure(server.url, total, images))
    emit_table(
        "normal requests while 8 clients send the most expensive admissible ones",
        ["request", "condition", "requests", "p50 ms", "p99 ms", "heavy done", "p99 / quiet"],
        rows,
    )


if __name__ == "__main__":
    main()
