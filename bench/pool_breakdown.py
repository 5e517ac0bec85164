"""Issue 18: where a 64 MB /pool request goes (max 2x2, npy body, npy reply), stage by stage,
beside the same request end to end with the raw-socket client, in the same run. Nothing is
added to the service: every stage is measured from outside it or with its own functions.

- Through the real server (raw socket): one exchange (/pool with no op and an empty body,
  refused at once) and the receive (/pool with no op and the body: refused once the body
  is in, so its round trip less the exchange is the route's receive).
- ``bench.echo_app:stages`` under the same uvicorn (httptools, uvloop): a prepared 16 MB
  reply less an empty round trip (the send), and the chunk sizes uvicorn hands over.
- In-process, the service's own functions on the same bytes: ``read_aligned`` over a fake
  ASGI receive fed those chunk sizes (the receive's copies, without the socket),
  ``parse_npy``, ``check_inputs`` (shapes, the finiteness scan), the onnxruntime run of the
  graph the engine builds (the server's session options), the whole ``PoolEngine.run``,
  and ``encode_npy``.

"Rest" is the end-to-end time less the sum: routing, middleware, the route's other thread
hand-offs.

``--allocator`` adds issue 18's part 1: the same request against one server per glibc malloc
setting (``ALLOCATORS``), round robin, with the minor page faults each request costs, and each
server's RSS after start-up, after those requests, after mixed requests and after the most
expensive admitted /pool runs (each followed by ``malloc_trim``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from fastapi import Request

from app.api.aligned_body import read_aligned
from app.codecs.tensor import WIRE_DTYPES, TensorLimits, encode_npy, parse_npy
from app.core.config import Settings
from app.core.metrics import Metrics
from app.inference.binding import run_bound_or_plain
from app.inference.pool import PoolRequest, spec_of, validate_params
from app.inference.pool_inputs import check_inputs
from app.inference.sessions import open_session
from app.main import load_services
from bench.common import emit_table, median, time_call
from bench.load import drive_async
from bench.memory import mix
from bench.oip import closed_form, pooled_shape
from bench.pool_bandwidth import SERVER_MODELS, feature_map
from bench.raw_http import RawHttp
from bench.server import Server, ensure_repository, serve, serve_echo
from export.runtime.graph import build_lowered_graph
from export.runtime.lowering import select_lowering

POOL_PATH = "/pool?op=max&kernel_size=2"
NPY_HEADERS = {"Content-Type": "application/x-npy", "Accept": "application/x-npy"}
PARAMS = {"kernel_size": 2}
TUNABLES = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=2147483648"
"""Numbers only: glibc reads no K/M/G suffix, so ``mmap_threshold=1G`` means 1 byte."""
ALLOCATORS = {
    "glibc defaults": "",
    "issue 18's string": "glibc.malloc.mmap_threshold=1G:trim_threshold=2G",
    "TUNABLES": TUNABLES,
    "TUNABLES, arena_max=1": f"{TUNABLES}:glibc.malloc.arena_max=1",
    "TUNABLES, top_pad=64 MiB": f"{TUNABLES}:glibc.malloc.top_pad=67108864",
}
"""GLIBC_TUNABLES per server ("" is glibc's defaults, whatever this process has set)."""
EXPENSIVE = [
    ("softpool", {"kernel_size": 7, "stride": 1}),
    ("median", {"kernel_size": 7, "stride": 1}),
]
"""Admitted /pool runs whose estimated peak passes TRIM_AFTER_BYTES on a 4 MiB input."""

Timings = dict[str, float]


def stage_app_stages(body: bytes, reply_bytes: int, repeats: int) -> tuple[Timings, list[int]]:
    """The 16 MB send and the body's receive under the bare stage app (each less an empty
    round trip), and the sizes of the chunks uvicorn delivered to read_aligned."""
    with serve_echo("bench.echo_app:stages") as server, RawHttp(server.url) as raw:
        empty = median(time_call(lambda: raw.post("/", b""), repeats))
        received = median(time_call(lambda: raw.post("/receive", body), repeats))
        chunks = [int(n) for n in json.loads(raw.post("/chunks", b"").body)]
        sent = median(time_call(lambda: raw.post(f"/reply?bytes={reply_bytes}", b""), repeats))
    return {"bare_receive": received - empty, "send": sent - empty}, chunks


def fake_request(body: bytes, sizes: list[int]) -> Callable[[], Request]:
    """A factory of requests whose receive hands out ``body`` in chunks of ``sizes``, as
    uvicorn did (the chunks are cut before timing: uvicorn's own copies are its cost)."""
    offsets = np.cumsum([0, *sizes])
    pieces = [body[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    headers = [(b"content-length", b"%d" % len(body))]
    scope = {"type": "http", "method": "POST", "path": "/pool", "headers": headers}

    def make() -> Request:
        left = deque(pieces)

        async def receive() -> dict[str, Any]:
            piece = left.popleft() if left else b""
            return {"type": "http.request", "body": piece, "more_body": bool(left)}

        return Request(scope, receive)

    return make


def graph_session(settings: Settings, x: np.ndarray) -> ort.InferenceSession:
    """The session ``PoolEngine`` builds for max 2x2 on ``x`` (same calls, same options)."""
    params = validate_params("max", PARAMS)
    lowering = select_lowering("max", params, x.dtype.name, settings.pool_prefer)
    static_hw = (int(x.shape[2]), int(x.shape[3])) if lowering.needs_static_hw else None
    model = build_lowered_graph(lowering, params, x.dtype.name, static_hw=static_hw)
    session, _ = open_session(model, settings, "pool:max", one_off=True)
    return session


def shrinking() -> ort.RunOptions:
    """Run options as the engine's /pool runs have them (the arena shrinks after the run)."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def in_process_stages(settings: Settings, body: bytes, sizes: list[int], repeats: int) -> Timings:
    """Medians of every in-process stage on the same body, with the server's tuned settings."""
    services = load_services(settings, Metrics())
    settings = services.pools.settings  # tune() has filled intra-op threads and the rest
    loop = asyncio.new_event_loop()
    requests = fake_request(body, sizes)
    raw = loop.run_until_complete(read_aligned(requests(), 0))
    limits = TensorLimits(settings.max_tensor_elements, settings.max_tensor_rank)
    x = parse_npy(raw, limits, WIRE_DTYPES)
    spec, params = spec_of("max"), validate_params("max", PARAMS)
    session = graph_session(settings, x)
    (y,) = run_bound_or_plain(session, {"x": x}, settings.io_binding, shrinking())
    engine_call = PoolRequest("max", PARAMS, {"x": x})
    cases: dict[str, Callable[[], object]] = {
        "receive_copy": lambda: loop.run_until_complete(read_aligned(requests(), 0)),
        "parse": lambda: parse_npy(raw, limits, WIRE_DTYPES),
        "check": lambda: check_inputs(spec, params, ("x",), {"x": x}),
        "run": lambda: run_bound_or_plain(session, {"x": x}, settings.io_binding, shrinking()),
        "engine": lambda: loop.run_until_complete(services.pools.run(engine_call)),
        "encode": lambda: encode_npy(y),
    }
    try:
        return {name: median(time_call(fn, repeats)) for name, fn in cases.items()}
    finally:
        loop.run_until_complete(services.runner.close())
        loop.close()


def pool_seconds(server: Server, body: bytes, x: np.ndarray, repeats: int) -> float:
    """Median /pool round trip with the raw-socket client, its result checked first."""
    with RawHttp(server.url) as raw:

        def call() -> np.ndarray:
            reply = raw.post(POOL_PATH, body, NPY_HEADERS)
            return np.frombuffer(reply.body, np.float32, offset=128).reshape(pooled_shape(x))

        if not np.array_equal(call(), closed_form(x)):
            raise RuntimeError("/pool differs from the closed form of max 2x2")
        return median(time_call(call, repeats))


def service_stages(repository: Path, body: bytes, x: np.ndarray, repeats: int) -> Timings:
    """Through the real route, raw socket: /pool without an op and an empty body (one
    exchange; 422), with the body (422 ``missing_op`` once the body is in: the route's
    receive), and the whole request."""
    with serve(repository, SERVER_MODELS) as server, RawHttp(server.url) as raw:
        refused = raw.post("/pool", body, NPY_HEADERS)
        if refused.status != 422 or b"missing_op" not in refused.body:
            raise RuntimeError(f"/pool without an op: {refused.status} {bytes(refused.body)!r}")
        empty = median(time_call(lambda: raw.post("/pool", b"", NPY_HEADERS), repeats))
        received = median(time_call(lambda: raw.post("/pool", body, NPY_HEADERS), repeats))
        pool = pool_seconds(server, body, x, repeats)
    return {"exchange": empty, "receive": received - empty, "pool": pool}


def floors(body: bytes, x: np.ndarray, repeats: int) -> Timings:
    """The echo app with the raw-socket client, and memcpy of the same bytes."""
    with serve_echo() as echo, RawHttp(echo.url) as raw:
        floor = median(time_call(lambda: raw.post("/", body), repeats))
    target = np.empty_like(x)
    return {"echo": floor, "memcpy": median(time_call(lambda: np.copyto(target, x), repeats))}


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def breakdown_rows(t: Timings, sizes: list[int], body_mb: int) -> list[list[str]]:
    """The stage table: each stage's median and its share of the end-to-end median."""
    e2e, kib = t["pool"], np.median(sizes) / 1024
    stages = [
        ("empty exchange", "service: /pool, no op, empty body (422)", t["exchange"]),
        (f"receive {body_mb} MB", "service: /pool, no op, the body (422 once it is in), "
         "less the exchange", t["receive"]),
        ("parse", "parse_npy, in-process", t["parse"]),
        ("check", "check_inputs (shapes, finiteness scan), in-process", t["check"]),
        ("run", "onnxruntime run of the engine's graph, in-process", t["run"]),
        ("engine's own", "PoolEngine.run less check and run: admission, graph cache, "
         "thread hand-offs", t["engine"] - t["check"] - t["run"]),
        ("encode", "encode_npy of the result, in-process", t["encode"]),
        (f"send {body_mb // 4} MB", "bare stage app: a prepared reply, less an empty "
         "round trip", t["send"]),
    ]  # fmt: skip
    total = sum(seconds for _, _, seconds in stages)
    rows = [[name, how, ms(s), f"{s / e2e:.0%}"] for name, how, s in stages]
    rows[2:2] = [
        ["(of which: copies into the buffer)", f"read_aligned over {len(sizes)} chunks of "
         f"median {kib:.0f} KiB, in-process", ms(t["receive_copy"]),
         f"({t['receive_copy'] / e2e:.0%})"],
        ["(receive, bare stage app)", "the same read_aligned under a bare uvicorn app, less "
         "an empty round trip; not summed", ms(t["bare_receive"]), "-"],
    ]  # fmt: skip
    rest = e2e - total
    return rows + [
        ["sum of the stages", "", ms(total), f"{total / e2e:.0%}"],
        ["end to end", "/pool npy, raw socket, same server", ms(e2e), "100%"],
        ["rest", "end to end less the sum: routing, middleware, the route's other hand-offs",
         ms(rest), f"{rest / e2e:.0%}"],
    ]  # fmt: skip


def target_rows(e: Timings) -> list[list[str]]:
    floor, bound = e["echo"] / e["pool"], e["memcpy"] / e["pool"]
    return [
        ["/pool npy (raw socket) >= 1.0x the echo app (raw socket)",
         f"{ms(e['echo'])} / {ms(e['pool'])} ms = {floor:.2f}x",
         "met" if floor >= 1.0 else "missed"],
        ["/pool npy (raw socket) >= 15% of memcpy",
         f"{ms(e['memcpy'])} / {ms(e['pool'])} ms = {bound:.1%}",
         "met" if bound >= 0.15 else "missed"],
    ]  # fmt: skip


async def send_mixed(url: str, count: int) -> None:
    """``count`` requests of bench.memory's mix, 8 at a time; each must get its status class."""
    calls = mix(with_default=False)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def send(i: int) -> None:
            call = calls[i % len(calls)]
            reply = await client.request(call.method, call.path, params=call.params,
                                         content=call.content, files=call.files,
                                         headers=call.headers)  # fmt: skip
            if reply.status_code // 100 != call.expect:
                raise RuntimeError(f"{call.kind}: {reply.status_code} {reply.text[:200]}")

        await drive_async(send, 8, count)


def send_expensive(url: str) -> None:
    x = np.random.default_rng(0).random((1, 16, 256, 256), dtype=np.float32)
    with RawHttp(url) as raw:
        for op, params in EXPENSIVE:
            query = "&".join(f"{k}={json.dumps(v)}" for k, v in params.items())
            reply = raw.post(f"/pool?op={op}&{query}", encode_npy(x), NPY_HEADERS)
            if reply.status != 200:
                raise RuntimeError(f"{op}: {reply.status} {bytes(reply.body[:200])!r}")


def minor_faults(pid: int) -> int:
    """Page faults served without I/O so far (/proc/PID/stat field 10): fresh pages."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7])


def round_robin(servers: dict[str, Server], body: bytes, repeats: int) -> dict[str, list[float]]:
    """/pool on every server in turn (order reversed every round, so drift lands on all):
    each server's median seconds and minor faults per request."""
    times: dict[str, list[float]] = {name: [] for name in servers}
    with ExitStack() as stack:
        clients = {n: stack.enter_context(RawHttp(s.url)) for n, s in servers.items()}
        for client in clients.values():
            client.post(POOL_PATH, body, NPY_HEADERS)
        faults = {name: minor_faults(s.pid) for name, s in servers.items()}
        for i in range(repeats):
            for name in list(clients)[:: 1 if i % 2 else -1]:
                started = time.perf_counter()
                clients[name].post(POOL_PATH, body, NPY_HEADERS)
                times[name].append(time.perf_counter() - started)
    return {
        name: [median(times[name]), (minor_faults(s.pid) - faults[name]) / repeats]
        for name, s in servers.items()
    }


def allocator_rows(repository: Path, body: bytes, repeats: int, mixed: int) -> list[list[str]]:
    """Every ALLOCATORS setting on its own live server: /pool round robin, then RSS."""
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(serve(repository, SERVER_MODELS, {"GLIBC_TUNABLES": value}))
            for name, value in ALLOCATORS.items()
        }
        rss = {name: [s.rss_mib()] for name, s in servers.items()}
        pool = round_robin(servers, body, repeats)
        steps: list[Callable[[Server], object]] = [
            lambda s: None,
            lambda s: asyncio.run(send_mixed(s.url, mixed)),
            lambda s: send_expensive(s.url),
        ]
        for step in steps:
            for name, server in servers.items():
                step(server)
                rss[name].append(server.rss_mib())
    return [
        [name, ms(pool[name][0]), f"{pool[name][1]:.0f}", *(f"{v:.0f}" for v in rss[name])]
        for name in servers
    ]


def emit_allocator(repository: Path, body: bytes, megabytes: int, repeats: int, mixed: int) -> None:
    header = ["GLIBC_TUNABLES", f"/pool {megabytes} MB, raw socket, median ms",
              "minor faults per request", "RSS MiB after start-up",
              f"after the /pool {megabytes} MB requests", f"after {mixed} mixed",
              "after softpool and median 7x7 (malloc_trim)"]  # fmt: skip
    rows = allocator_rows(repository, body, 2 * repeats, mixed)
    emit_table(f"glibc malloc settings (TUNABLES = {TUNABLES})", header, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="16 MB, 3 repeats (smoke only)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--allocator", action="store_true", help="add the glibc tunables rows")
    args = parser.parse_args(argv)
    megabytes, repeats, mixed = (16, 3, 20) if args.quick else (64, 20, 200)
    ensure_repository(args.repository, SERVER_MODELS)
    x = feature_map(megabytes)
    body = encode_npy(x)
    reply = len(encode_npy(closed_form(x)))
    timings, sizes = stage_app_stages(body, reply, repeats)
    settings = Settings(model_repository=args.repository, models=SERVER_MODELS,
                        providers=["CPUExecutionProvider"])  # fmt: skip
    timings |= in_process_stages(settings, body, sizes, repeats)
    timings |= service_stages(args.repository, body, x, repeats) | floors(body, x, repeats)
    emit_table(f"Where a {megabytes} MB /pool request goes (max 2x2, npy in and out)",
               ["stage", "measured as", "median ms", "share"],
               breakdown_rows(timings, sizes, megabytes))  # fmt: skip
    emit_table("Targets (issue 18)", ["target", "measured", "status"], target_rows(timings))
    if args.allocator:
        emit_allocator(args.repository, body, megabytes, repeats, mixed)


if __name__ == "__main__":
    main()
