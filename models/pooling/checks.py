"""Input checks that need torch, shared by the op implementations.

The torch-free checks (shapes, parameter values) live in ``models.pooling.params``.
"""

from __future__ import annotations

import torch

from models.pooling.errors import PoolInputError


def check_float(x: torch.Tensor, op: str) -> None:
    """Raise PoolInputError unless ``x`` holds floating-point values."""
    if not x.is_floating_point():
        raise PoolInputError(f"{op}: expected a floating-point tensor, got {x.dtype}")


def is_tracing() -> bool:
    """True while a tracer (jit, dynamo, torch.export) runs the op: no value checks then."""
    jit_tracing = torch.jit.is_tracing()  # type: ignore[attr-defined, no-untyped-call]
    return bool(jit_tracing) or torch.compiler.is_compiling()
