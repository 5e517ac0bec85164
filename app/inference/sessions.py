"""The repository's models as onnxruntime sessions: verified, provider-checked, warmed up.

onnxruntime-gpu falls back to CPU when CUDA cannot load and only logs it, so every session's
``get_providers()`` is read back: a CUDA-wanted session that runs on CPU is a loud warning,
or a start-up failure with ``require_cuda``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from app.codecs.preprocess import Preprocessor
from app.core.config import Settings
from export.runtime.manifest import (
    Manifest,
    ManifestError,
    ModelEntry,
    model_path,
    verify_repository,
)
from export.runtime.model_cost import ModelCost, model_cost
from export.runtime.sessions import CUDA, ProviderOptions, create_session, cuda_provider_options

log = logging.getLogger("poolserve")
WARMUP_SPATIAL = 8
"""Symbolic spatial dims of pool-op models are warmed up at this size (or min_hw)."""
REFERENCE_HW = (224, 224)
"""Where a model that takes any input size is measured per pixel."""


class StartupError(RuntimeError):
    """The service cannot start as configured (the message says why)."""


@dataclass(frozen=True)
class LoadedModel:
    """One repository model ready to run."""

    name: str
    entry: ModelEntry
    session: ort.InferenceSession
    providers: tuple[str, ...]
    preprocess: Preprocessor | None
    cost: ModelCost | None = None
    """An image model's compute and memory per input pixel (admission control)."""

    @property
    def provider(self) -> str:
        return self.providers[0]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.entry.inputs)

    @property
    def dim(self) -> int | None:
        last = self.entry.outputs[0].shape[-1]
        return last if isinstance(last, int) else None


def check_providers(name: str, active: list[str], settings: Settings) -> None:
    """Warn (or, with ``require_cuda``, refuse) when CUDA was wanted but is not first."""
    on_cuda = bool(active) and active[0] == CUDA
    if settings.require_cuda and not on_cuda:
        raise StartupError(
            f"{name}: POOLSERVE_REQUIRE_CUDA is set but the session runs on {active}; "
            f"configured providers {settings.providers} (is the CUDA/cuDNN runtime installed "
            "and a GPU visible?)"
        )
    if settings.wants_cuda and not on_cuda:
        log.warning(
            "!!! %s: CUDAExecutionProvider was requested but the session fell back to %s; "
            "inference runs on CPU. Set POOLSERVE_REQUIRE_CUDA=1 to refuse this. !!!",
            name,
            active,
        )


def provider_options(settings: Settings) -> ProviderOptions:
    """The CUDA EP's options from the settings (other providers take their defaults)."""
    return {
        CUDA: cuda_provider_options(
            device_id=settings.cuda_device_id,
            cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
            arena_extend_strategy=settings.cuda_arena_extend_strategy,
            gpu_mem_limit_bytes=settings.cuda_gpu_mem_limit_bytes,
        )
    }


def open_session(
    model: Any, settings: Settings, name: str, *, one_off: bool = False
) -> tuple[ort.InferenceSession, list[str]]:
    """A session with the configured providers and the providers it really got.

    ``one_off`` graphs (/pool's) run at whatever sizes clients send: no memory pattern, so
    the run's arena shrinkage really returns their peak (docs/throughput.md).
    """
    session = create_session(
        model,
        settings.providers,
        settings.intra_op_threads or 0,  # unset only before tune(): let onnxruntime choose
        provider_options=provider_options(settings),
        cpu_mem_arena=settings.cpu_mem_arena,
        mem_pattern=not one_off,
    )
    active = list(session.get_providers())
    check_providers(name, active, settings)
    return session, active


def input_shapes(
    entry: ModelEntry, preprocess: Preprocessor | None, batch: int = 1
) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    """A valid (shape, dtype) per input: symbolic batch -> ``batch``, symbolic spatial dims
    -> ``WARMUP_SPATIAL`` (or min_hw), an image model's pixels -> its size for a 224 image."""
    shapes = {}
    for spec in entry.inputs:
        dims = []
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                dims.append(d)
            elif i == 0:
                dims.append(batch)
            else:
                dims.append(max(entry.min_hw or 1, WARMUP_SPATIAL))
        if preprocess is not None and len(dims) == 4:
            side = max(entry.min_hw or 1, 224)
            dims[2:] = preprocess.output_hw(side, side)
        shapes[spec.name] = (tuple(dims), np.dtype(spec.dtype))
    return shapes


def warmup_feeds(loaded: LoadedModel, batch: int = 1) -> dict[str, np.ndarray]:
    """Zeros of a valid shape for each input: what the model will really be fed."""
    shapes = input_shapes(loaded.entry, loaded.preprocess, batch)
    return {name: np.zeros(shape, dtype) for name, (shape, dtype) in shapes.items()}


def load_model(root: Path, name: str, entry: ModelEntry, settings: Settings) -> LoadedModel:
    path = model_path(root, entry)
    session, active = open_session(path, settings, name)
    policy = (entry.cfg or {}).get("preprocess")
    preprocess = Preprocessor.from_dict(policy) if policy is not None else None
    cost = None
    if preprocess is not None:
        cost = model_cost(onnx.load(str(path)), preprocess.fixed_hw or REFERENCE_HW)
    loaded = LoadedModel(name, entry, session, tuple(active), preprocess, cost)
    start = time.perf_counter()
    batches = warmup_batches(active, settings) if preprocess is not None else [1]
    for batch in batches:
        session.run(None, warmup_feeds(loaded, batch))
    log.info(
        "%s: loaded on %s, warmed up at batch sizes %s in %.1f s",
        name, active, _span(batches), time.perf_counter() - start,
    )  # fmt: skip
    return loaded


def warmup_batches(active: list[str], settings: Settings) -> list[int]:
    """Batch sizes an image model runs before ready: 1, and what the batcher forms. On CUDA
    that is every size up to ``max_batch_size``, since cuDNN searches its convolution
    algorithms per input shape; elsewhere the largest, which sizes the memory arena."""
    top = settings.max_batch_size if settings.batching else 1
    if active and active[0] == CUDA:
        return list(range(1, top + 1))
    return sorted({1, top})


def _span(sizes: list[int]) -> str:
    return f"{sizes[0]}..{sizes[-1]}" if len(sizes) > 2 else ",".join(map(str, sizes))


def load_repository(settings: Settings) -> tuple[Manifest, dict[str, LoadedModel]]:
    """Verify every model's sha256, then create and warm up a session per model.

    Raises:
        StartupError: missing or tampered files, unknown names, or CUDA refused.
    """
    root = settings.model_repository
    names = list(settings.models) or None
    try:
        manifest = verify_repository(root, names)
    except ManifestError as exc:  # missing manifest, bad digest, unknown name
        raise StartupError(str(exc)) from exc
    loaded = {}
    for name in names or list(manifest.models):
        loaded[name] = load_model(root, name, manifest.models[name], settings)
    return manifest, loaded


def pick_default_model(
    settings: Settings, manifest: Manifest, loaded: dict[str, LoadedModel]
) -> str | None:
    """The configured default (it must be a loaded image model), else the manifest's when
    loaded, else the first loaded image model, else None (only /pool is served)."""
    images = [n for n, m in loaded.items() if m.preprocess is not None]
    if settings.default_model:
        if settings.default_model not in images:
            raise StartupError(
                f"default_model {settings.default_model!r} is not a loaded descriptor or "
                f"classifier (loaded image models: {images})"
            )
        return settings.default_model
    if manifest.default_model in images:
        return manifest.default_model
    return images[0] if images else None
