"""float16 variants of exported models, and their parity gate against the torch fp32 model.

The conversion is onnxconverter-common's ``convert_float_to_float16`` with
``keep_io_types=True``: weights and activations become float16, a Cast after each input and
before each output keeps the wire format float32, so the service feeds and reads an fp16
variant exactly like its fp32 original.

fp16 cannot meet the fp32 gate's 1e-5 absolute bound (its unit roundoff is 4.9e-4). The
descriptors are L2-normalised and compared by cosine, so the fp16 gate bounds the smallest
cosine similarity between each output row and torch's fp32 row, and, as a guard against a
few wild elements that a cosine averages away, a loose absolute bound. Both bounds were
chosen from measurements recorded in ``docs/throughput.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnxconverter_common import float16  # type: ignore[import-untyped]

from export.parity import Reference, paired_outputs, run_checker
from export.runtime.errors import ExportError
from export.runtime.versions import IR_VERSION

FP16_SUFFIX = "_fp16"
MIN_COSINE = 0.9999
"""Smallest allowed cosine similarity between an fp16 output row and the torch fp32 row."""
MAX_ABS_ERROR = 1e-3
"""Largest allowed |fp16 - fp32| on any element (descriptor elements are at most 1)."""


def fp16_name(name: str) -> str:
    return name + FP16_SUFFIX


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of ``model`` with float32 inputs and outputs, at our pinned IR version."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # leave the caller's alone
    # intermediate type annotations would still say float32 after the conversion
    del model.graph.value_info[:]
    with warnings.catch_warnings():  # it warns once per tiny weight it rounds to 1e-7
        warnings.simplefilter("ignore", UserWarning)
        converted: onnx.ModelProto = float16.convert_float_to_float16(model, keep_io_types=True)
    converted.ir_version = IR_VERSION  # the converter may write one onnxruntime refuses
    return converted


@dataclass(frozen=True)
class Fp16Report:
    """What the fp16 gate measured over every parity shape and output row."""

    shapes: tuple[tuple[int, ...], ...]
    max_abs_error: float
    min_cosine: float


def row_cosines(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row (first axis) of two same-shape arrays, in float64.

    A row that is zero in both counts as identical (cosine 1); zero in one only, as 0.
    """
    a = actual.reshape(actual.shape[0], -1).astype(np.float64)
    b = expected.reshape(expected.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, cos)


def measure_fp16(
    model: onnx.ModelProto,
    reference: Reference,
    shapes: Sequence[tuple[int, ...]],
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> Fp16Report:
    """Run the fp16 ``model`` and the torch fp32 ``reference`` on the parity gate's inputs.

    Raises:
        ExportError: the model is invalid, cannot load or run, or returns other shapes or
            non-finite values.
    """
    run_checker(model)
    worst_abs, worst_cos = 0.0, 1.0
    for shape, actual, expected in paired_outputs(model, reference, shapes, providers):
        for got, want in zip(actual, expected, strict=True):
            if got.shape != want.shape:
                raise ExportError(f"input shape {shape}: fp16 shape {got.shape} != {want.shape}")
            if not np.all(np.isfinite(got)):
                raise ExportError(f"input shape {shape}: the fp16 model returned inf or NaN")
            worst_abs = max(worst_abs, float(np.max(np.abs(got.astype(np.float64) - want))))
            worst_cos = min(worst_cos, float(np.min(row_cosines(got, want))))
    return Fp16Report(tuple(tuple(s) for s in shapes), worst_abs, worst_cos)


def check_fp16(
    model: onnx.ModelProto,
    reference: Reference,
    shapes: Sequence[tuple[int, ...]],
    providers: Sequence[str] = ("CPUExecutionProvider",),
    min_cosine: float = MIN_COSINE,
    max_abs_error: float = MAX_ABS_ERROR,
) -> Fp16Report:
    """``measure_fp16``, then refuse a model outside either bound (``ExportError``)."""
    report = measure_fp16(model, reference, shapes, providers)
    if report.min_cosine < min_cosine:
        raise ExportError(f"fp16 min cosine to torch fp32 = {report.min_cosine:.6f} < {min_cosine}")
    if report.max_abs_error > max_abs_error:
        raise ExportError(
            f"fp16 max |onnx - torch| = {report.max_abs_error:.3g} > {max_abs_error:g}"
        )
    return report
