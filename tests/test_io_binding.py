"""I/O binding: the bound run returns exactly what ``session.run`` does, and only CUDA
sessions take that path (on a GPU host, the bound CUDA run is checked too)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.inference.binding import binds, run_bound_or_plain, run_with_binding
from export.runtime.graph import build_pool_graph
from export.runtime.sessions import create_session
from models.pooling import parse_params

CPU = ["CPUExecutionProvider"]


def test_bound_run_on_cpu_equals_plain_run() -> None:
    session = create_session(build_pool_graph("max", parse_params("max", kernel_size=2)), CPU)
    x = np.random.default_rng(0).random((2, 3, 8, 10), dtype=np.float32)
    (plain,) = session.run(None, {"x": x})
    (bound,) = run_with_binding(session, {"x": x}, device="cpu")
    np.testing.assert_array_equal(bound, plain)
    # and the reference the graph stands for: 2x2 max by reshaping
    np.testing.assert_array_equal(bound, x.reshape(2, 3, 4, 2, 5, 2).max(axis=(3, 5)))


@pytest.mark.parametrize(
    ("providers", "setting", "expected"),
    [
        (["CUDAExecutionProvider", "CPUExecutionProvider"], True, True),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], False, False),
        (["CPUExecutionProvider"], True, False),
    ],
)
def test_only_cuda_sessions_bind(providers: list[str], setting: bool, expected: bool) -> None:
    session: Any = SimpleNamespace(get_providers=lambda: providers)
    assert binds(session, setting) is expected


def test_run_session_on_cpu_is_a_plain_run() -> None:
    session = create_session(build_pool_graph("avg", parse_params("avg", kernel_size=2)), CPU)
    x = np.ones((1, 1, 4, 4), dtype=np.float32)
    (out,) = run_bound_or_plain(session, {"x": x}, io_binding=True)
    np.testing.assert_array_equal(out, np.ones((1, 1, 2, 2), dtype=np.float32))


@pytest.mark.gpu
def test_bound_cuda_run_equals_the_closed_form() -> None:
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    session = create_session(build_pool_graph("max", parse_params("max", kernel_size=2)), cuda)
    assert binds(session, io_binding=True)
    x = np.random.default_rng(1).random((2, 3, 8, 10), dtype=np.float32)
    (bound,) = run_bound_or_plain(session, {"x": x}, io_binding=True)
    (plain,) = run_bound_or_plain(session, {"x": x}, io_binding=False)
    want = x.reshape(2, 3, 4, 2, 5, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(bound, want)
    np.testing.assert_array_equal(plain, want)
