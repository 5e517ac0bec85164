"""Comparison 6: /pool max 2x2 on a 64 MB float32 tensor over every transport poolserve
speaks, beside memcpy and the HTTP floor; then /descriptor against the same image model over
the Open Inference Protocol.

Rows: memcpy of the input (the bound) and onnxruntime in-process; the bare uvicorn echo app
(the HTTP floor); /pool's npy route; OIP with binary tensors over HTTP; OIP through system
shared memory (the input already in the region, and with the client's copy into it); OIP over
gRPC. HTTP rows use a raw-socket client (``bench.raw_http``) beside the usual client
(httpx, or tritonclient for OIP), because httpx's sync client is slower than the server.
Every path's result is checked against a NumPy closed form before it is timed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from app.codecs.tensor import encode_npy
from bench.common import emit_table, median, time_call
from bench.descriptor import synthetic_jpegs
from bench.pool_bandwidth import feature_map, in_process_rows, row
from bench.raw_http import RawHttp
from bench.server import Server, ensure_repository, free_port, serve, serve_echo

MODEL = "netvlad_poolformer_s12_224"
HEADER = "inference-header-content-length"


def pooled_shape(x: np.ndarray) -> tuple[int, ...]:
    n, c, h, w = x.shape
    return (n, c, h // 2, w // 2)


def closed_form(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return np.asarray(x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5)))


def timed(name: str, x: np.ndarray, fn: Callable[[], np.ndarray], repeats: int) -> list[str]:
    """Check ``fn``'s result once, then its median round trip as a row."""
    if not np.array_equal(fn(), closed_form(x)):
        raise RuntimeError(f"{name}: the result differs from the closed form")
    return row(name, x.nbytes, median(time_call(fn, repeats)))


def oip_body(x: np.ndarray) -> tuple[bytes, str]:
    header = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes}}],
        "parameters": {"kernel_size": 2, "binary_data_output": True},
    }  # fmt: skip
    raw = json.dumps(header).encode()
    return raw + x.tobytes(), str(len(raw))


def floor_rows(x: np.ndarray, repeats: int) -> list[list[str]]:
    body = encode_npy(x)
    with serve_echo() as echo, RawHttp(echo.url) as raw, httpx.Client(base_url=echo.url) as hx:
        by_raw = median(time_call(lambda: raw.post("/", body).body, repeats))
        by_httpx = median(time_call(lambda: hx.post("/", content=body).content, repeats))
    return [
        row("HTTP floor: echo app, raw socket", x.nbytes, by_raw),
        row("HTTP floor: echo app, httpx", x.nbytes, by_httpx),
    ]


def npy_rows(server: Server, x: np.ndarray, repeats: int) -> list[list[str]]:
    body = encode_npy(x)
    headers = {"Content-Type": "application/x-npy", "Accept": "application/x-npy"}
    path = "/pool?op=max&kernel_size=2"

    def parse(content: bytes | bytearray) -> np.ndarray:
        return np.frombuffer(content, np.float32, offset=128).reshape(pooled_shape(x))

    with RawHttp(server.url) as raw, httpx.Client(base_url=server.url, timeout=600) as hx:
        return [
            timed("/pool npy, raw socket", x, lambda: parse(raw.post(path, body, headers).body),
                  repeats),
            timed("/pool npy, httpx", x,
                  lambda: parse(hx.post(path, content=body, headers=headers).content), repeats),
        ]  # fmt: skip


def oip_binary_rows(server: Server, x: np.ndarray, repeats: int) -> list[list[str]]:
    import tritonclient.http as triton

    body, length = oip_body(x)
    path = "/v2/models/pool.max/infer"

    def by_raw() -> np.ndarray:
        reply = raw.post(path, body, {"Inference-Header-Content-Length": length})
        start = int(reply.headers[HEADER])
        return np.frombuffer(reply.body, np.float32, offset=start).reshape(pooled_shape(x))

    client = triton.InferenceServerClient(server.url.removeprefix("http://"),
                                          network_timeout=600, connection_timeout=600)  # fmt: skip
    tensor = triton.InferInput("x", list(x.shape), "FP32").set_data_from_numpy(x)

    def by_triton() -> np.ndarray:
        out = client.infer("pool.max", [tensor], parameters={"kernel_size": 2}).as_numpy("y")
        return np.asarray(out)

    with RawHttp(server.url) as raw:
        rows = [timed("OIP binary, raw socket", x, by_raw, repeats)]
        rows.append(timed("OIP binary, tritonclient http", x, by_triton, repeats))
    client.close()
    return rows


@contextmanager
def shm_regions(client: object, x: np.ndarray) -> Iterator[tuple[object, object]]:
    import tritonclient.utils.shared_memory as shm

    region_in = shm.create_shared_memory_region("bench_in", "/poolserve_bench_in", x.nbytes)
    region_out = shm.create_shared_memory_region("bench_out", "/poolserve_bench_out",
                                                 x.nbytes // 4)  # fmt: skip
    try:
        client.register_system_shared_memory("bench_in", "/poolserve_bench_in", x.nbytes)  # type: ignore[attr-defined]
        client.register_system_shared_memory("bench_out", "/poolserve_bench_out", x.nbytes // 4)  # type: ignore[attr-defined]
        yield region_in, region_out
    finally:
        client.unregister_system_shared_memory()  # type: ignore[attr-defined]
        shm.destroy_shared_memory_region(region_in)
        shm.destroy_shared_memory_region(region_out)


def shm_request(x: np.ndarray) -> bytes:
    region = {"shared_memory_region": "bench_in", "shared_memory_byte_size": x.nbytes}
    output = {"shared_memory_region": "bench_out", "shared_memory_byte_size": x.nbytes // 4}
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "parameters": region}],
        "outputs": [{"name": "y", "parameters": output}],
        "parameters": {"kernel_size": 2},
    }
    return json.dumps(body).encode()


def shm_rows(server: Server, x: np.ndarray, repeats: int) -> list[list[str]]:
    import tritonclient.http as triton
    import tritonclient.utils.shared_memory as shm

    client = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=600)
    out_shape = list(pooled_shape(x))
    tensor = triton.InferInput("x", list(x.shape), "FP32").set_shared_memory("bench_in", x.nbytes)
    wanted = triton.InferRequestedOutput("y")
    wanted.set_shared_memory("bench_out", x.nbytes // 4)
    body = shm_request(x)
    with shm_regions(client, x) as (region_in, region_out), RawHttp(server.url) as raw:
        shm.set_shared_memory_region(region_in, [x])

        def result() -> np.ndarray:
            return np.asarray(shm.get_contents_as_numpy(region_out, np.float32, out_shape))

        def by_raw() -> np.ndarray:
            raw.post("/v2/models/pool.max/infer", body, {"Content-Type": "application/json"})
            return result()

        def by_triton() -> np.ndarray:
            client.infer("pool.max", [tensor], outputs=[wanted], parameters={"kernel_size": 2})
            return result()

        def with_copy() -> np.ndarray:
            shm.set_shared_memory_region(region_in, [x])
            return by_raw()

        rows = [
            timed("OIP shared memory, raw socket", x, by_raw, repeats),
            timed("OIP shared memory, tritonclient http", x, by_triton, repeats),
            timed("OIP shared memory, raw socket, client copies it in", x, with_copy, repeats),
        ]
    client.close()
    return rows


def grpc_rows(port: int, x: np.ndarray, repeats: int) -> list[list[str]]:
    import tritonclient.grpc as triton_grpc

    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = triton_grpc.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)

    def call() -> np.ndarray:
        result = client.infer("pool.max", [tensor], parameters={"kernel_size": 2})
        return np.asarray(result.as_numpy("y"))

    rows = [timed("OIP gRPC, tritonclient grpc", x, call, repeats)]
    client.close()
    return rows


def interleaved(
    a: Callable[[], object], b: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b`` called in turn, so drift in the machine's speed
    lands on both."""
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a += time_call(a, 1)
        times_b += time_call(b, 1)
    return median(times_a), median(times_b)


def binary_vs_npy_rows(server: Server, x: np.ndarray, repeats: int) -> list[list[str]]:
    """The npy route and OIP binary, raw socket, interleaved (the target's comparison)."""
    npy = encode_npy(x)
    body, length = oip_body(x)
    npy_headers = {"Content-Type": "application/x-npy", "Accept": "application/x-npy"}
    with RawHttp(server.url) as raw:
        npy_s, oip_s = interleaved(
            lambda: raw.post("/pool?op=max&kernel_size=2", npy, npy_headers),
            lambda: raw.post(
                "/v2/models/pool.max/infer", body, {"Inference-Header-Content-Length": length}
            ),
            repeats,
        )
    return [
        ["/pool npy, raw socket", f"{npy_s * 1e3:.1f}", "1.00"],
        ["OIP binary, raw socket", f"{oip_s * 1e3:.1f}", f"{npy_s / oip_s:.2f}"],
    ]


def descriptor_rows(server: Server, repeats: int) -> list[list[str]]:
    """One 640x480 JPEG per request, sequential: /descriptor (npy reply) against the OIP
    image model (binary reply), both sent with httpx from prepared bodies."""
    (jpeg,) = synthetic_jpegs(1, 640, 480)
    header = json.dumps({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1],
                         "parameters": {"binary_data_size": len(jpeg) + 4}}],
                         "parameters": {"binary_data_output": True}}).encode()  # fmt: skip
    oip = header + len(jpeg).to_bytes(4, "little") + jpeg
    with httpx.Client(base_url=server.url, timeout=600) as hx:

        def native() -> np.ndarray:
            headers = {"Content-Type": "image/jpeg", "Accept": "application/x-npy"}
            reply = hx.post(f"/descriptor?model={MODEL}", content=jpeg, headers=headers)
            return np.frombuffer(reply.content, np.float32, offset=128)

        def over_oip() -> np.ndarray:
            headers = {"Inference-Header-Content-Length": str(len(header))}
            reply = hx.post(f"/v2/models/{MODEL}/infer", content=oip, headers=headers)
            start = int(reply.headers[HEADER])
            return np.frombuffer(reply.content, np.float32, offset=start)

        if not np.allclose(native(), over_oip(), rtol=1e-5, atol=1e-6):
            raise RuntimeError("the OIP image model differs from /descriptor")
        a, b = interleaved(native, over_oip, repeats)
    return [
        ["/descriptor, one JPEG", f"{a * 1e3:.1f}", "1.00"],
        ["OIP image model, one JPEG", f"{b * 1e3:.1f}", f"{b / a:.3f}"],
    ]


def targets(
    rows: list[list[str]], paired: list[list[str]], described: list[list[str]]
) -> list[list[str]]:
    gbps = {r[0]: float(r[3]) for r in rows}
    shm_clients = ("OIP shared memory, raw socket", "OIP shared memory, tritonclient http")
    shm = max(gbps[name] for name in shm_clients) / gbps["memcpy (bound)"]
    binary = float(paired[1][2])
    descriptor = float(described[1][2])
    return [
        ["shared memory >= 50% of memcpy", f"{shm:.0%}", "met" if shm >= 0.5 else "missed"],
        ["OIP binary >= the npy route (raw socket, interleaved)", f"{binary:.2f}x",
         "met" if binary >= 1.0 else "missed"],
        ["OIP image model within 5% of /descriptor", f"{descriptor:.3f}x",
         "met" if descriptor <= 1.05 else "missed"],
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="16 MB, 3 repeats (smoke only)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    args = parser.parse_args(argv)
    megabytes, repeats = (16, 3) if args.quick else (64, 20)
    x = feature_map(megabytes)
    ensure_repository(args.repository, [MODEL])
    rows = in_process_rows(x, repeats)[:2] + floor_rows(x, repeats)
    port = free_port()
    with serve(args.repository, [MODEL], shared_memory=True, grpc_port=port,
               batching=False) as server:  # fmt: skip
        rows += npy_rows(server, x, repeats) + oip_binary_rows(server, x, repeats)
        rows += shm_rows(server, x, repeats) + grpc_rows(port, x, repeats)
        paired = binary_vs_npy_rows(server, x, 2 * repeats)
        described = descriptor_rows(server, 3 if args.quick else 30)
    header = ["path", "MB in", "median ms", "GB/s of input"]
    emit_table(f"/pool max 2x2 on {megabytes} MB float32, by transport", header, rows)
    pair_header = ["path", "median ms", "npy time / this time"]
    emit_table("npy route and OIP binary, interleaved", pair_header, paired)
    emit_table(f"{MODEL}, one 640x480 JPEG per request, interleaved",
               ["path", "median ms", "ratio"], described)  # fmt: skip
    table = targets(rows, paired, described)
    emit_table("Targets (issue 14)", ["target", "measured", "status"], table)


if __name__ == "__main__":
    main()
