"""Provider-dependent defaults: unset batching, concurrency and intra-op threads follow the
provider that really runs; a value the user sets always wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.config import Settings
from app.inference.tuning import CPU, tune, usable_cores
from export.runtime.sessions import CUDA


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_cpu_defaults_scale_with_cores(cores: int) -> None:
    resolved, tuning = tune(Settings(), CPU, cores)
    assert (resolved.batching, resolved.max_concurrent_inferences, resolved.intra_op_threads) == (
        False, cores, cores
    )  # fmt: skip
    assert tuning.defaulted == ("batching", "max_concurrent_inferences", "intra_op_threads")
    assert "CPUExecutionProvider" in tuning.describe()


def test_cuda_defaults_stay_batch_friendly() -> None:
    resolved, tuning = tune(Settings(), CUDA, 2)
    assert resolved.batching is True
    assert resolved.max_concurrent_inferences == 4
    assert resolved.intra_op_threads == 0
    assert tuning.provider == CUDA


def test_settings_the_user_gives_win() -> None:
    given = Settings(batching=True, intra_op_threads=3)
    resolved, tuning = tune(given, CPU, 8)
    assert resolved.batching is True
    assert resolved.intra_op_threads == 3
    assert resolved.max_concurrent_inferences == 8
    assert tuning.defaulted == ("max_concurrent_inferences",)
    assert tuning.values == {
        "batching": True, "max_concurrent_inferences": 8, "intra_op_threads": 3
    }  # fmt: skip


def test_usable_cores_is_the_affinity() -> None:
    import os

    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1


def test_models_reports_the_applied_defaults(make_client, app_repository: Path) -> None:
    client = make_client(max_concurrent_inferences=3)
    tuning = client.get("/models").json()["tuning"]
    assert tuning["provider"] == CPU  # CPU-only test settings
    assert tuning["values"]["max_concurrent_inferences"] == 3
    assert tuning["values"]["batching"] is False
    assert "max_concurrent_inferences" not in tuning["defaulted"]
    assert set(tuning["defaulted"]) == {"batching", "intra_op_threads"}
