"""A /pool request's tensors against the op's ``TensorSpec``s: names, dtypes, shapes, bounds.

Each rule reads the registry, so an op with a new extra input needs nothing here: its spec
says the input's dtype (``float`` is x's dtype), its dims (symbols shared with x), the
values it accepts (``bounds``), and whether the service may draw it (``seed_param``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.codecs.tensor import check_finite
from app.core.errors import ApiError, ErrorCode
from models.pooling import PoolError
from models.pooling.registry import PoolSpec, TensorSpec

Shape = tuple[int, ...]


def _invalid(message: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_INPUT, message)


def draw_missing(
    spec: PoolSpec, params: Any, tensors: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors, with every absent drawable input drawn uniformly in [0, 1) from its seed
    param (fresh when that is None); and, per input, whether the client sent it or how it
    was drawn."""
    filled, drawn = dict(tensors), {}
    x = tensors["x"]
    for tensor in spec.inputs:
        if tensor.seed_param is None:
            continue
        if tensor.name in tensors:
            drawn[tensor.name] = "client"
            continue
        seed = getattr(params, tensor.seed_param)
        shape = _resolved(tensor, x.shape)
        values = np.random.default_rng(seed).random(shape, dtype=np.float32)
        filled[tensor.name] = values.astype(x.dtype)
        drawn[tensor.name] = "numpy-fresh" if seed is None else f"numpy-seed={seed}"
    return filled, drawn


def check_inputs(
    spec: PoolSpec, params: Any, names: Sequence[str], tensors: Mapping[str, np.ndarray]
) -> list[Shape]:
    """Check every tensor the graph takes (``names``); returns their shapes in that order."""
    missing = [n for n in names if n not in tensors]
    extra = [n for n in tensors if n not in names]
    if missing or extra:
        raise ApiError(
            ErrorCode.WRONG_TENSORS,
            f"{spec.name} takes the tensors {list(names)}; missing {missing}, unexpected {extra}",
        )
    x = tensors["x"]
    for name in names:
        _check_tensor(spec.input_spec(name), tensors[name], x)
    shapes = [tuple(int(d) for d in tensors[n].shape) for n in names]
    out_shape = _output_shape(spec.name, params, shapes)
    for name in names:
        _check_bounds(spec.input_spec(name), tensors[name], out_shape)
    return shapes


def _resolved(tensor: TensorSpec, x_shape: Shape) -> Shape:
    """The input's shape for this x: x's symbols bound, free symbols left as -1."""
    symbols = dict(zip(("N", "C", "H", "W"), x_shape, strict=True))
    return tuple(d if isinstance(d, int) else symbols.get(d, -1) for d in tensor.dims)


def _check_tensor(tensor: TensorSpec, arr: np.ndarray, x: np.ndarray) -> None:
    wanted = "int64" if tensor.dtype == "int64" else x.dtype.name
    if arr.dtype.name != wanted:
        raise ApiError(ErrorCode.UNSUPPORTED_DTYPE, f"tensor {tensor.name} must be {wanted}")
    want = _resolved(tensor, x.shape)
    fits = arr.ndim == len(want) and all(w in (-1, d) for w, d in zip(want, arr.shape, strict=True))
    if not fits:
        dims = ", ".join(str(d) for d in tensor.dims)
        raise _invalid(f"{tensor.name} must have shape ({dims}) for x (N, C, H, W)")
    check_finite(arr)


def _output_shape(op: str, params: Any, shapes: list[Shape]) -> Shape:
    try:
        shape = tuple(int(d) for d in params.output_shape(*shapes))
    except PoolError as exc:
        raise _invalid(str(exc)) from None
    if any(d < 1 for d in shape):
        raise _invalid(f"{op}: these params give an empty output {shape}")
    return shape


def _check_bounds(tensor: TensorSpec, arr: np.ndarray, out_shape: Shape) -> None:
    if tensor.bounds == "unit" and (arr.min() < 0 or arr.max() >= 1):
        raise _invalid(f"{tensor.name} must lie in [0, 1)")
    if tensor.bounds == "output_plane":
        plane = out_shape[-1] * out_shape[-2]
        if arr.min() < 0 or arr.max() >= plane:
            raise _invalid(f"{tensor.name} must lie in [0, {plane}) (the output plane)")
