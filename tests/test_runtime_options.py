"""CUDA EP options and session options from Settings reach onnxruntime.

On CPU the CUDA options cannot be read back from a session (the EP does not load), so the
``providers=`` argument onnxruntime receives is recorded; the CPU-observable options are read
back from the real session. The GPU test reads the CUDA options back from a CUDA session.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from pydantic import ValidationError

from app.core.config import Settings
from app.inference.sessions import open_session
from export.runtime.sessions import CUDA, create_session, cuda_provider_options, provider_list
from export.runtime.versions import IR_VERSION, OPSET

CPU = "CPUExecutionProvider"


def relu_model() -> Any:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every InferenceSession's keyword arguments, the real session still created."""
    calls: list[dict[str, Any]] = []
    real = ort.InferenceSession

    def record(*args: Any, **kwargs: Any) -> ort.InferenceSession:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", record)  # the module export.runtime.sessions uses
    return calls


def test_cuda_options_leave_out_a_zero_memory_limit() -> None:
    assert cuda_provider_options() == {
        "device_id": "0",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "arena_extend_strategy": "kNextPowerOfTwo",
    }
    limited = cuda_provider_options(1, "HEURISTIC", "kSameAsRequested", 2**30)
    assert limited["gpu_mem_limit"] == str(2**30)
    assert limited["device_id"] == "1"


def test_provider_list_pairs_only_providers_with_options() -> None:
    got = provider_list([CUDA, CPU], {CUDA: {"device_id": "0"}})
    assert got == [(CUDA, {"device_id": "0"}), CPU]
    assert provider_list([CPU]) == [CPU]


@pytest.mark.parametrize("arena", [True, False])
def test_cpu_mem_arena_reaches_the_session(arena: bool) -> None:
    session = create_session(relu_model(), [CPU], cpu_mem_arena=arena)
    assert session.get_session_options().enable_cpu_mem_arena is arena
    assert CPU in session.get_provider_options()
    out = session.run(None, {"x": np.array([[-1, 2, -3, 4]], np.float32)})[0]
    np.testing.assert_array_equal(out, [[0, 2, 0, 4]])


def test_settings_options_reach_onnxruntime(recorded: list[dict[str, Any]]) -> None:
    settings = Settings(
        providers=[CUDA, CPU],
        cudnn_conv_algo_search="HEURISTIC",
        cuda_arena_extend_strategy="kSameAsRequested",
        cuda_gpu_mem_limit_bytes=3 * 2**30,
        cuda_device_id=0,
        cpu_mem_arena=False,
    )
    session, _active = open_session(relu_model(), settings, "relu")
    expected = {
        "device_id": "0",
        "cudnn_conv_algo_search": "HEURISTIC",
        "arena_extend_strategy": "kSameAsRequested",
        "gpu_mem_limit": str(3 * 2**30),
    }
    assert recorded[-1]["providers"] == [(CUDA, expected), CPU]
    assert session.get_session_options().enable_cpu_mem_arena is False


def test_settings_read_the_options_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLSERVE_CUDNN_CONV_ALGO_SEARCH", "DEFAULT")
    monkeypatch.setenv("POOLSERVE_CUDA_GPU_MEM_LIMIT_BYTES", "1024")
    monkeypatch.setenv("POOLSERVE_IO_BINDING", "0")
    monkeypatch.setenv("POOLSERVE_CPU_MEM_ARENA", "false")
    settings = Settings()
    assert settings.cudnn_conv_algo_search == "DEFAULT"
    assert settings.cuda_gpu_mem_limit_bytes == 1024
    assert settings.io_binding is False
    assert settings.cpu_mem_arena is False


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"cudnn_conv_algo_search": "FAST"}, "'EXHAUSTIVE', 'HEURISTIC' or 'DEFAULT'"),
        ({"cuda_arena_extend_strategy": "grow"}, "kNextPowerOfTwo"),
        ({"cuda_gpu_mem_limit_bytes": -1}, "greater than or equal to 0"),
        ({"cuda_device_id": -1}, "greater than or equal to 0"),
        ({"require_cuda": True, "providers": [CPU]}, "do not include CUDAExecutionProvider"),
    ],
)
def test_invalid_options_are_refused_with_the_reason(values: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(**values)


@pytest.mark.gpu
def test_cuda_session_reports_the_configured_options() -> None:
    options = cuda_provider_options(0, "HEURISTIC", "kSameAsRequested", 2**30)
    session = create_session(relu_model(), [CUDA, CPU], provider_options={CUDA: options})
    assert session.get_providers()[0] == CUDA
    got = session.get_provider_options()[CUDA]
    assert got["cudnn_conv_algo_search"] == "HEURISTIC"
    assert got["arena_extend_strategy"] == "kSameAsRequested"
    assert got["gpu_mem_limit"] == str(2**30)
