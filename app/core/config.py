"""Service settings: pydantic-settings, every field from the environment as ``POOLSERVE_<NAME>``
(an empty value means the default); ``python -m app`` adds flags and ``.env`` (app/core/cli.py).

List fields (``models``, ``providers``) take a JSON list or a comma-separated string.
The README's configuration table is generated from these fields and their descriptions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from export.runtime.sessions import CUDA

MiB = 1024 * 1024
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _split_list(value: Any) -> Any:
    """``"a,b"`` or ``'["a", "b"]'`` -> ``["a", "b"]``; lists pass through."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(",") if part.strip()]


StrList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Everything the service reads at start-up."""

    # An empty variable means the default (compose passes every setting, most of them empty).
    # The cli_* keys only shape `python -m app`'s flags (app/core/cli.py): Settings() itself
    # never reads sys.argv.
    model_config = SettingsConfigDict(
        env_prefix="POOLSERVE_",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        cli_prog_name="python -m app",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_show_env_vars=True,
    )

    model_repository: Path = Field(
        Path("model_repository"),
        description="Folder of the exported model repository (manifest.json beside the models).",
    )
    models: StrList = Field(
        default_factory=list,
        description="Models to load from the manifest; empty loads every model it lists.",
    )
    default_model: str = Field(
        "",
        description="Model /descriptor uses when a request names none; empty takes the "
        "manifest's default_model.",
    )
    providers: StrList = Field(
        default_factory=lambda: [CUDA, "CPUExecutionProvider"],
        description="onnxruntime execution providers in order of preference (comma list or "
        "JSON list).",
    )
    require_cuda: bool = Field(
        False,
        description="Refuse to start when a session does not run on CUDAExecutionProvider "
        "(instead of warning and running on CPU).",
    )
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        "EXHAUSTIVE",
        description="CUDA EP cuDNN convolution algorithm search: EXHAUSTIVE benchmarks every "
        "algorithm on the first run of each input shape (onnxruntime's default), HEURISTIC "
        "asks cuDNN's heuristics, DEFAULT takes the default algorithm.",
    )
    cuda_arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = Field(
        "kNextPowerOfTwo",
        description="How the CUDA EP's memory arena grows: in powers of two, or by exactly "
        "what is requested.",
    )
    cuda_gpu_mem_limit_bytes: int = Field(
        0, ge=0, description="Cap on the CUDA EP's memory arena in bytes; 0 = no limit."
    )
    cuda_device_id: int = Field(0, ge=0, description="GPU the CUDA EP runs on.")
    cpu_mem_arena: bool = Field(
        True,
        description="onnxruntime's CPU memory arena (SessionOptions.enable_cpu_mem_arena); "
        "off trades speed for a smaller resident size.",
    )
    io_binding: bool = Field(
        True,
        description="On CUDA sessions, bind inputs from host memory and outputs on the "
        "device, and copy the outputs back once per run (onnxruntime I/O binding).",
    )
    jpeg_draft: bool = Field(
        False,
        description="Let Pillow's JPEG decoder downscale by a power of two (draft mode) when "
        "the image is at least twice the model's input size; faster decode, descriptors "
        "within the tolerance in docs/throughput.md.",
    )
    intra_op_threads: int | None = Field(
        None,
        ge=0,
        description="onnxruntime intra-op threads per session; 0 lets it choose. Unset: one "
        "per usable core on CPU, 0 on CUDA.",
    )
    max_body_bytes: int = Field(
        256 * MiB, ge=1, description="Largest request body, counted on the stream (413 above)."
    )
    max_json_body_bytes: int = Field(
        32 * MiB,
        ge=1,
        description="Largest JSON request body, counted on the stream before it is parsed "
        "(a JSON tensor of max_json_tensor_elements takes about 20 MB).",
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Largest image (width x height), checked from the header before decoding.",
    )
    max_images: int = Field(32, ge=1, description="Most images in one /descriptor request.")
    max_request_pixels: int = Field(
        64_000_000,
        ge=1,
        description="Most pixels of all the images in one /descriptor request, from their "
        "headers before decoding (413 too_expensive).",
    )
    max_model_pixels: int = Field(
        4_000_000,
        ge=1,
        description="Resolution cap: most pixels one image may have after the model's "
        "preprocessing (it binds models that keep the input resolution); the compute and "
        "memory budgets may cap a model lower. 413 too_expensive, or scaled down for the "
        "downscale_models.",
    )
    downscale_models: StrList = Field(
        default_factory=list,
        description="Models whose images over their resolution cap are scaled down to it "
        "(aspect kept) instead of refused; the descriptor then describes a coarser image.",
    )
    max_descriptor_gflops: float = Field(
        200.0,
        gt=0,
        description="Estimated compute of one /descriptor request (its images' pixels times "
        "the model's FLOPs per pixel, read from its ONNX graph); about 1.1 s on 2 CPU cores "
        "per 200. 413 too_expensive above. Raise on a GPU host.",
    )
    max_descriptor_memory_bytes: int = Field(
        1024 * MiB,
        ge=1,
        description="Estimated activation memory of one /descriptor request (pixels times the "
        "model's peak bytes per pixel); 413 too_expensive above.",
    )
    max_tensor_elements: int = Field(
        33_554_432, ge=1, description="Most elements in one .npy tensor (and in a /pool result)."
    )
    max_json_tensor_elements: int = Field(
        1_048_576, ge=1, description="Most elements in one JSON tensor."
    )
    max_tensor_rank: int = Field(4, ge=1, description="Most dims in one tensor.")
    max_pool_work: int = Field(
        500_000_000,
        ge=1,
        description="Estimated elementary operations of one /pool request (about 0.25 to 1.6 s "
        "per 1e9 on one CPU core, by op); 413 too_expensive above. Raise on a GPU host.",
    )
    max_pool_memory_bytes: int = Field(
        1024 * MiB,
        ge=1,
        description="Estimated peak memory of one /pool run (its tensors, the input excluded); "
        "413 too_expensive above.",
    )
    max_graph_nodes: int = Field(
        3000,
        ge=1,
        description="Largest ONNX graph one /pool request may build (building takes about "
        "0.5 ms per node); 413 too_expensive above.",
    )
    max_result_bytes: int = Field(
        256 * MiB, ge=1, description="Largest /pool result; 413 output_too_large above."
    )
    max_json_result_elements: int = Field(
        1_048_576,
        ge=1,
        description="Most elements a JSON reply carries; larger results need "
        "Accept: application/x-npy (413 output_too_large).",
    )
    inference_deadline_s: float = Field(
        30.0,
        gt=0,
        description="Longest one inference may run; past it onnxruntime is told to stop, its "
        "slot is freed and the answer is 504 deadline_exceeded.",
    )
    max_concurrent_inferences: int | None = Field(
        None,
        ge=1,
        description="Inferences running at once (each on a worker thread). Unset: one per "
        "usable core on CPU, 4 on CUDA.",
    )
    max_concurrent_heavy: int = Field(
        1,
        ge=1,
        description="Expensive requests (estimated at over a tenth of a budget) running at "
        "once; the others wait in line, so cheap requests keep their slots.",
    )
    max_waiting: int = Field(
        64,
        ge=0,
        description="Requests allowed to wait for an inference slot; beyond it 503 with "
        "Retry-After.",
    )
    batching: bool | None = Field(
        None,
        description="Coalesce concurrent /descriptor requests for one model into one run "
        "(Triton-style dynamic batching). Unset: on with CUDA, off on CPU (where a batch "
        "costs its images' sum).",
    )
    max_batch_size: int = Field(8, ge=1, description="Most images in one batched run.")
    max_queue_delay_ms: float = Field(
        2.0,
        ge=0,
        description="Longest a /descriptor request waits for companions before its batch "
        "runs; a full batch runs at once.",
    )
    max_queue_size: int = Field(
        64,
        ge=1,
        description="Requests waiting per model to be batched; beyond it 503 with Retry-After.",
    )
    graph_cache_bytes: int = Field(
        256 * MiB,
        ge=1,
        description="Bytes of built /pool graphs kept as sessions, by their model size plus "
        "their estimated peak (least recently used out).",
    )
    pool_prefer: Literal["standard", "custom"] = Field(
        "standard",
        description="/pool lowering preference: standard ONNX ops first, or custom kernels.",
    )
    host: str = Field("127.0.0.1", description="Address `python -m app` binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port `python -m app` binds.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes.")
    max_connections: int = Field(
        256, ge=1, description="Connections served at once; beyond it 503 (uvicorn)."
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request line plus headers; 431 above."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time a client has to send its request line and headers."
    )
    body_timeout_s: float = Field(
        120.0, gt=0, description="Time a client has to send the whole request body."
    )
    keepalive_timeout_s: float = Field(
        5.0, gt=0, description="How long an idle keep-alive connection is kept open."
    )
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the Open Inference Protocol gRPC service (needs the grpc extra); "
        "unset = no gRPC.",
    )
    shared_memory: bool = Field(
        False,
        description="The OIP system shared-memory extension: clients on this host register "
        "/dev/shm regions that inputs are read from and outputs written to. Needs host on "
        "loopback and one worker (docs/oip.md says why).",
    )
    max_shm_regions: int = Field(16, ge=1, description="Most registered shared-memory regions.")
    max_shm_bytes: int = Field(
        2048 * MiB, ge=1, description="Most bytes of all registered shared-memory regions."
    )
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        "info", description="uvicorn and service log level."
    )
    # issue 15 (operability) ------------------------------------------------------------
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as text or as one JSON object per line (timestamp, level, "
        "request id, and for each request its route, status, latency and byte counts).",
    )
    api_keys: StrList = Field(
        default_factory=list,
        description="Bearer tokens a request must carry (`Authorization: Bearer <key>`); "
        "with none here and no api_key_file, no authentication.",
    )
    api_key_file: Path | None = Field(
        None,
        description="File of further bearer tokens, one per line (blank lines and # "
        "comments ignored), read at start-up.",
    )
    open_probes: bool = Field(
        True,
        description="With API keys set, /health/*, /v2/health/* and /metrics still answer "
        "without a key (for orchestrator probes and Prometheus).",
    )
    cors_allow_origins: StrList = Field(
        default_factory=list,
        description="Origins allowed to call the service from a browser (`*` for any); "
        "empty turns CORS off.",
    )
    cors_allow_methods: StrList = Field(
        default_factory=lambda: ["GET", "POST"],
        description="Methods a cross-origin request may use (with cors_allow_origins).",
    )
    cors_allow_headers: StrList = Field(
        default_factory=lambda: ["Authorization", "Content-Type", "Accept", "X-Request-ID"],
        description="Request headers a cross-origin request may send.",
    )
    cors_max_age_s: int = Field(
        600, ge=0, description="How long browsers may cache a CORS preflight answer."
    )
    drain_timeout_s: float = Field(
        20.0,
        gt=0,
        description="On SIGTERM, the longest in-flight requests may run before the process "
        "exits anyway; new requests are refused meanwhile. Keep compose's stop_grace_period "
        "above it.",
    )
    exif_models: StrList = Field(
        default_factory=list,
        description="Models whose images are turned upright by their EXIF orientation "
        "before preprocessing (`*` for all). The rest ignore the tag, as the reference "
        "pipelines (pytorch-NetVlad, Patch-NetVLAD, timm's eval transform) do.",
    )
    max_image_bytes: int = Field(
        64 * MiB,
        ge=1,
        description="Largest encoded image in a /descriptor request, in any body form (a "
        "base64 image in JSON is measured by its decoded length, before decoding).",
    )

    @field_validator(
        "models",
        "providers",
        "downscale_models",
        "api_keys",
        "cors_allow_origins",
        "cors_allow_methods",
        "cors_allow_headers",
        "exif_models",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("providers")
    @classmethod
    def _some_provider(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("providers must name at least one execution provider")
        return value

    @model_validator(mode="after")
    def _cuda_when_required(self) -> Settings:
        if self.require_cuda and not self.wants_cuda:
            raise ValueError(
                f"require_cuda is set but providers {self.providers} do not include "
                f"{CUDA}: add it to POOLSERVE_PROVIDERS or unset POOLSERVE_REQUIRE_CUDA"
            )
        return self

    @model_validator(mode="after")
    def _shared_memory_local(self) -> Settings:
        if self.shared_memory and (self.host not in LOOPBACK_HOSTS or self.workers != 1):
            raise ValueError(
                "shared_memory needs host on loopback (127.0.0.1, ::1 or localhost) and one "
                "worker: regions are files on this host, registered in one process"
            )
        return self

    @property
    def wants_cuda(self) -> bool:
        return CUDA in self.providers
