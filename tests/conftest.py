"""Shared test set-up: deterministic torch; GPU markers that always say why they skip."""

import pytest
import torch

from export.runtime.sessions import cuda_session_works

torch.use_deterministic_algorithms(True, warn_only=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests need onnxruntime to run a session on CUDA (torch's view does not count:
    the service never imports it); ``no_cuda`` tests assert the CPU fallback, so a host where
    CUDA works skips them."""
    marked = [item for item in items if {"gpu", "no_cuda"} & set(item.keywords)]
    if not marked:
        return
    if cuda_session_works():
        skip, reason = "no_cuda", "asserts the CPU fallback; onnxruntime runs CUDA here"
    else:
        skip, reason = "gpu", "needs onnxruntime's CUDA provider; no session here runs on CUDA"
    for item in marked:
        if skip in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


# Property tests must not make CI flaky: the same examples on every run.
from hypothesis import settings  # noqa: E402

settings.register_profile("poolserve", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("poolserve")

# The service's fixtures (repository, in-process client): see tests/app_fixtures.py.
from tests.app_fixtures import app_client, app_repository, make_client, repository_copy  # noqa: E402, F401
