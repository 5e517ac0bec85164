"""What a graph really holds while it runs: every intermediate tensor's size from a real
onnxruntime run, and a liveness walk over the nodes in order (a tensor lives from the node
that makes it to the last node that reads it; outputs live to the end).

The reference that ``Lowering.peak_bytes`` estimates are checked against
(``tests/test_cost.py``). Inputs and initializers are not counted, as the estimate does not
count them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from export.runtime.sessions import create_session


def _with_every_value_as_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose outputs are every node output that shape inference can type."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    out: onnx.ModelProto = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in out.graph.output}
    for node in out.graph.node:
        for name in node.output:
            if name and name not in present and name in types:
                out.graph.output.append(onnx.ValueInfoProto(name=name, type=types[name]))
                present.add(name)
    return out


def tensor_bytes(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Bytes of every node output of one run (those shape inference could not type: 0)."""
    probe = _with_every_value_as_output(model)
    session = create_session(probe, ["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, dict(feeds))
    return {name: int(np.asarray(v).nbytes) for name, v in zip(names, values, strict=True)}


def measured_peak_bytes(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> int:
    """The largest total of node outputs alive at once, in node order."""
    sizes = tensor_bytes(model, feeds)
    nodes = list(model.graph.node)
    outputs = {o.name for o in model.graph.output}
    last_use = {name: len(nodes) for name in outputs}
    for i, node in enumerate(nodes):
        for name in node.input:
            if name in sizes:
                last_use[name] = max(last_use.get(name, i), i)
    born = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    peak = 0
    for i in range(len(nodes)):
        live = sum(
            size for name, size in sizes.items() if born.get(name, 0) <= i <= last_use.get(name, i)
        )
        peak = max(peak, live)
    return peak
