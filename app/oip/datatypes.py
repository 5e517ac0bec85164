"""The protocol's tensor datatypes and the NumPy dtypes poolserve maps them to.

Binary tensor data is little-endian and row-major; ``BYTES`` elements travel as a 4-byte
little-endian length followed by that many bytes. Only the datatypes some poolserve model
takes or returns are listed: any other is refused before its data is read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BYTES = "BYTES"
NUMERIC: dict[str, np.dtype[Any]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}
"""Protocol datatype -> little-endian NumPy dtype."""
BY_NUMPY = {dtype.name: name for name, dtype in NUMERIC.items()}
"""NumPy dtype name (``float32``) -> protocol datatype (``FP32``)."""


def protocol_datatype(numpy_name: str) -> str:
    """``float32`` -> ``FP32``; a dtype with no protocol name is a bug, not client input."""
    return BY_NUMPY[numpy_name]
