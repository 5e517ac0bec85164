"""Inputs for an op's registry examples, drawn from its ``TensorSpec``s (torch-free).

Docs, bench and tests run every op the same way: ``example_shape`` fits a preferred NCHW
shape to the dims the params fix, and ``example_inputs`` draws each input as the registry
describes it: floats from a normal distribution (a free dim such as bilinear2's ``C2`` gets
``C + 1``), ``unit`` values uniform in [0, 1), and ``output_plane`` indices distinct within
each output plane, as a max pool's argmaxes are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.pooling.registry import Shape, TensorSpec, get_pool_spec


def example_shape(op: str, params: Any, preferred: Shape) -> Shape:
    """``preferred`` (N, C, H, W) with the dims ``params`` fix (netvlad's C, nonlocal's H, W)."""
    spec = get_pool_spec(op)
    fixed = spec.fixed_dims(params) if spec.fixed_dims else {}
    n, c, h, w = preferred
    return (n, fixed.get("C", c), fixed.get("H", h), fixed.get("W", w))


def example_inputs(
    op: str, params: Any, x_shape: Shape, rng: np.random.Generator, dtype: str = "float32"
) -> dict[str, np.ndarray]:
    """Every input of ``op`` (``x`` first), drawn for an x of ``x_shape``."""
    spec = get_pool_spec(op)
    symbols = dict(zip(("N", "C", "H", "W"), x_shape, strict=True))
    symbols.setdefault("C2", symbols["C"] + 1)
    out_plane = None
    arrays = {}
    for tensor in spec.inputs:
        shape = tuple(symbols.get(d, 1) if isinstance(d, str) else d for d in tensor.dims)
        if tensor.bounds == "output_plane":
            out_plane = out_plane or _plane(params, x_shape)
            arrays[tensor.name] = _distinct_indices(shape, out_plane, rng)
        elif tensor.bounds == "unit":
            arrays[tensor.name] = rng.random(shape, dtype=np.float32).astype(dtype)
        else:
            arrays[tensor.name] = _drawn(tensor, shape, rng, dtype)
    return arrays


def _drawn(tensor: TensorSpec, shape: Shape, rng: np.random.Generator, dtype: str) -> np.ndarray:
    if tensor.dtype == "int64":
        return rng.integers(0, 8, shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(dtype)


def _plane(params: Any, x_shape: Shape) -> int:
    out = params.output_shape(x_shape, x_shape)
    return int(out[-1] * out[-2])


def _distinct_indices(shape: Shape, plane: int, rng: np.random.Generator) -> np.ndarray:
    """int64 of ``shape`` (N, C, H, W): per (n, c), H * W distinct positions in [0, plane)."""
    n, c, h, w = shape
    if h * w > plane:
        raise ValueError(f"{h * w} distinct indices do not fit an output plane of {plane}")
    keys = rng.random((n * c, plane))
    picks = np.argsort(keys, axis=1)[:, : h * w]
    return picks.reshape(shape).astype(np.int64)


def example_weights(
    shapes: Mapping[str, tuple[int, ...]], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random weights of the given shapes (cost and shape checks; values are not meaningful)."""
    return {key: rng.standard_normal(shape).astype(np.float32) for key, shape in shapes.items()}
