"""Comparison 4: the server's resident memory after start-up and across 10,000 mixed
requests (a leak check). The mix cycles through /pool in JSON and npy with several ops,
/descriptor on the small and the default model, hostile requests that must get a 4xx, and
the health, models and metrics endpoints, 8 at a time. RSS is read from /proc every 1,000
requests; any 5xx, or a hostile request that is not refused, stops the run."""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np

from app.codecs.tensor import encode_npy
from bench.common import emit_table, served_parser
from bench.descriptor import synthetic_jpegs
from bench.load import drive_async
from bench.server import Server, ensure_repository, serve
from models.pooling import get_pool_spec, list_pools

SMALL, DEFAULT = "netvlad_poolformer_s12_224", "netvlad_poolformer_s12"


def npy_ops() -> list[str]:
    """The npy part of the mix: every op that takes x alone and holds no weights."""
    return [
        op
        for op in list_pools()
        if get_pool_spec(op).input_names == ("x",) and not get_pool_spec(op).learnable
    ]


def query_params(op: str) -> dict[str, str]:
    """The op's first registry example as /pool query parameters (JSON values)."""
    return {k: json.dumps(v) for k, v in get_pool_spec(op).examples[0].items()}


CHECKPOINT = 1000


@dataclass(frozen=True)
class Call:
    """One request of the mix and the status class it must get (2 or 4)."""

    kind: str
    method: str
    path: str
    expect: int
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _npy_call(op: str, x: np.ndarray) -> Call:
    headers = {"Content-Type": "application/x-npy", "Accept": "application/x-npy"}
    params = {"op": op, **query_params(op)}
    return Call(f"pool npy {op}", "POST", "/pool", 2, params, encode_npy(x), headers=headers)


def _hostile_calls(x: np.ndarray, jpeg: bytes) -> list[Call]:
    as_npy = {"Content-Type": "application/x-npy"}
    as_json = {"Content-Type": "application/json"}
    as_text = {"Content-Type": "text/plain"}
    max2 = {"op": "max", "kernel_size": "2"}
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    lying = encode_npy(x).replace(b"(2, 16, 32, 32)", b"(2, 16, 3200, 32)")
    cut = {"images": ("a.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")}
    whole = {"images": ("a.jpg", jpeg, "image/jpeg")}
    return [
        Call("bad json", "POST", "/pool", 4, content=b"{", headers=as_json),
        Call("unknown op", "POST", "/pool", 4, {"op": "nope"}, encode_npy(x), headers=as_npy),
        Call("lying npy header", "POST", "/pool", 4, max2, lying, headers=as_npy),
        Call("non-finite", "POST", "/pool", 4, max2, encode_npy(bad), headers=as_npy),
        Call("wrong media type", "POST", "/pool", 4, content=b"x", headers=as_text),
        Call("truncated jpeg", "POST", "/descriptor", 4, {"model": SMALL}, files=cut),
        Call("unknown model", "POST", "/descriptor", 4, {"model": "nope"}, files=whole),
    ]  # fmt: skip


def mix(with_default: bool) -> list[Call]:
    """One cycle of the mix (96 requests)."""
    rng = np.random.default_rng(0)
    x = rng.random((2, 16, 32, 32), dtype=np.float32)
    small = synthetic_jpegs(1, 224, 224)[0]
    tensor = {"shape": [1, 8, 16, 16], "dtype": "float32", "data": x.ravel()[:2048].tolist()}
    as_json = json.dumps({"op": "max", "params": {"kernel_size": 2}, "tensor": tensor}).encode()
    json_call = Call("pool json", "POST", "/pool", 2, content=as_json,
                     headers={"Content-Type": "application/json"})  # fmt: skip
    images = {SMALL: small}
    if with_default:
        images[DEFAULT] = synthetic_jpegs(1, 640, 480)[0]
    describe = {
        name: Call(
            f"descriptor {name}",
            "POST",
            "/descriptor",
            2,
            {"model": name},
            files={"images": ("a.jpg", blob, "image/jpeg")},
        )  # fmt: skip
        for name, blob in images.items()
    }
    info = [Call(p, "GET", p, 2) for p in ("/health/ready", "/models", "/metrics")]
    npy_calls = [_npy_call(op, x) for op in npy_ops()]
    hostile = _hostile_calls(x, small)
    cycle = [json_call] * 25 + npy_calls * 3 + [describe[SMALL]] * 12
    cycle += [describe[DEFAULT]] * 2 if with_default else [describe[SMALL]] * 2
    cycle += hostile * 3 + info * 4
    return cycle


async def _run(
    server: Server, calls: list[Call], total: int
) -> tuple[list[list[str]], Counter[str]]:
    samples = [["after start-up", "0", f"{server.rss_mib():.1f}"]]
    statuses: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:

        async def send_at(base: int, i: int) -> None:
            call = calls[(base + i) % len(calls)]
            reply = await client.request(
                call.method, call.path, params=call.params, content=call.content,
                files=call.files, headers=call.headers,
            )  # fmt: skip
            statuses[f"{call.kind} {reply.status_code}"] += 1
            if reply.status_code // 100 != call.expect:
                raise RuntimeError(f"{call.kind}: {reply.status_code} {reply.text[:200]}")

        for done in range(CHECKPOINT, total + 1, CHECKPOINT):
            await drive_async(functools.partial(send_at, done - CHECKPOINT), 8, CHECKPOINT)
            samples.append([f"after {done} requests", str(done), f"{server.rss_mib():.1f}"])
    return samples, statuses


def main(argv: list[str] | None = None) -> None:
    parser = served_parser(__doc__, "small model only, 2,000 requests")
    args = parser.parse_args(argv)
    models = [SMALL] if args.quick else [SMALL, DEFAULT]
    total = 2000 if args.quick else 10_000
    ensure_repository(args.repository, models)
    with serve(args.repository, models, providers=args.providers) as server:
        samples, statuses = asyncio.run(_run(server, mix(not args.quick), total))
    start, warm, end = (float(samples[i][2]) for i in (0, 1, -1))
    emit_table("server RSS over the mixed run", ["when", "requests", "RSS MiB"], samples)
    emit_table(
        "RSS growth",
        ["span", "growth"],
        [["start-up -> end", f"{(end / start - 1) * 100:+.1f}%"],
         [f"after {CHECKPOINT} (warm) -> end", f"{(end / warm - 1) * 100:+.1f}%"]],
    )  # fmt: skip
    emit_table("responses", ["request, status", "count"],
               [[k, str(v)] for k, v in sorted(statuses.items())])  # fmt: skip


if __name__ == "__main__":
    main()
