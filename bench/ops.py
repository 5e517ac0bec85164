"""Comparison 3: per-op latency, onnxruntime graph against torch eager, at a mid-size shape
(8x64x56x56). ``CASES`` says, per op, its parameters, the inputs it takes after ``x`` and,
where it is not the module, the torch call. Learnable ops (netvlad, nonlocal) get the
torch module's seeded weights. Ops whose lowerings differ get a row per lowering. Before
timing, each graph's output is checked against torch (``RTOL``, ``ATOL``, float32), so
both columns time the same work; a row that fails to build or match says why instead."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from bench.common import emit_table, median, time_call
from export.runtime.graph import build_pool_graph
from export.runtime.sessions import create_session, run
from models.pooling import create_pool, get_pool_spec, list_pools, parse_params
from models.pooling.fractional import FractionalMaxParams, fractional_max_pool
from models.pooling.params import PoolParams

CPU = ["CPUExecutionProvider"]
RTOL, ATOL = 1e-4, 1e-5
"""float32 tolerance between the onnxruntime and torch outputs."""

Shape = tuple[int, ...]
Rng = np.random.Generator


def _unpool_indices(x: np.ndarray, rng: Rng) -> tuple[np.ndarray, ...]:
    """int64 indices of x's shape: a 2x2 max pool's argmax over a map twice x's size."""
    n, c, h, w = x.shape
    larger = torch.from_numpy(rng.random((n, c, 2 * h, 2 * w), dtype=np.float32))
    return (F.max_pool2d(larger, 2, return_indices=True)[1].numpy(),)


def _fractional_torch(
    params: FractionalMaxParams, x: torch.Tensor, samples: torch.Tensor
) -> object:
    """The library's functional form: its module takes no samples, only a seed."""
    return fractional_max_pool(x, params, samples)


@dataclass(frozen=True)
class Case:
    """How to benchmark one op.

    Attributes:
        params: the op's parameters for an (N, C, H, W) input.
        extra_inputs: the inputs after ``x``, in the graph's order (drawn from the RNG).
        torch_fn: the torch side, ``(params, *tensors)``; None runs the op's module.
    """

    params: Callable[[Shape], dict[str, object]] = lambda shape: {}
    extra_inputs: Callable[[np.ndarray, Rng], tuple[np.ndarray, ...]] = lambda x, rng: ()
    torch_fn: Callable[..., object] | None = None


def _fixed(**params: object) -> Callable[[Shape], dict[str, object]]:
    return lambda shape: params


CASES: dict[str, Case] = {
    "adaptive_avg": Case(_fixed(output_size=7)),
    "adaptive_max": Case(_fixed(output_size=7)),
    "avg": Case(_fixed(kernel_size=3)),
    "avgmax_add": Case(),
    "avgmax_cat": Case(),
    "bilinear": Case(),
    "bilinear2": Case(extra_inputs=lambda x, rng: (rng.random(x.shape, dtype=np.float32),)),
    "fractional_max": Case(
        _fixed(kernel_size=2, output_ratio=0.7),
        lambda x, rng: (rng.random((*x.shape[:2], 2), dtype=np.float32),),  # torch's samples
        _fractional_torch,
    ),
    "gem": Case(),
    "global_avg": Case(),
    "global_max": Case(),
    "lp": Case(_fixed(kernel_size=3, norm_type=2.0)),
    "max": Case(_fixed(kernel_size=3)),
    "max_unpool": Case(_fixed(kernel_size=2), _unpool_indices),
    "median": Case(_fixed(kernel_size=3)),
    "min": Case(_fixed(kernel_size=3)),
    "mixed": Case(_fixed(kernel_size=3)),
    "netvlad": Case(lambda shape: {"dim": shape[1]}),
    "nonlocal": Case(lambda shape: {"in_size": shape[2:], "in_channels": shape[1]}),
    "poolformer_mixer": Case(),
    "rmac": Case(),
    "softpool": Case(_fixed(kernel_size=3)),
    "spp": Case(),
    "sppf": Case(),
    "stochastic": Case(_fixed(kernel_size=3)),
    "yolo_spp": Case(),
}


def _as_list(out: object) -> list[np.ndarray]:
    outs = out if isinstance(out, tuple | list) else (out,)
    return [t.numpy() for t in outs]


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


@dataclass(frozen=True)
class Prepared:
    """One op's case made concrete for an input ``x``."""

    params: PoolParams
    inputs: tuple[np.ndarray, ...]
    weights: dict[str, np.ndarray] | None
    torch_call: Callable[[], object]


def prepare(op: str, x: np.ndarray) -> Prepared:
    """The op's params, its inputs (``x`` first), its module's weights (learnable ops) and
    the torch call on the same tensors, from ``CASES``."""
    case = CASES[op]
    kwargs = case.params(x.shape)
    params = parse_params(op, **kwargs)
    inputs = (x, *case.extra_inputs(x, np.random.default_rng(1)))
    tensors = [torch.from_numpy(a) for a in inputs]
    module = create_pool(op, **kwargs).eval()
    weights = None
    if get_pool_spec(op).learnable:
        weights = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    if case.torch_fn is None:
        return Prepared(params, inputs, weights, lambda: module(*tensors))
    fn = case.torch_fn
    return Prepared(params, inputs, weights, lambda: fn(params, *tensors))


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


def op_rows(op: str, x: np.ndarray, repeats: int) -> list[list[str]]:
    if op not in CASES:
        return [[op, "-", "not measured", "", "no case in bench/ops.py CASES"]]
    try:
        prepared = prepare(op, x)
        with torch.inference_mode():
            want = _as_list(prepared.torch_call())
            torch_s = median(time_call(prepared.torch_call, repeats))
    except Exception as exc:  # a bad case: say so in the table
        return [[op, "-", "not measured", "", f"{type(exc).__name__}: {str(exc)[:60]}"]]
    inputs = prepared.inputs
    rows = []
    for kind, model in lowered_graphs(op, x, prepared).items():
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
