"""Triton's ``config.pbtxt`` for one ONNX model of the repository.

``max_batch_size: 0`` tells Triton the dims below are the full tensor shape (batch
included), so a symbolic dim is written ``-1`` (see Triton's model configuration guide).
Torch-free: the exporter writes it, and a test parses it as protobuf text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from export.runtime.manifest import TensorSpec

PLATFORM = "onnxruntime_onnx"

TRITON_DTYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
"""NumPy dtype name -> Triton ``DataType``."""


def triton_dims(shape: Sequence[int | str]) -> list[int]:
    """Fixed dims as they are, symbolic ones (names) as -1."""
    return [dim if isinstance(dim, int) else -1 for dim in shape]


def _tensor_block(spec: TensorSpec) -> str:
    if spec.dtype not in TRITON_DTYPES:
        raise ValueError(f"{spec.name}: no Triton data type for {spec.dtype!r}")
    dims = ", ".join(str(d) for d in triton_dims(spec.shape))
    return (
        "  {\n"
        f"    name: {json.dumps(spec.name)}\n"
        f"    data_type: {TRITON_DTYPES[spec.dtype]}\n"
        f"    dims: [ {dims} ]\n"
        "  }"
    )


def config_pbtxt(name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str:
    """The ``config.pbtxt`` text of model ``name`` with these graph inputs and outputs."""
    sections = [
        f"name: {json.dumps(name)}",
        f'platform: "{PLATFORM}"',
        "max_batch_size: 0",
        "input [\n" + ",\n".join(_tensor_block(s) for s in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(s) for s in outputs) + "\n]",
    ]
    return "\n".join(sections) + "\n"
