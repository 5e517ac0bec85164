"""Comparison 2, in-process part: max 2x2 on a float32 tensor with onnxruntime and torch,
against a memcpy of the same bytes (the memory bound). The HTTP npy/JSON rows need the
server driver (not written yet; see RESULTS.md)."""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import emit_table, median, time_call
from export.graph import build_pool_graph
from export.runtime import create_session, run
from models.pooling import parse_params


def measure(megabytes: int, repeats: int) -> list[list[str]]:
    channels = megabytes * 1024 * 1024 // (4 * 512 * 512)
    x = np.random.default_rng(0).random((1, channels, 512, 512), dtype=np.float32)
    session = create_session(
        build_pool_graph("max", parse_params("max", kernel_size=2)), ["CPUExecutionProvider"]
    )
    target = np.empty_like(x)
    xt = torch.from_numpy(x)
    cases = {
        "memcpy (bound)": lambda: np.copyto(target, x),
        "onnxruntime max 2x2": lambda: run(session, x),
        "torch max_pool2d": lambda: F.max_pool2d(xt, 2),
    }
    rows = []
    for name, fn in cases.items():
        seconds = median(time_call(fn, repeats))
        rows.append([name, f"{x.nbytes / 1e6:.0f}", f"{seconds * 1e3:.1f}",
                     f"{x.nbytes / seconds / 1e9:.2f}"])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 MB, 3 repeats (smoke only)")
    args = parser.parse_args(argv)
    megabytes, repeats = (4, 3) if args.quick else (64, 20)
    rows = measure(megabytes, repeats)
    emit_table(
        f"/pool max 2x2, in-process, {megabytes} MB float32",
        ["path", "MB in", "median ms", "GB/s of input"],
        rows,
    )


if __name__ == "__main__":
    main()
