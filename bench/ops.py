"""Comparison 3: per-op latency, onnxruntime graph against torch eager, at a mid-size shape
(8x64x56x56), for each op's first registry example: its typical params, its extra inputs
drawn as the registry describes them (``models.pooling.examples``), and for learnable ops
(netvlad, nonlocal) the torch module's seeded weights; an op whose params fix C, H or W
runs at the size they fix. Ops whose lowerings differ get a row per lowering. Before
timing, each graph's output is checked against torch (``RTOL``, ``ATOL``, float32), so
both columns time the same work; a row that fails to build or match says why instead."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from bench.common import emit_table, median, time_call
from export.runtime.graph import build_pool_graph
from export.runtime.sessions import create_session, run
from models.pooling import get_pool_spec, list_pools, parse_params
from models.pooling.examples import example_inputs, example_shape
from models.pooling.examples_torch import example_module, module_weights, torch_outputs
from models.pooling.params import PoolParams

CPU = ["CPUExecutionProvider"]
RTOL, ATOL = 1e-4, 1e-5
"""float32 tolerance between the onnxruntime and torch outputs."""


@dataclass(frozen=True)
class Prepared:
    """One op's first registry example made concrete for an input ``x``."""

    params: PoolParams
    inputs: tuple[np.ndarray, ...]
    weights: dict[str, np.ndarray] | None
    torch_call: Callable[[], list[np.ndarray]]


def prepare(op: str, x: np.ndarray) -> Prepared:
    """The op's typical params (its first registry example), every input drawn for ``x``
    (its shape fitted to the dims the params fix), and the torch call on the same arrays."""
    example = get_pool_spec(op).examples[0]
    params = parse_params(op, **example)
    shape = example_shape(op, params, x.shape)
    x = x if shape == x.shape else np.random.default_rng(0).random(shape, dtype=np.float32)
    arrays = {**example_inputs(op, params, shape, np.random.default_rng(1)), "x": x}
    module = example_module(op, example)
    weights = module_weights(module) if get_pool_spec(op).learnable else None
    inputs = tuple(arrays[name] for name in get_pool_spec(op).input_names)
    return Prepared(params, inputs, weights, lambda: torch_outputs(op, module, params, arrays))


def lowered_graphs(op: str, x: np.ndarray, prepared: Prepared) -> dict[str, onnx.ModelProto | str]:
    """Each distinct lowering kind of ``op`` for ``x``'s size (standard first, then custom),
    or why a preference built none."""
    graphs: dict[str, onnx.ModelProto | str] = {}
    for prefer in ("standard", "custom"):
        try:
            hw = (x.shape[2], x.shape[3])
            model = build_pool_graph(
                op, prepared.params, prefer=prefer, static_hw=hw, weights=prepared.weights
            )
        except Exception as exc:
            graphs[prefer] = str(exc)[:60]
            continue
        kind = {p.key: p.value for p in model.metadata_props}["poolserve.lowering"]
        graphs.setdefault(kind, model)
    return graphs


def _mismatch(got: list[np.ndarray], want: list[np.ndarray]) -> str | None:
    """Why onnxruntime's outputs are not torch's, or None when they match."""
    if len(got) != len(want):
        return f"{len(got)} outputs, torch gives {len(want)}"
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            return f"shape {g.shape}, torch {w.shape}"
        if not np.allclose(g, w, rtol=RTOL, atol=ATOL):
            return f"max abs diff {np.max(np.abs(g.astype(np.float64) - w)):.2e}"
    return None


def op_rows(op: str, x: np.ndarray, repeats: int) -> list[list[str]]:
    try:
        prepared = prepare(op, x)
        want = prepared.torch_call()
        torch_s = median(time_call(prepared.torch_call, repeats))
    except Exception as exc:  # a bad example: say so in the table
        return [[op, "-", "not measured", "", f"{type(exc).__name__}: {str(exc)[:60]}"]]
    inputs = prepared.inputs
    rows = []
    for kind, model in lowered_graphs(op, inputs[0], prepared).items():
        if isinstance(model, str):
            rows.append([op, kind, "not measured", "", model])
            continue
        session = create_session(model, CPU)
        problem = _mismatch(run(session, *inputs), want)
        if problem is not None:
            rows.append([op, kind, "not measured", "", f"differs from torch: {problem}"])
            continue
        ort_s = median(time_call(lambda s=session: run(s, *inputs), repeats))  # type: ignore[misc]
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
