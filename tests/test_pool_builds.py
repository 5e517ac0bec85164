"""/pool graphs built in the builder's child process (issue 18): same answers and errors as
a build on a server thread, hits served while a build is in progress, a dead child replaced.

The build functions below run in the child (``spawn`` imports this module there), so this
module imports nothing that imports torch.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest

from app.core.errors import ApiError, ErrorCode
from app.inference.graph_builder import BuildJob, GraphBuilder, build_model
from app.inference.pool import PoolEngine
from export.runtime.errors import LoweringError
from export.runtime.lowering import select_lowering
from models.pooling import parse_params
from tests.app_fixtures import AppClient, app_settings, create_app, npy_bytes

NPY = "application/x-npy"
START_TIMEOUT_S = 120.0
"""Generous: the child imports onnxscript (about a second on an idle machine)."""
RNG = np.random.default_rng(0)


# Build functions for the child (module level, so they pickle by reference) -------------------


def _noted_build(note: str, job: BuildJob) -> bytes:
    """``build_model``, after writing down which process ran it and whether torch is there."""
    Path(note).write_text(json.dumps({"pid": os.getpid(), "torch": "torch" in sys.modules}))
    return build_model(job)


def _refusing_build(job: BuildJob) -> bytes:
    raise LoweringError(f"cannot lower {job.op!r} with these parameters: refused in the child")


def _dying_build(job: BuildJob) -> bytes:
    os._exit(3)


def _held_build(started: str, release: str, job: BuildJob) -> bytes:
    """Says it has begun, then waits (at most a minute) for the test to let it go on."""
    Path(started).touch()
    deadline = time.monotonic() + 60
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return build_model(job)


# Helpers ---------------------------------------------------------------------------------


def _query(op: str, **params: Any) -> dict[str, str]:
    return {"op": op, **{k: json.dumps(v) for k, v in params.items()}}


def _pool(client: AppClient, x: np.ndarray, op: str, **params: Any) -> httpx.Response:
    headers = {"content-type": NPY, "accept": NPY}
    return client.post("/pool", params=_query(op, **params), content=npy_bytes(x), headers=headers)


def _result(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.asarray(np.load(io.BytesIO(r.content), allow_pickle=False))


def _engine(client: AppClient) -> PoolEngine:
    pools: PoolEngine = client.app.state.services.pools
    return pools


def _started(client: AppClient) -> int:
    """The builder's child, once it has started: its pid."""
    return _engine(client).builder.start().result(timeout=START_TIMEOUT_S)


@pytest.fixture
def client(make_client: Callable[..., AppClient]) -> AppClient:
    """A server whose builder's child has started."""
    started = make_client()
    _started(started)
    return started


# Misses in the child ---------------------------------------------------------------------


def test_misses_are_built_in_the_child_without_torch(client: AppClient, tmp_path: Path) -> None:
    note = tmp_path / "note.json"
    _engine(client).builder.build_fn = functools.partial(_noted_build, str(note))
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    _result(_pool(client, x, "median", kernel_size=3))
    ran = json.loads(note.read_text())
    assert ran["pid"] == _started(client) != os.getpid()
    assert ran["torch"] is False


def test_results_match_closed_forms(client: AppClient) -> None:
    x = RNG.random((2, 3, 8, 6)).astype(np.float32) + 0.1
    blocks = x.reshape(2, 3, 4, 2, 3, 2)
    np.testing.assert_array_equal(
        _result(_pool(client, x, "max", kernel_size=2)), blocks.max(axis=(3, 5))
    )
    np.testing.assert_allclose(
        _result(_pool(client, x, "avg", kernel_size=2)), blocks.mean(axis=(3, 5)), rtol=1e-6
    )
    gem = np.mean(np.maximum(x, 1e-6) ** 2.5, axis=(2, 3), keepdims=True) ** (1 / 2.5)
    np.testing.assert_allclose(_result(_pool(client, x, "gem", p=2.5)), gem, rtol=1e-5)
    top = x.max(axis=(2, 3), keepdims=True)
    np.testing.assert_array_equal(_result(_pool(client, x, "adaptive_max", output_size=1)), top)


def test_a_refusal_in_the_child_is_the_same_422(client: AppClient) -> None:
    _engine(client).builder.build_fn = _refusing_build
    r = _pool(client, np.ones((1, 1, 4, 4), np.float32), "max", kernel_size=2)
    assert r.status_code == 422
    assert r.json()["code"] == "unsupported_params"
    assert "refused in the child" in r.json()["error"]


def test_admission_comes_before_any_build(make_client: Callable[..., AppClient]) -> None:
    fresh = make_client()
    r = _pool(fresh, np.zeros((1, 1, 768, 768), np.float32), "max", kernel_size=385, stride=1)
    assert r.status_code == 413
    assert r.json()["code"] == "too_expensive"
    assert not _engine(fresh).builder.running  # nothing was built, not even the child started
    assert len(_engine(fresh).cache) == 0


# A dead child ----------------------------------------------------------------------------


def test_a_child_that_dies_mid_build_costs_a_503_then_another_starts(client: AppClient) -> None:
    first = _started(client)
    builder = _engine(client).builder
    x = np.ones((1, 1, 4, 4), np.float32)
    _result(_pool(client, x, "max", kernel_size=2))  # cached before the child dies
    builder.build_fn = _dying_build
    r = _pool(client, x, "median", kernel_size=3)
    assert r.status_code == 503
    assert r.json()["code"] == "overloaded"
    assert "build process stopped" in r.json()["error"]
    assert r.headers["retry-after"] == "1"
    builder.build_fn = build_model
    _result(_pool(client, x, "max", kernel_size=2))  # hits never needed the child
    _result(_pool(client, x, "median", kernel_size=3))  # built here while another starts
    assert _started(client) != first
    _result(_pool(client, x, "median", kernel_size=2))  # and by the new child


def test_a_child_killed_while_idle_never_takes_the_server_down(client: AppClient) -> None:
    os.kill(_started(client), signal.SIGKILL)
    x = np.ones((1, 1, 4, 4), np.float32)
    statuses = [_pool(client, x, "median", kernel_size=k).status_code for k in (2, 3, 4)]
    assert statuses[0] in (200, 503)  # 503 only when the death was not yet noticed
    assert statuses[1:] == [200, 200]
    assert client.get("/health/live").status_code == 200


def test_closing_the_app_stops_the_child(app_repository: Path) -> None:
    app = AppClient(create_app(app_settings(app_repository))).start()
    try:
        pid = _started(app)
        _result(_pool(app, np.ones((1, 1, 4, 4), np.float32), "median", kernel_size=3))
    finally:
        app.close()
    assert not Path(f"/proc/{pid}").exists()


# Hits while a build is in progress -------------------------------------------------------


async def _until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_hits_are_served_while_a_build_is_held(
    make_client: Callable[..., AppClient], tmp_path: Path
) -> None:
    """One inference slot: a miss waiting for its build must not hold it."""
    app = make_client(max_concurrent_inferences=1)
    _started(app)
    started, release = tmp_path / "started", tmp_path / "release"
    x = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)
    _result(_pool(app, x, "max", kernel_size=2))
    _engine(app).builder.build_fn = functools.partial(_held_build, str(started), str(release))
    headers = {"content-type": NPY, "accept": NPY}

    async def post(op: str, **params: Any) -> httpx.Response:
        query = _query(op, **params)
        return await app.http.post("/pool", params=query, content=npy_bytes(x), headers=headers)

    async def scenario() -> httpx.Response:
        miss = asyncio.ensure_future(post("median", kernel_size=3))
        await _until(started.exists, "the held build to begin")
        for _ in range(5):
            hit = await asyncio.wait_for(post("max", kernel_size=2), 30)
            assert hit.status_code == 200, hit.text
        assert (await app.http.get("/health/live")).status_code == 200
        assert not miss.done()
        release.touch()
        return await asyncio.wait_for(miss, 60)

    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), (2, 3))[:, :, ::3, ::3]
    median = np.median(windows, (-2, -1))  # stride defaults to the kernel size
    np.testing.assert_array_equal(_result(app.loop.run_until_complete(scenario())), median)


# The builder on its own ------------------------------------------------------------------


def _job(op: str = "median", **params: Any) -> BuildJob:
    validated = parse_params(op, **params)
    kind = select_lowering(op, validated, "float32").kind
    return BuildJob(op, kind, validated, "float32", None)


class Here:
    """``Runner.on_worker`` stand-in: runs the build on the calling thread, counting."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, fn: Callable[[], bytes]) -> bytes:
        self.calls += 1
        return fn()


@pytest.fixture
def here() -> Here:
    return Here()


@pytest.fixture
def builder(here: Here) -> Iterator[GraphBuilder]:
    made = GraphBuilder(1, here)
    yield made
    asyncio.run(made.close())


def test_until_the_child_has_started_misses_build_here(builder: GraphBuilder, here: Here) -> None:
    never: Future[int] = Future()
    builder.start = lambda: never  # type: ignore[method-assign]
    model = onnx.load_from_string(asyncio.run(builder.build(_job(kernel_size=3))))
    assert model.graph.node
    assert here.calls == 1


def test_builds_past_max_waiting_are_refused(builder: GraphBuilder, here: Here) -> None:
    builder.start().result(timeout=START_TIMEOUT_S)

    async def three() -> list[bytes | BaseException]:
        jobs = [builder.build(_job(kernel_size=k)) for k in (2, 3, 4)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    built, *refused = asyncio.run(three())
    assert isinstance(built, bytes)
    assert all(isinstance(e, ApiError) and e.code == ErrorCode.OVERLOADED for e in refused)
    assert here.calls == 0
