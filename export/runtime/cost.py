"""What a /pool graph will cost, from the params and input shapes alone: nothing is built.

The op's registry entry (``models.pooling``) gives its output shape and its work; the
lowering's entry (``export.runtime.lowering``) gives the size and peak memory of the ONNX
graph that writes the op that way. Admission control compares a ``Cost`` with the service's
budgets before any graph is built or any tensor is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from export.runtime.errors import LoweringError
from export.runtime.lowering import Lowering, Shape
from models.pooling import get_pool_spec

INDEX_BYTES = 8


@dataclass(frozen=True)
class Cost:
    """One run of one graph.

    Attributes:
        output_elements: elements of every output (indices included).
        work: about how many elementary operations the op does.
        peak_bytes: the most memory the graph's tensors hold at once (outputs included,
            inputs and weights not).
        result_bytes: the outputs' bytes, before any encoding.
        graph_nodes: nodes in the graph (what building and optimising it costs).
    """

    output_elements: int
    work: int
    peak_bytes: int
    result_bytes: int
    graph_nodes: int


def estimate(lowering: Lowering, params: Any, shapes: Sequence[Shape], dtype: str) -> Cost:
    """The cost of running ``lowering`` with ``params`` on inputs of ``shapes`` (x first).

    Raises:
        PoolError: the shapes do not fit the params (from the schema's ``output_shape``).
        LoweringError: the lowering states no cost (every registered one does; a test
            holds them to it).
    """
    if lowering.nodes is None or lowering.peak_bytes is None:
        raise LoweringError(f"the {lowering.kind} lowering of {lowering.op!r} states no cost")
    spec = get_pool_spec(lowering.op)
    count = math.prod(params.output_shape(*shapes))
    with_indices = "indices" in spec.output_names(params)
    itemsize = np.dtype(dtype).itemsize
    return Cost(
        output_elements=count * (2 if with_indices else 1),
        work=spec.work(params, shapes),
        peak_bytes=lowering.peak_bytes(params, shapes, itemsize),
        result_bytes=count * (itemsize + (INDEX_BYTES if with_indices else 0)),
        graph_nodes=lowering.nodes(params, tuple(shapes[0])),
    )
