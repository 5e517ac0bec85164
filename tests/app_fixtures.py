"""Reusable fixtures for the service tests: a small exported repository (built once per
session), an in-process client that runs the app's lifespan, and npy bodies written by
NumPy itself (independent of the service's own codec).

``httpx.ASGITransport`` does not run the lifespan, so ``AppClient`` enters
``app.router.lifespan_context`` itself, on an event loop it owns, and offers a synchronous
``request``: tests stay plain functions.
"""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from app.core.config import Settings

SMOKE_MODEL = "netvlad_poolformer_s12_224"
APP_MODELS = (SMOKE_MODEL, "netvlad_head", "nonlocal_pool")
CPU = ["CPUExecutionProvider"]
NPY = "application/x-npy"


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` as an npy body, written by ``np.save``."""
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=False)
    return buffer.getvalue()


def pool_npy(http: httpx.Client, op: str, x: np.ndarray, **params: str) -> np.ndarray:
    """/pool's npy result for ``op`` on ``x`` (the native route), asserted 200."""
    r = http.post(
        "/pool",
        params={"op": op, **params},
        content=npy_bytes(x),
        headers={"content-type": NPY, "accept": NPY},
    )
    assert r.status_code == 200, r.text
    return np.asarray(np.load(io.BytesIO(r.content), allow_pickle=False))


class AppClient:
    """An app with its lifespan entered, and a synchronous httpx client on it."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._lifespan: AbstractAsyncContextManager[Any] | None = None
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://poolserve.test")

    def start(self) -> AppClient:
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self._lifespan.__aenter__())
        return self

    def close(self) -> None:
        if self._lifespan is not None:
            self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def gather(self, *requests: tuple[str, str, dict[str, Any]]) -> list[httpx.Response]:
        """Send several requests concurrently (method, url, kwargs)."""

        async def send_all() -> list[httpx.Response]:
            calls = [self.http.request(m, u, **kw) for m, u, kw in requests]
            return list(await asyncio.gather(*calls))

        return self.loop.run_until_complete(send_all())


def create_app(settings: Settings) -> FastAPI:
    """The app factory, imported late so that collecting tests stays cheap."""
    from app.main import create_app as factory

    return factory(settings)


def app_settings(repository: Path, **overrides: Any) -> Settings:
    """Settings for tests: the given repository, CPU only unless overridden."""
    values: dict[str, Any] = {"model_repository": repository, "providers": CPU}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def app_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke descriptor, the NetVLAD head and the non-local pool, exported once."""
    from export.repository import export_repository

    out = tmp_path_factory.mktemp("model_repository")
    export_repository(out, models=list(APP_MODELS))
    return out


@pytest.fixture
def repository_copy(app_repository: Path, tmp_path: Path) -> Path:
    """A private copy of the repository that a test may tamper with."""
    copy = tmp_path / "repo"
    shutil.copytree(app_repository, copy)
    return copy


@pytest.fixture
def make_client(app_repository: Path) -> Iterator[Callable[..., AppClient]]:
    """``make_client(**settings)`` starts an app; every one is closed after the test."""
    clients: list[AppClient] = []

    def make(repository: Path | None = None, **overrides: Any) -> AppClient:
        settings = app_settings(repository or app_repository, **overrides)
        client = AppClient(create_app(settings)).start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def app_client(app_repository: Path) -> Iterator[AppClient]:
    """One started app per test module, with the default settings (CPU providers)."""
    client = AppClient(create_app(app_settings(app_repository))).start()
    yield client
    client.close()
