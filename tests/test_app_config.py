"""Settings: names, defaults, environment parsing (comma or JSON lists), descriptions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.core.config import Settings

EXPECTED_DEFAULTS = {
    "model_repository": Path("model_repository"),
    "models": [],
    "default_model": "",
    "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "require_cuda": False,
    "cudnn_conv_algo_search": "EXHAUSTIVE",
    "cuda_arena_extend_strategy": "kNextPowerOfTwo",
    "cuda_gpu_mem_limit_bytes": 0,
    "cuda_device_id": 0,
    "cpu_mem_arena": True,
    "io_binding": True,
    "jpeg_draft": False,
    "intra_op_threads": None,
    "max_body_bytes": 256 * 1024 * 1024,
    "max_json_body_bytes": 32 * 1024 * 1024,
    "max_image_pixels": 40_000_000,
    "max_images": 32,
    "max_request_pixels": 64_000_000,
    "max_model_pixels": 4_000_000,
    "downscale_models": [],
    "max_descriptor_gflops": 200.0,
    "max_descriptor_memory_bytes": 1024 * 1024 * 1024,
    "max_tensor_elements": 33_554_432,
    "max_json_tensor_elements": 1_048_576,
    "max_tensor_rank": 4,
    "max_pool_work": 500_000_000,
    "max_pool_memory_bytes": 1024 * 1024 * 1024,
    "max_graph_nodes": 3000,
    "max_result_bytes": 256 * 1024 * 1024,
    "max_json_result_elements": 1_048_576,
    "inference_deadline_s": 30.0,
    "max_concurrent_inferences": None,
    "max_concurrent_heavy": 1,
    "max_waiting": 64,
    "batching": None,
    "max_batch_size": 8,
    "max_queue_delay_ms": 2.0,
    "max_queue_size": 64,
    "graph_cache_bytes": 256 * 1024 * 1024,
    "pool_prefer": "standard",
    "host": "127.0.0.1",
    "port": 8000,
    "workers": 1,
    "max_connections": 256,
    "max_header_bytes": 64 * 1024,
    "header_timeout_s": 10.0,
    "body_timeout_s": 120.0,
    "keepalive_timeout_s": 5.0,
    "grpc_port": None,
    "shared_memory": False,
    "max_shm_regions": 16,
    "max_shm_bytes": 2048 * 2**20,
    "log_level": "info",
    "log_format": "text",
    "api_keys": [],
    "api_key_file": None,
    "open_probes": True,
    "cors_allow_origins": [],
    "cors_allow_methods": ["GET", "POST"],
    "cors_allow_headers": ["Authorization", "Content-Type", "Accept", "X-Request-ID"],
    "cors_max_age_s": 600,
    "drain_timeout_s": 20.0,
    "exif_models": [],
    "max_image_bytes": 64 * 1024 * 1024,
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in EXPECTED_DEFAULTS:
        monkeypatch.delenv(f"POOLSERVE_{name.upper()}", raising=False)


def test_defaults_and_names() -> None:
    assert Settings().model_dump() == EXPECTED_DEFAULTS


def test_every_field_is_described() -> None:
    assert all(field.description for field in Settings.model_fields.values())


@pytest.mark.parametrize(
    "raw",
    [
        "CPUExecutionProvider, CUDAExecutionProvider",
        '["CPUExecutionProvider", "CUDAExecutionProvider"]',
    ],
)
def test_list_settings_from_env_as_comma_list_or_json(monkeypatch, raw: str) -> None:
    monkeypatch.setenv("POOLSERVE_PROVIDERS", raw)
    monkeypatch.setenv("POOLSERVE_MODELS", "a,b")
    monkeypatch.setenv("POOLSERVE_REQUIRE_CUDA", "1")
    settings = Settings()
    assert settings.providers == ["CPUExecutionProvider", "CUDAExecutionProvider"]
    assert settings.models == ["a", "b"]
    assert settings.require_cuda is True


def test_bad_values_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("POOLSERVE_PROVIDERS", " , ")  # a list of none ("" means the default)
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(ValidationError):
        Settings(providers=["CPUExecutionProvider"], max_images=0)


@pytest.mark.parametrize(
    "overrides",
    [{"host": "0.0.0.0"}, {"host": "192.168.1.2"}, {"workers": 2}],
)
def test_shared_memory_needs_loopback_and_one_worker(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="shared_memory needs host on loopback"):
        Settings(shared_memory=True, **overrides)
    Settings(shared_memory=False, **overrides)  # fine without it
    Settings(shared_memory=True, host="::1")
