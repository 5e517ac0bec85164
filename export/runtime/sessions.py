"""onnxruntime sessions for exported and built graphs.

Providers are always passed explicitly (CUDA first, then CPU): onnxruntime-gpu logs an
error and falls back to CPU when CUDA cannot load, and silently picks CPU when none are
given. Graphs with ``ai.onnx.contrib`` nodes get the onnxruntime-extensions library and our
Python kernels (``export.runtime.kernels``) registered first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from export.runtime.versions import CUSTOM_DOMAIN, IR_VERSION, OPSET

CUDA = "CUDAExecutionProvider"
DEFAULT_PROVIDERS = (CUDA, "CPUExecutionProvider")
ProviderOptions = Mapping[str, Mapping[str, str]]
"""Provider name -> its onnxruntime options (string values, as onnxruntime reads them)."""

ORT_ERRORS: tuple[type[Exception], ...] = (
    _ort_state.Fail,
    _ort_state.InvalidArgument,
    _ort_state.InvalidGraph,
    _ort_state.NotImplemented,
    _ort_state.RuntimeException,
)
"""What onnxruntime raises for a bad model or a failed run (plain ``Exception`` subclasses)."""


def uses_custom_ops(model: onnx.ModelProto) -> bool:
    """True when any node (in the graph or a local function) is in ai.onnx.contrib."""
    nodes = list(model.graph.node)
    for function in model.functions:
        nodes.extend(function.node)
    return any(node.domain == CUSTOM_DOMAIN for node in nodes)


def cuda_provider_options(
    device_id: int = 0,
    cudnn_conv_algo_search: str = "EXHAUSTIVE",
    arena_extend_strategy: str = "kNextPowerOfTwo",
    gpu_mem_limit_bytes: int = 0,
) -> dict[str, str]:
    """CUDA EP options; ``gpu_mem_limit_bytes`` 0 leaves onnxruntime's (no) limit."""
    options = {
        "device_id": str(device_id),
        "cudnn_conv_algo_search": cudnn_conv_algo_search,
        "arena_extend_strategy": arena_extend_strategy,
    }
    if gpu_mem_limit_bytes > 0:
        options["gpu_mem_limit"] = str(gpu_mem_limit_bytes)
    return options


def provider_list(
    providers: Sequence[str], provider_options: ProviderOptions | None = None
) -> list[str | tuple[str, dict[str, str]]]:
    """onnxruntime's ``providers=`` argument: ``(name, options)`` where options are given."""
    options = provider_options or {}
    return [(name, dict(options[name])) if name in options else name for name in providers]


def create_session(
    model: onnx.ModelProto | str | Path,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    intra_op_threads: int = 0,
    *,
    provider_options: ProviderOptions | None = None,
    cpu_mem_arena: bool = True,
    mem_pattern: bool = True,
) -> ort.InferenceSession:
    """An inference session that can run ``model``, custom kernels included.

    Args:
        model: the model, or a path to a ``.onnx`` file.
        providers: execution providers in order of preference.
        intra_op_threads: onnxruntime's intra-op thread count; 0 lets it choose.
        provider_options: options per provider name (see ``cuda_provider_options``).
        cpu_mem_arena: ``SessionOptions.enable_cpu_mem_arena``.
        mem_pattern: ``SessionOptions.enable_mem_pattern``: off for graphs whose peak must
            not stay resident, since from the second run the pattern's block stays in the
            arena even when the run asks it to shrink (docs/throughput.md).
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.enable_cpu_mem_arena = cpu_mem_arena
    options.enable_mem_pattern = mem_pattern
    # idle intra-op threads sleep instead of spinning: a spinning session takes CPU from
    # every other request's run (measured in bench/RESULTS.md, section 5)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if uses_custom_ops(proto):
        register_custom_kernels(options)
    return ort.InferenceSession(
        proto.SerializeToString(),
        sess_options=options,
        providers=provider_list(providers, provider_options),
    )


def register_custom_kernels(options: ort.SessionOptions) -> None:
    """Load onnxruntime-extensions and our PyOp kernels into these session options."""
    from onnxruntime_extensions import get_library_path

    import export.runtime.kernels  # noqa: F401  (declares the PyOp kernels)

    options.register_custom_ops_library(get_library_path())


def run(session: ort.InferenceSession, *arrays: np.ndarray) -> list[np.ndarray]:
    """Run ``session`` on positional inputs (in graph-input order); returns every output."""
    names = [value.name for value in session.get_inputs()]
    return list(session.run(None, dict(zip(names, arrays, strict=True))))


def _relu_model() -> onnx.ModelProto:
    """The smallest graph with a CUDA kernel: y = relu(x), x float32 (N,)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def cuda_session_works(device_id: int = 0) -> bool:
    """Whether a session here really runs on the CUDA EP. onnxruntime-gpu lists the provider
    on every host, GPU or not, and falls back to CPU when it cannot load; only the providers
    a real session got tell."""
    if CUDA not in ort.get_available_providers():
        return False
    options = {CUDA: cuda_provider_options(device_id)}
    session = create_session(_relu_model(), DEFAULT_PROVIDERS, provider_options=options)
    return bool(session.get_providers()[0] == CUDA)
