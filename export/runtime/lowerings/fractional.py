"""fractional_max (``models.pooling.fractional``): fractional max pooling given its samples.

torch's random stream cannot be replayed without torch, so the graph takes the samples as a
second input, ``samples`` (N, C, 2) in [0, 1): torch's ``_random_samples`` layout, entry 0
for the width, entry 1 for the height. Where the caller gets them (a user tensor, or a NumPy
draw from ``seed``, which is not torch's stream) is the service's choice; see
docs/export-design.md.

Both lowerings replay the library's interval arithmetic in float32, bit for bit:
``alpha = float(in - k) / float(out - 1)``, ``start_i = floor((i + u) * alpha) -
floor(u * alpha)`` (torch truncates; the operands are never negative), the last start
``in - k``, clamped into the input. The decomposition builds every window's flat per-plane
index, gathers with GatherElements and takes the max and its position by torch's rule
(the first of equal maxima; NaN wins, the last NaN). The custom lowering is one
``ai.onnx.contrib`` node run by a NumPy kernel (``export.runtime.kernels.fractional_max_pool``).
With ``output_ratio`` the output size ``int(in * ratio)`` is computed from ``Shape`` in
double precision, as Python computes it, so one graph serves every input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from export.runtime.lowering import Lowering, Ops, Outputs, outputs, register_lowering
from export.runtime.lowerings._common import const_i64
from export.runtime.lowerings._cost import INT64 as INT64_BYTES
from export.runtime.lowerings._cost import Shape, in_elements, out_elements, window_area
from export.runtime.versions import CUSTOM_DOMAIN, CUSTOM_OPSET
from models.pooling.schemas.fractional import FractionalMaxParams

FLOAT, INT64 = ir.DataType.FLOAT, ir.DataType.INT64


def _scalar_i64(emit: Ops, value: int) -> ir.Value:
    return emit.Constant(value=ir.tensor(np.array(value, dtype=np.int64)))


def _output_length(emit: Ops, p: FractionalMaxParams, size: ir.Value, axis: int) -> ir.Value:
    """The output length along spatial ``axis`` (0 = H, 1 = W) as an int64 scalar."""
    if p.output_size is not None:
        return _scalar_i64(emit, p.output_size[axis])
    if p.output_ratio is None:  # the schema requires one of the two
        raise ValueError("fractional_max needs output_size or output_ratio")
    ratio = emit.Constant(value=ir.tensor(np.array(p.output_ratio[axis], dtype=np.float64)))
    scaled = emit.Mul(emit.Cast(size, to=ir.DataType.DOUBLE), ratio)
    return emit.Cast(emit.Floor(scaled), to=INT64)


def _interval_starts(
    emit: Ops, u: ir.Value, size: ir.Value, count: ir.Value, kernel: int
) -> ir.Value:
    """Window starts (N, C, count) along an axis of length ``size`` (int64 scalars), from
    the per-plane samples ``u`` (N, C) in float32."""
    last = emit.Sub(size, _scalar_i64(emit, kernel))
    one = _scalar_i64(emit, 1)
    denominator = emit.Max(emit.Sub(count, one), one)  # count 1 uses only the last start
    alpha = emit.Div(emit.Cast(last, to=FLOAT), emit.Cast(denominator, to=FLOAT))
    positions = emit.Range(_scalar_i64(emit, 0), count, one)  # (count,)
    u = emit.Unsqueeze(u, const_i64(emit, [2]))  # (N, C, 1)
    at = emit.Mul(emit.Add(emit.Cast(positions, to=FLOAT), u), alpha)
    offset = emit.Mul(u, alpha)
    starts = emit.Sub(emit.Cast(emit.Floor(at), to=INT64), emit.Cast(emit.Floor(offset), to=INT64))
    starts = emit.Where(emit.Equal(positions, emit.Sub(count, one)), last, starts)
    return emit.Min(emit.Max(starts, _scalar_i64(emit, 0)), last)


def _axis_starts(
    emit: Ops, p: FractionalMaxParams, u: ir.Value, size: ir.Value, axis: int
) -> ir.Value:
    """Starts along spatial ``axis`` (0 = H, driven by sample 1; 1 = W, by sample 0)."""
    sample = emit.Gather(u, _scalar_i64(emit, 1 - axis), axis=2)  # (N, C)
    count = _output_length(emit, p, size, axis)
    return _interval_starts(emit, sample, size, count, p.kernel_size[axis])


def _window_index(
    emit: Ops, rows: ir.Value, cols: ir.Value, p: FractionalMaxParams, width: ir.Value
) -> ir.Value:
    """Flat per-plane index of every window element, (N, C, oh, ow, kh * kw), row-major."""
    kh, kw = p.kernel_size
    r = emit.Add(emit.Unsqueeze(rows, const_i64(emit, [3])), const_i64(emit, list(range(kh))))
    c = emit.Add(emit.Unsqueeze(cols, const_i64(emit, [3])), const_i64(emit, list(range(kw))))
    r = emit.Unsqueeze(emit.Mul(r, width), const_i64(emit, [3, 5]))  # (N, C, oh, 1, kh, 1)
    c = emit.Unsqueeze(c, const_i64(emit, [2, 4]))  # (N, C, 1, ow, 1, kw)
    index = emit.Add(r, c)  # (N, C, oh, ow, kh, kw)
    shape = emit.Concat(emit.Shape(index, start=0, end=4), const_i64(emit, [kh * kw]), axis=0)
    return emit.Reshape(index, shape)


def _window_argmax(emit: Ops, values: ir.Value) -> ir.Value:
    """Position (..., 1) of each window's max by torch's rule: the first of equal maxima;
    a NaN beats every number, the last NaN winning."""
    first_max = emit.ArgMax(values, axis=-1, keepdims=1)
    nan = emit.Cast(emit.IsNaN(values), to=ir.DataType.INT32)
    last_nan = emit.ArgMax(nan, axis=-1, keepdims=1, select_last_index=1)
    any_nan = emit.Cast(emit.ReduceMax(nan, const_i64(emit, [-1]), keepdims=1), to=ir.DataType.BOOL)
    return emit.Where(any_nan, last_nan, first_max)


def fractional_decomposed(
    emit: Ops, p: FractionalMaxParams, x: ir.Value, samples: ir.Value
) -> Outputs:
    height, width = (emit.Squeeze(emit.Shape(x, start=a, end=a + 1)) for a in (2, 3))
    u = emit.Cast(samples, to=FLOAT)  # the library's arithmetic is at least float32
    rows, cols = _axis_starts(emit, p, u, height, 0), _axis_starts(emit, p, u, width, 1)
    index = _window_index(emit, rows, cols, p, width)
    flat_x = emit.Reshape(x, const_i64(emit, [0, 0, -1]))
    gathered = emit.GatherElements(flat_x, emit.Reshape(index, const_i64(emit, [0, 0, -1])), axis=2)
    values = emit.Reshape(gathered, emit.Shape(index))
    best = _window_argmax(emit, values)
    pooled = emit.Squeeze(emit.GatherElements(values, best, axis=4), const_i64(emit, [4]))
    if not p.return_indices:
        return pooled
    return pooled, emit.Squeeze(emit.GatherElements(index, best, axis=4), const_i64(emit, [4]))


def fractional_custom(emit: Ops, p: FractionalMaxParams, x: ir.Value, samples: ir.Value) -> Outputs:
    attrs = {"params": p.model_dump_json(), "_domain": CUSTOM_DOMAIN, "_version": CUSTOM_OPSET}
    if p.return_indices:
        return outputs(emit.FractionalMaxPool2dWithIndices(x, samples, _outputs=2, **attrs), 2)
    return emit.FractionalMaxPool2d(x, samples, **attrs)


def _fractional_nodes(p: FractionalMaxParams, x: Shape) -> int:
    # Per axis: the sample's Gather + index, the output length (one Constant, or a ratio
    # Constant, Cast, Mul, Floor, Cast) and the 27 nodes of _interval_starts.
    length = 1 if p.output_size is not None else 5
    per_axis = 2 + length + 27
    # H and W (Shape + Squeeze each), the samples' Cast; _window_index (18); x and the
    # index flattened, gathered and reshaped back (7); _window_argmax (8); the pooled
    # GatherElements + Squeeze + axes, and the same three again for the indices.
    return 5 + 2 * per_axis + 18 + 7 + 8 + (6 if p.return_indices else 3)


def _fractional_peak(p: FractionalMaxParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """At the first GatherElements: the int64 window index twice (shaped per window, and
    flattened for the gather), the gathered values, and x flattened by a Reshape (a copy
    in the measurement, which counts every node output)."""
    windows = out_elements(p, shapes) * window_area(p)
    return windows * (2 * INT64_BYTES + itemsize) + in_elements(shapes) * itemsize


def _custom_peak(p: FractionalMaxParams, shapes: Sequence[Shape], itemsize: int) -> int:
    """Only the kernel's outputs (values, and int64 indices when asked)."""
    index = INT64_BYTES if p.return_indices else 0
    return out_elements(p, shapes) * (itemsize + index)


_INPUTS = ("x", "samples")
register_lowering(
    Lowering(
        "fractional_max",
        "decomposition",
        fractional_decomposed,
        inputs=_INPUTS,
        note="samples input; float32 interval Range/Floor arithmetic, GatherElements, "
        "ArgMax (torch's tie and NaN rule), GatherElements",
        nodes=_fractional_nodes,
        peak_bytes=_fractional_peak,
    )
)
register_lowering(
    Lowering(
        "fractional_max",
        "custom",
        fractional_custom,
        inputs=_INPUTS,
        dtypes=frozenset({"float32"}),
        note="ai.onnx.contrib FractionalMaxPool2d[WithIndices] (onnxruntime-extensions PyOp)",
        nodes=lambda p, x: 1,  # the one contrib node, with or without indices
        peak_bytes=_custom_peak,
    )
)
