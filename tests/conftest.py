"""Shared test set-up: deterministic torch, a GPU marker that always says why it skips."""

import pytest
import torch

torch.use_deterministic_algorithms(True, warn_only=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# Property tests must not make CI flaky: the same examples on every run.
from hypothesis import settings  # noqa: E402

settings.register_profile("poolserve", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("poolserve")

# The service's fixtures (repository, in-process client): see tests/app_fixtures.py.
from tests.app_fixtures import app_client, app_repository, make_client, repository_copy  # noqa: E402, F401
