"""The parity gate every ONNX artifact passes before it is written or served.

1. ``onnx.checker`` with ``full_check`` (type and shape inference included).
2. Every input axis declared dynamic is still symbolic in the graph: dynamo's exporter
   quietly freezes dims to the traced size instead of failing.
3. onnxruntime against the torch reference on at least three input shapes, at least one of
   them other than the traced shape, with an absolute tolerance (1e-5 for fp32).

Any failure raises ``ExportError`` naming the check, the input and the measured error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from export.runtime.errors import ExportError
from export.runtime.sessions import ORT_ERRORS, create_session

Reference = Callable[..., Sequence[np.ndarray]]
"""Runs the torch original on NumPy inputs (in graph-input order) and returns its outputs."""

MIN_SHAPES = 3


@dataclass(frozen=True)
class ParityReport:
    """What the gate measured: the input shapes run and the worst absolute error."""

    shapes: tuple[tuple[int, ...], ...]
    max_abs_error: float
    tolerance: float


def check_artifact(
    model: onnx.ModelProto,
    reference: Reference,
    shapes: Sequence[tuple[int, ...]],
    dynamic_axes: Mapping[str, Sequence[int]],
    traced_shape: tuple[int, ...] | None = None,
    tolerance: float = 1e-5,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> ParityReport:
    """Run every check on ``model``; raise ``ExportError`` on the first failure.

    Args:
        model: the artifact.
        reference: the torch original (see ``Reference``).
        shapes: input shapes to compare on (the same shape for every input).
        dynamic_axes: input name -> axes declared dynamic.
        traced_shape: the shape torch traced with; one of ``shapes`` must differ from it.
        tolerance: allowed max absolute error on float outputs; integer outputs must match.
        providers: onnxruntime execution providers.
    """
    run_checker(model)
    check_symbolic(model, dynamic_axes)
    check_shape_cover(shapes, traced_shape)
    worst = 0.0
    for shape, actual, expected in paired_outputs(model, reference, shapes, providers):
        worst = max(worst, compare_outputs(actual, expected, tolerance, shape))
    return ParityReport(tuple(tuple(s) for s in shapes), worst, tolerance)


def paired_outputs(
    model: onnx.ModelProto,
    reference: Reference,
    shapes: Sequence[tuple[int, ...]],
    providers: Sequence[str],
) -> Iterator[tuple[tuple[int, ...], list[np.ndarray], Sequence[np.ndarray]]]:
    """(shape, onnxruntime outputs, torch outputs) for each input shape, on the same
    seeded inputs; load and run failures become ``ExportError``."""
    try:
        session = create_session(model, providers)
    except ORT_ERRORS as exc:
        raise ExportError(f"onnxruntime cannot load the model: {exc}") from exc
    for shape in shapes:
        feeds = _random_inputs(model, shape)
        try:
            actual = list(session.run(None, feeds))
        except ORT_ERRORS as exc:
            raise ExportError(f"onnxruntime failed at input shape {shape}: {exc}") from exc
        yield shape, actual, reference(*feeds.values())


def run_checker(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"onnx.checker (full_check) rejected the model: {exc}") from exc


def check_symbolic(model: onnx.ModelProto, dynamic_axes: Mapping[str, Sequence[int]]) -> None:
    """Each declared-dynamic axis must be a named dim, not a number."""
    inputs = {value.name: value for value in model.graph.input}
    for name, axes in dynamic_axes.items():
        if name not in inputs:
            raise ExportError(f"declared dynamic input {name!r} is not a graph input")
        dims = inputs[name].type.tensor_type.shape.dim
        for axis in axes:
            if axis >= len(dims) or not dims[axis].dim_param:
                fixed = dims[axis].dim_value if axis < len(dims) else "missing"
                raise ExportError(
                    f"input {name!r} axis {axis} was declared dynamic but the graph fixes it "
                    f"to {fixed}: the exporter specialised it to the traced shape"
                )


def check_shape_cover(
    shapes: Sequence[tuple[int, ...]], traced_shape: tuple[int, ...] | None
) -> None:
    if len(shapes) < MIN_SHAPES:
        raise ExportError(f"parity needs at least {MIN_SHAPES} input shapes, got {len(shapes)}")
    if traced_shape is not None and all(tuple(s) == tuple(traced_shape) for s in shapes):
        raise ExportError(f"parity must include a shape other than the traced {traced_shape}")


def compare_outputs(
    actual: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
    tolerance: float,
    shape: tuple[int, ...],
) -> float:
    """The max absolute error over all outputs; raises when any output is off."""
    if len(actual) != len(expected):
        raise ExportError(f"the graph returns {len(actual)} outputs, torch {len(expected)}")
    worst = 0.0
    for i, (got, want) in enumerate(zip(actual, expected, strict=True)):
        where = f"input shape {shape}, output {i}"
        if got.shape != want.shape:
            raise ExportError(f"{where}: onnxruntime shape {got.shape} != torch {want.shape}")
        if not np.issubdtype(want.dtype, np.floating):
            if not np.array_equal(got, want):
                raise ExportError(f"{where}: integer outputs differ from torch")
            continue
        if not np.array_equal(np.isnan(got), np.isnan(want)):
            raise ExportError(f"{where}: NaNs differ from torch")
        error = float(np.nanmax(np.abs(got.astype(np.float64) - want), initial=0.0))
        if error > tolerance:
            raise ExportError(f"{where}: max |onnx - torch| = {error:.3g} > {tolerance:g}")
        worst = max(worst, error)
    return worst


def _random_inputs(model: onnx.ModelProto, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Standard-normal inputs of the graph's dtype, the same seed for every run."""
    rng = np.random.default_rng(0)
    feeds = {}
    for value in model.graph.input:
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds
