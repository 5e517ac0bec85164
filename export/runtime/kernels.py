"""NumPy kernels for the ``ai.onnx.contrib`` custom ops, served by onnxruntime-extensions.

Importing this module declares them (``onnx_op``); ``export.runtime.sessions`` does so before it
loads the extensions library into a session. Each kernel takes the op's parameters as one
JSON string attribute, ``params``: the op's schema dumped with ``model_dump_json``.

The kernels are plain NumPy so the serving image needs no torch. PyOps run on CPU under the
GIL and copy their output through a Python list, so they are the fallback, not the fast path.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from onnxruntime_extensions import PyCustomOpDef, onnx_op

from models.pooling.params import window_length
from models.pooling.schemas.median import PAD_MODES


def window_view(xp: np.ndarray, params: dict[str, Any], out_hw: tuple[int, int]) -> np.ndarray:
    """(N, C, oh, ow, K) view of every window of an already padded (and extended) input."""
    (kh, kw), (sh, sw), (dh, dw) = params["kernel_size"], params["stride"], params["dilation"]
    extent = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    view = np.lib.stride_tricks.sliding_window_view(xp, extent, axis=(2, 3))
    view = view[:, :, ::sh, ::sw, ::dh, ::dw][:, :, : out_hw[0], : out_hw[1]]
    return view.reshape(*view.shape[:4], kh * kw)


def window_out_hw(h: int, w: int, params: dict[str, Any]) -> tuple[int, int]:
    left, right, top, bottom = params["padding"]
    (kh, kw), (sh, sw), (dh, dw) = params["kernel_size"], params["stride"], params["dilation"]
    ceil = params["ceil_mode"]
    return (
        window_length(h, kh, sh, (top, bottom), dh, ceil),
        window_length(w, kw, sw, (left, right), dw, ceil),
    )


def _extend(xp: np.ndarray, params: dict[str, Any], out_hw: tuple[int, int], fill: float) -> Any:
    """Pad the bottom/right so every ceil_mode window fits (the overhang holds ``fill``)."""
    (kh, kw), (sh, sw), (dh, dw) = params["kernel_size"], params["stride"], params["dilation"]
    need_h = (out_hw[0] - 1) * sh + dh * (kh - 1) + 1
    need_w = (out_hw[1] - 1) * sw + dw * (kw - 1) + 1
    extra = ((0, 0), (0, 0), (0, max(0, need_h - xp.shape[2])), (0, max(0, need_w - xp.shape[3])))
    return np.pad(xp, extra, constant_values=fill)


def median_pool(x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Lower median of every window, the library's ``median`` semantics."""
    left, right, top, bottom = params["padding"]
    out_hw = window_out_hw(x.shape[2], x.shape[3], params)
    pads = ((0, 0), (0, 0), (top, bottom), (left, right))
    xp = np.pad(x, pads, mode=PAD_MODES[params["padding_mode"]])
    windows = window_view(_extend(xp, params, out_hw, np.inf), params, out_hw)
    covered = window_view(
        _extend(np.ones((1, 1, *xp.shape[2:]), x.dtype), params, out_hw, 0.0), params, out_hw
    ).sum(-1)
    rank = ((covered.astype(np.int64) - 1) // 2)[..., None]
    median = np.take_along_axis(np.sort(windows, axis=-1), rank, axis=-1)[..., 0]
    median[np.isnan(windows).any(-1)] = np.nan
    return np.ascontiguousarray(median, dtype=x.dtype)


@onnx_op(  # type: ignore[untyped-decorator]
    op_type="MedianPool2d",
    inputs=[PyCustomOpDef.dt_float],
    outputs=[PyCustomOpDef.dt_float],
    attrs={"params": PyCustomOpDef.dt_string},
)
def _median_kernel(x: np.ndarray, **attrs: str) -> np.ndarray:
    return median_pool(x, json.loads(attrs["params"]))


def _bins(size: int, out: int | None) -> list[tuple[int, int]]:
    """torch's adaptive bins; ``None`` keeps every position as its own bin."""
    if out is None:
        return [(i, i + 1) for i in range(size)]
    return [((i * size) // out, -(-(i + 1) * size // out)) for i in range(out)]


def adaptive_max_pool(x: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive max and torch's flat per-plane argmax (first max; a NaN wins, the last one)."""
    n, c, h, w = x.shape
    rows, cols = _bins(h, params["output_size"][0]), _bins(w, params["output_size"][1])
    values = np.empty((n, c, len(rows), len(cols)), dtype=x.dtype)
    indices = np.empty(values.shape, dtype=np.int64)
    for i, (top, bottom) in enumerate(rows):
        for j, (left, right) in enumerate(cols):
            cell = x[:, :, top:bottom, left:right].reshape(n, c, -1)
            nan = np.isnan(cell)
            last_nan = cell.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
            pos = np.where(nan.any(-1), last_nan, np.argmax(np.nan_to_num(cell, nan=-np.inf), -1))
            values[:, :, i, j] = np.take_along_axis(cell, pos[..., None], -1)[..., 0]
            span = right - left
            indices[:, :, i, j] = (top + pos // span) * w + left + pos % span
    return values, indices


_ADAPTIVE_ATTRS = {"params": PyCustomOpDef.dt_string}


@onnx_op(  # type: ignore[untyped-decorator]
    op_type="AdaptiveMaxPool2d",
    inputs=[PyCustomOpDef.dt_float],
    outputs=[PyCustomOpDef.dt_float],
    attrs=_ADAPTIVE_ATTRS,
)
def _adaptive_max_kernel(x: np.ndarray, **attrs: str) -> np.ndarray:
    return adaptive_max_pool(x, json.loads(attrs["params"]))[0]


@onnx_op(  # type: ignore[untyped-decorator]
    op_type="AdaptiveMaxPool2dWithIndices",
    inputs=[PyCustomOpDef.dt_float],
    outputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_int64],
    attrs=_ADAPTIVE_ATTRS,
)
def _adaptive_max_indices_kernel(x: np.ndarray, **attrs: str) -> tuple[np.ndarray, np.ndarray]:
    return adaptive_max_pool(x, json.loads(attrs["params"]))


def _interval_starts(u: np.ndarray, size: int, count: int, kernel: int) -> np.ndarray:
    """Fractional window starts (N, C, count) from per-plane samples ``u`` (N, C), in
    float32 as the library computes them (see ``export.runtime.lowerings.fractional``)."""
    last = np.full((*u.shape, 1), size - kernel, dtype=np.int64)
    if count == 1:
        return last
    alpha = np.float32(size - kernel) / np.float32(count - 1)
    at = (np.arange(count - 1, dtype=np.float32) + u[..., None]) * alpha
    starts = np.floor(at).astype(np.int64) - np.floor(u[..., None] * alpha).astype(np.int64)
    clamped: np.ndarray = np.clip(np.concatenate([starts, last], axis=-1), 0, size - kernel)
    return clamped


def _fractional_hw(h: int, w: int, params: dict[str, Any]) -> tuple[int, int]:
    if params["output_size"] is not None:
        oh, ow = params["output_size"]
        return int(oh), int(ow)
    ratio_h, ratio_w = params["output_ratio"]
    return int(h * ratio_h), int(w * ratio_w)


def fractional_max_pool(
    x: np.ndarray, samples: np.ndarray, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional max pooling given torch's ``_random_samples`` (entry 0 drives the width),
    and the flat per-plane index of each max (the first of equal maxima; NaN wins, the last)."""
    n, c, h, w = x.shape
    (kh, kw), (oh, ow) = params["kernel_size"], _fractional_hw(h, w, params)
    u = samples.astype(np.float32)
    rows = _interval_starts(u[..., 1], h, oh, kh)[..., None] + np.arange(kh)  # (N, C, oh, kh)
    cols = _interval_starts(u[..., 0], w, ow, kw)[..., None] + np.arange(kw)  # (N, C, ow, kw)
    index = rows[:, :, :, None, :, None] * w + cols[:, :, None, :, None, :]
    index = index.reshape(n, c, oh, ow, kh * kw)
    values = np.take_along_axis(x.reshape(n, c, -1), index.reshape(n, c, -1), axis=2)
    values = values.reshape(index.shape)
    nan = np.isnan(values)
    last_nan = values.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    first_max = np.argmax(np.where(nan, -np.inf, values), axis=-1)
    best = np.where(nan.any(-1), last_nan, first_max)[..., None]
    pooled = np.take_along_axis(values, best, axis=-1)[..., 0]
    return np.ascontiguousarray(pooled), np.take_along_axis(index, best, axis=-1)[..., 0]


_FRACTIONAL_ATTRS = {"params": PyCustomOpDef.dt_string}
_FRACTIONAL_INPUTS = [PyCustomOpDef.dt_float, PyCustomOpDef.dt_float]


@onnx_op(  # type: ignore[untyped-decorator]
    op_type="FractionalMaxPool2d",
    inputs=_FRACTIONAL_INPUTS,
    outputs=[PyCustomOpDef.dt_float],
    attrs=_FRACTIONAL_ATTRS,
)
def _fractional_kernel(x: np.ndarray, samples: np.ndarray, **attrs: str) -> np.ndarray:
    return fractional_max_pool(x, samples, json.loads(attrs["params"]))[0]


@onnx_op(  # type: ignore[untyped-decorator]
    op_type="FractionalMaxPool2dWithIndices",
    inputs=_FRACTIONAL_INPUTS,
    outputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_int64],
    attrs=_FRACTIONAL_ATTRS,
)
def _fractional_indices_kernel(
    x: np.ndarray, samples: np.ndarray, **attrs: str
) -> tuple[np.ndarray, np.ndarray]:
    return fractional_max_pool(x, samples, json.loads(attrs["params"]))
