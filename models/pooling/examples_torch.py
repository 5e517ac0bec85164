"""The torch side of the registry examples: an op's reference output on example arrays.

Benchmarks, the ops table and the lowering tests compare every ONNX lowering with this: the
op's ``nn.Module`` (learnable ops with its own seeded weights), or, when the module draws an
input itself (fractional_max's samples), the op's functional form fed the same draw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from models.pooling.registry import create_pool, get_pool_spec


def example_module(op: str, example: Mapping[str, Any]) -> nn.Module:
    """The op's module for these params, in eval mode."""
    return create_pool(op, **example).eval()


def module_weights(module: nn.Module) -> dict[str, np.ndarray]:
    """A module's state_dict as NumPy arrays (what the lowerings with weights take)."""
    return {key: value.detach().numpy() for key, value in module.state_dict().items()}


def torch_outputs(
    op: str, module: nn.Module, params: Any, arrays: Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    """Every output of the op on ``arrays`` (named as the registry names its inputs)."""
    spec = get_pool_spec(op)
    tensors = [torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in spec.input_names]
    with torch.inference_mode():
        if spec.function is not None:
            out = spec.function(tensors[0], params, *tensors[1:])
        else:
            out = module(*tensors)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
