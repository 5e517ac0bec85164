"""Defaults that follow the execution provider that really runs: batching, concurrency and
intra-op threads left unset are chosen here, once, before any model loads.

On CPU, onnxruntime takes almost all of the server's CPU and a batch costs about its images'
sum, so batching is off and one inference runs per core. Each session may use every core
too: requests over a tenth of a budget run one at a time in the heavy lane (a 640x480
NetVLAD image is one), and a single-threaded run would leave the other cores idle; idle
intra-op threads sleep, never spin, so overlapping light runs cost little (measured in
bench/RESULTS.md, section 8). On CUDA a batch fills the GPU, so the service stays
batch-friendly and lets onnxruntime size its CPU threads. A value the user
sets always wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from app.core.config import Settings
from export.runtime.sessions import CUDA, cuda_session_works

CPU = "CPUExecutionProvider"
TUNED = ("batching", "max_concurrent_inferences", "intra_op_threads")
"""The settings whose unset value depends on the provider."""
CUDA_DEFAULTS = {"batching": True, "max_concurrent_inferences": 4, "intra_op_threads": 0}


@dataclass(frozen=True)
class Tuning:
    provider: str
    """The provider the defaults were chosen for."""
    values: dict[str, object]
    """Every tuned setting's value in effect."""
    defaulted: tuple[str, ...]
    """The tuned settings that were unset, so took the provider's default."""

    def describe(self) -> str:
        chosen = ", ".join(f"{name}={self.values[name]}" for name in self.defaulted)
        return f"defaults for {self.provider}: {chosen or 'none (every one is set)'}"


def cpu_defaults(cores: int) -> dict[str, object]:
    return {"batching": False, "max_concurrent_inferences": cores, "intra_op_threads": cores}


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which containers restrict)."""
    return max(1, len(os.sched_getaffinity(0)))


def active_provider(settings: Settings) -> str:
    """CUDA when it is wanted and a session really gets it, else CPU."""
    if settings.wants_cuda and cuda_session_works(settings.cuda_device_id):
        return CUDA
    return CPU


def tune(settings: Settings, provider: str, cores: int) -> tuple[Settings, Tuning]:
    """The settings with every unset tuned value filled for ``provider``."""
    defaults = CUDA_DEFAULTS if provider == CUDA else cpu_defaults(cores)
    unset = tuple(name for name in TUNED if getattr(settings, name) is None)
    resolved = settings.model_copy(update={name: defaults[name] for name in unset})
    values = {name: getattr(resolved, name) for name in TUNED}
    return resolved, Tuning(provider, values, unset)
