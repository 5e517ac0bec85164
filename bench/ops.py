"""Comparison 3: per-op latency, onnxruntime graph against torch eager, at a mid-size shape
(8x64x56x56), default parameters. Ops whose lowerings differ get a row per lowering; ops
that need more than ``x`` (a second input, learned weights, a static grid) are listed as
not measured, with the reason."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.common import emit_table, median, time_call
from export.graph import build_pool_graph
from export.runtime import create_session, run
from models.pooling import create_pool, list_pools, parse_params

CPU = ["CPUExecutionProvider"]
CANDIDATE_PARAMS: list[dict[str, object]] = [
    {},
    {"kernel_size": 3},
    {"output_size": 7},
    {"kernel_size": 3, "norm_type": 2.0},
]
"""Parameters tried in turn: the first an op accepts is its mid-size benchmark setting."""


def first_params(op: str) -> dict[str, object]:
    for kwargs in CANDIDATE_PARAMS:
        try:
            parse_params(op, **kwargs)
        except ValueError:
            continue
        return kwargs
    raise ValueError(f"{op}: none of {CANDIDATE_PARAMS} are accepted")


def op_rows(op: str, x: np.ndarray, repeats: int) -> list[list[str]]:
    try:
        kwargs = first_params(op)
        params = parse_params(op, **kwargs)
        module = create_pool(op, **kwargs).eval()
        with torch.no_grad():
            torch_s = median(time_call(lambda: module(torch.from_numpy(x)), repeats))
    except Exception as exc:  # needs more than x with defaults
        return [[op, "-", "not measured", "", f"{type(exc).__name__}: {str(exc)[:60]}"]]
    rows, kinds = [], set()
    for prefer in ("standard", "custom"):
        try:
            hw = (x.shape[2], x.shape[3])
            model = build_pool_graph(op, params, prefer=prefer, static_hw=hw)
        except Exception as exc:
            rows.append([op, prefer, "not measured", "", f"{str(exc)[:60]}"])
            continue
        kind = {p.key: p.value for p in model.metadata_props}["poolserve.lowering"]
        if kind in kinds:
            continue
        kinds.add(kind)
        session = create_session(model, CPU)
        ort_s = median(time_call(lambda s=session: run(s, x), repeats))  # type: ignore[misc]
        rows.append([op, kind, f"{ort_s * 1e3:.2f}", f"{torch_s * 1e3:.2f}",
                     f"{torch_s / ort_s:.2f}x"])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small shape, 2 repeats (smoke)")
    args = parser.parse_args(argv)
    shape, repeats = ((1, 8, 16, 16), 2) if args.quick else ((8, 64, 56, 56), 20)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    rows = [row for op in list_pools() for row in op_rows(op, x, repeats)]
    emit_table(
        f"per-op latency, {'x'.join(map(str, shape))} float32, CPU",
        ["op", "lowering", "onnxruntime ms", "torch ms", "torch/ort"],
        rows,
    )


if __name__ == "__main__":
    main()
