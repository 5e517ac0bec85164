"""Issue 18: cached /pool graphs served while another client streams cache misses.

Four client threads loop over a few small /pool requests whose graphs are already cached
(max, avg, gem on a 1x16x32x32 npy tensor), first alone, then while a fifth client sends
only cache misses: median, adaptive_max, spp and rmac with params no earlier request used
(their graphs take 10-35 ms each to build). A sixth connection asks for /health/live every
20 ms in both phases. Every client has its own keep-alive raw-socket connection; every loop
is bounded in time and in count. Target: hits with misses at least 0.7x hits alone.

``--set KEY=VALUE`` passes a setting to the server (``--set intra_op_threads=0``).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import urlencode

import numpy as np

from app.codecs.tensor import encode_npy
from bench.common import emit_table, served_parser
from bench.raw_http import RawHttp
from bench.server import ensure_repository, serve
from models.pooling import PoolError, parse_params
from models.pooling.schemas.pyramid import SPPParams

MODEL = "netvlad_head"
"""The smallest repository entry: the server needs one to start."""
NPY = {"content-type": "application/x-npy", "accept": "application/x-npy"}
HIT_CLIENTS = 4
SHAPE = (1, 16, 32, 32)
HITS = ({"op": "max", "kernel_size": 2}, {"op": "avg", "kernel_size": 3}, {"op": "gem"})
HEALTH_EVERY_S = 0.02
MAX_HITS = 200_000
MAX_MISSES = 2_000


def miss_params() -> Iterator[dict[str, Any]]:
    """Params of the slow-to-build ops, every one distinct, valid and cheap to run on the
    bench tensor; the four ops take turns."""
    median = ({"op": "median", "kernel_size": [kh, kw], "stride": s, "padding": p,
               "dilation": d, "ceil_mode": c}
              for kh, kw, s, d, c in itertools.product(
                  (2, 3, 4, 5), (2, 3, 4, 5), (1, 2, 3), (1, 2), (False, True))
              for p in range(min(kh, kw) // 2 + 1))  # fmt: skip
    adaptive = ({"op": "adaptive_max", "output_size": [h, w]}
                for h, w in itertools.product(range(1, 17), repeat=2))  # fmt: skip
    spp = ({"op": "spp", "levels": list(levels), "mode": mode}
           for n in (1, 2, 3, 4) for levels in itertools.combinations(range(1, 9), n)
           for mode in get_args(SPPParams.model_fields["mode"].annotation))  # fmt: skip
    rmac = ({"op": "rmac", "levels": 1 + i % 3, "eps": 1e-6 * (1 + i)}
            for i in itertools.count())  # fmt: skip
    ops: list[Iterator[dict[str, Any]]] = [median, adaptive, spp, rmac]
    while ops:  # round robin until every op runs out (rmac never does)
        for source in list(ops):
            query = next(source, None)
            if query is None:
                ops.remove(source)
            elif _valid(query):
                yield query


def _valid(query: dict[str, Any]) -> bool:
    params = {k: v for k, v in query.items() if k != "op"}
    try:
        parse_params(query["op"], **params)
    except (PoolError, TypeError, ValueError):
        return False
    return True


def pool_path(query: dict[str, Any]) -> str:
    """The npy form's URL: every param as JSON (the route parses them so), strings bare."""
    return "/pool?" + urlencode({k: v if isinstance(v, str) else json.dumps(v)
                                 for k, v in query.items()})  # fmt: skip


@dataclass
class Tally:
    """What one phase's clients did."""

    hits: int = 0
    misses: int = 0
    failures: int = 0
    health_ms: tuple[float, ...] = ()

    def health_p(self, q: float) -> float:
        return float(np.percentile(self.health_ms, q)) if self.health_ms else float("nan")


def _loop(url: str, stop: threading.Event, limit: int, send: Callable[[RawHttp, int], int]) -> int:
    """Send until ``stop`` or ``limit``; returns the number of 200s, raises on another."""
    done = 0
    with RawHttp(url) as client:
        while not stop.is_set() and done < limit:
            status = send(client, done)
            if status != 200:
                raise RuntimeError(f"a bench request got {status}")
            done += 1
    return done


def _health(url: str, stop: threading.Event, out: list[float]) -> None:
    with RawHttp(url) as client:
        while not stop.is_set():
            start = time.perf_counter()
            if client.get("/health/live").status != 200:
                raise RuntimeError("/health/live was not 200")
            out.append((time.perf_counter() - start) * 1e3)
            time.sleep(HEALTH_EVERY_S)


def run_phase(
    url: str, body: bytes, seconds: float, misses: Iterator[dict[str, Any]] | None
) -> Tally:
    """One phase: hit clients, the health prober and (when given) the miss client."""
    stop, counts = threading.Event(), [0] * (HIT_CLIENTS + 1)
    health: list[float] = []
    errors: list[BaseException] = []

    def hit(client: RawHttp, i: int) -> int:
        return client.post(pool_path(HITS[i % len(HITS)]), body, NPY).status

    def miss(client: RawHttp, _: int) -> int:
        return client.post(pool_path(next(misses)), body, NPY).status  # type: ignore[arg-type]

    def worker(slot: int, send: Callable[[RawHttp, int], int], limit: int) -> None:
        try:
            counts[slot] = _loop(url, stop, limit, send)
        except BaseException as exc:  # reported after the phase
            errors.append(exc)
            stop.set()

    jobs = [threading.Thread(target=worker, args=(i, hit, MAX_HITS)) for i in range(HIT_CLIENTS)]
    if misses is not None:
        jobs.append(threading.Thread(target=worker, args=(HIT_CLIENTS, miss, MAX_MISSES)))
    jobs.append(threading.Thread(target=_health, args=(url, stop, health)))
    for job in jobs:
        job.start()
    stop.wait(seconds)
    stop.set()
    for job in jobs:
        job.join()
    if errors:
        raise errors[0]
    return Tally(sum(counts[:HIT_CLIENTS]), counts[HIT_CLIENTS], 0, tuple(health))


def measure(url: str, seconds: float, shape: tuple[int, ...] = SHAPE) -> tuple[Tally, Tally]:
    body = encode_npy(np.random.default_rng(0).random(shape, dtype=np.float32))
    with RawHttp(url) as client:  # every hit graph built before timing
        for query in HITS:
            if client.post(pool_path(query), body, NPY).status != 200:
                raise RuntimeError(f"{query} is not served")
    alone = run_phase(url, body, seconds, None)
    loaded = run_phase(url, body, seconds, miss_params())
    return alone, loaded


def row(label: str, seconds: float, alone: Tally, loaded: Tally) -> list[str]:
    ratio = loaded.hits / alone.hits
    return [
        label,
        f"{alone.hits / seconds:.0f}",
        f"{loaded.hits / seconds:.0f}",
        f"{ratio:.2f}",
        f"{loaded.misses} ({loaded.misses / seconds:.1f}/s)",
        f"{alone.health_p(50):.1f} / {alone.health_p(99):.1f}",
        f"{loaded.health_p(50):.1f} / {loaded.health_p(99):.1f}",
    ]


def _settings(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


def main(argv: list[str] | None = None) -> None:
    parser = served_parser(__doc__, "3 s phases instead of 10 s; not results")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", default=None, help="the row's name (default: the settings)")
    parser.add_argument("--shape", default=",".join(map(str, SHAPE)), help="the input's NCHW")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else 10.0
    settings = _settings(args.set)
    ensure_repository(args.repository, [MODEL])
    with serve(args.repository, [MODEL], providers=args.providers, **settings) as server:
        alone, loaded = measure(server.url, seconds, tuple(map(int, args.shape.split(","))))
    label = args.label or (", ".join(args.set) or "defaults")
    emit_table(
        f"cache hits while one client streams cache misses ({HIT_CLIENTS} hit clients, "
        f"{seconds:.0f} s per phase)",
        ["server", "hits/s alone", "hits/s with misses", "ratio", "misses done",
         "/health/live p50 / p99 ms alone", "with misses"],
        [row(label, seconds, alone, loaded)],
    )  # fmt: skip


if __name__ == "__main__":
    main()
