"""Running a session through onnxruntime I/O binding, and choosing that path per session.

Without binding, ``session.run`` on a CUDA session copies each input to the device and each
output back inside the run. With it, inputs are bound from host memory and outputs are
allocated on the device by onnxruntime (their shape is resolved at run time), then copied
back once. An ``IOBinding`` is per-call state: a fresh one per run, never shared by threads.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from export.runtime.sessions import CUDA


def run_with_binding(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    device: str = "cuda",
    device_id: int = 0,
    options: ort.RunOptions | None = None,
) -> list[np.ndarray]:
    """Every output of one run, inputs bound from host, outputs on ``device``."""
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(array))
    for output in session.get_outputs():
        binding.bind_output(output.name, device, device_id)
    session.run_with_iobinding(binding, options)
    return list(binding.copy_outputs_to_cpu())


def binds(session: ort.InferenceSession, io_binding: bool) -> bool:
    """Whether runs of ``session`` go through I/O binding: on, and CUDA is its first EP."""
    providers = session.get_providers()
    return io_binding and bool(providers) and providers[0] == CUDA


def run_bound_or_plain(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    io_binding: bool,
    options: ort.RunOptions | None = None,
) -> list[np.ndarray]:
    """One run, bound on the session's GPU when ``binds``, else a plain ``session.run``."""
    if binds(session, io_binding):
        device_id = int(session.get_provider_options()[CUDA].get("device_id", 0))
        return run_with_binding(session, feeds, "cuda", device_id, options)
    return list(session.run(None, dict(feeds), options))
