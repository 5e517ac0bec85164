"""JSON cost (issue 15): what a JSON reply costs against npy.

1. Encoding 8 x 32768 float32 descriptors in-process: the standard library (``tolist`` then
   ``json.dumps``, what FastAPI's default JSON response amounts to) against orjson writing
   the array directly (``OPT_SERIALIZE_NUMPY``, what the service does), and the npy codec:
   median time and bytes.
2. An 8-image /descriptor call end to end on the real server (``python -m app``), one
   request at a time: JSON reply against npy reply (and the images sent as base64 JSON
   instead of multipart), timed from sending to the reply received and to the parsed array
   on the client (``reply.json()``, the standard library's parser, as most clients do).
"""

from __future__ import annotations

import base64
import io
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import numpy as np
import orjson

from app.codecs.tensor import encode_npy
from bench.common import emit_table, served_parser, time_call
from bench.descriptor import synthetic_jpegs
from bench.server import ensure_repository, serve

IMAGES = 8
DIM = 32768
NPY = "application/x-npy"


def _stdlib(arr: np.ndarray) -> bytes:
    return json.dumps({"descriptors": arr.tolist()}).encode()


def _orjson(arr: np.ndarray) -> bytes:
    return orjson.dumps({"descriptors": arr}, option=orjson.OPT_SERIALIZE_NUMPY)


def encoding_rows(repeats: int) -> list[list[str]]:
    """Median milliseconds and bytes of each encoder on the same unit-norm rows."""
    rng = np.random.default_rng(0)
    arr = rng.standard_normal((IMAGES, DIM)).astype(np.float32)
    arr /= np.linalg.norm(arr, axis=1, keepdims=True)
    encoders: dict[str, Callable[[np.ndarray], bytes]] = {
        "json.dumps(tolist())": _stdlib,
        "orjson, OPT_SERIALIZE_NUMPY": _orjson,
        "npy (encode_npy)": encode_npy,
    }
    rows = []
    for label, encode in encoders.items():
        ms = statistics.median(time_call(partial(encode, arr), repeats)) * 1000
        rows.append([label, f"{ms:.2f}", f"{len(encode(arr)) / 1e6:.2f}"])
    return rows


@dataclass(frozen=True)
class Timed:
    received_s: float
    """From sending to the whole reply received."""
    parsed_s: float
    """From sending to the (8, D) float32 array on the client."""
    reply_bytes: int


def _call(client: httpx.Client, model: str, blobs: list[bytes], form: str) -> Timed:
    """One request in ``form``, parsed the way a client would (``reply.json()``, np.load)."""
    start = time.perf_counter()
    kwargs: dict[str, Any]
    if form.startswith("json body"):
        kwargs = {"json": {"images": [base64.b64encode(b).decode() for b in blobs]}}
    else:
        kwargs = {"files": [("images", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]}
    npy = form.endswith("npy reply")
    headers = {"accept": NPY if npy else "application/json"}
    reply = client.post("/descriptor", params={"model": model}, headers=headers, **kwargs)
    reply.raise_for_status()
    received = time.perf_counter() - start
    if npy:
        arr = np.load(io.BytesIO(reply.content), allow_pickle=False)
    else:
        arr = np.asarray(reply.json()["descriptors"], dtype=np.float32)
    parsed = time.perf_counter() - start
    if arr.shape[0] != len(blobs):
        raise RuntimeError(f"{form}: {arr.shape[0]} rows for {len(blobs)} images")
    return Timed(received, parsed, len(reply.content))


FORMS = ("multipart, JSON reply", "multipart, npy reply", "json body (base64), npy reply")


def end_to_end_rows(url: str, model: str, blobs: list[bytes], calls: int) -> list[list[str]]:
    """Each form ``calls`` times after one warm-up, interleaved so drift hits all alike."""
    runs: dict[str, list[Timed]] = {form: [] for form in FORMS}
    with httpx.Client(base_url=url, timeout=600) as client:
        for form in FORMS:
            _call(client, model, blobs, form)
        for _ in range(calls):
            for form in FORMS:
                runs[form].append(_call(client, model, blobs, form))
    return [_row(form, timed) for form, timed in runs.items()]


def _row(form: str, timed: list[Timed]) -> list[str]:
    parsed = [t.parsed_s for t in timed]
    received = statistics.median(t.received_s for t in timed)
    parse_ms = statistics.median((t.parsed_s - t.received_s) * 1000 for t in timed)
    return [form, str(len(timed)), f"{statistics.median(parsed):.3f}", f"{min(parsed):.3f}",
            f"{max(parsed):.3f}", f"{received:.3f}", f"{parse_ms:.1f}",
            f"{timed[-1].reply_bytes / 1e6:.2f}"]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = served_parser(__doc__, "small model, few calls")
    parser.add_argument("--models", help="comma list (default: the 640x480 model)")
    args = parser.parse_args(argv)
    if args.quick:
        default, size, repeats, calls = "netvlad_poolformer_s12_224", (224, 224), 3, 2
    else:
        default, size, repeats, calls = "netvlad_poolformer_s12", (640, 480), 20, 10
    emit_table(
        f"Encoding {IMAGES} x {DIM} float32 descriptors (median of {repeats})",
        ["encoder", "ms", "MB"],
        encoding_rows(repeats),
    )
    blobs = synthetic_jpegs(IMAGES, *size)
    for model in (args.models or default).split(","):
        ensure_repository(args.repository, [model])
        with serve(args.repository, [model], providers=args.providers) as srv:
            rows = end_to_end_rows(srv.url, model, blobs, calls)
        emit_table(
            f"/descriptor {model}, {IMAGES} x {size[0]}x{size[1]} JPEG per request, one at a "
            "time (s: from sending to the parsed array on the client)",
            ["form", "calls", "median s", "min s", "max s", "received s", "parse ms",
             "reply MB"],
            rows,
        )  # fmt: skip


if __name__ == "__main__":
    main()
