"""GPU, in process (issue 17): a descriptor model's images/s per batch size on onnxruntime's
CUDA provider (I/O binding on and off, the fp32 and ``_fp16`` exports), against torch CUDA
eager on the same weights (fp32, and fp16 autocast), and on the TensorRT provider where it
loads. Inputs are preprocessed float32 batches in host memory; every path's time includes
the host -> device copy of the input and the copy of the descriptors back.

    python -m bench.gpu_models [--repository DIR] [--models A,B] [--batches 1,8,32]

Before timing, each path's output is compared with onnxruntime CUDA fp32 (``max |d|``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from app.codecs.preprocess import Preprocessor
from app.inference.binding import run_bound_or_plain
from bench.common import emit_table, median, time_call
from export.fp16 import fp16_name
from export.runtime.manifest import load_manifest, model_path
from export.runtime.sessions import CUDA, cuda_provider_options
from models.zoo import build_model

TENSORRT = "TensorrtExecutionProvider"
Run = Callable[[np.ndarray], np.ndarray]
DEFAULT_MODELS = "netvlad_poolformer_s12,netvlad_poolformer_s12_224"


def ort_path(path: Path, providers: Sequence[object], io_binding: bool, want: str) -> Run | str:
    """A run over one session, or why not: the session did not get provider ``want``."""
    if want not in ort.get_available_providers():
        return f"{want} is not in this onnxruntime build"
    session = ort.InferenceSession(str(path), providers=list(providers))
    if session.get_providers()[0] != want:
        return f"{want} did not load (session got {session.get_providers()})"
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return run_bound_or_plain(session, {name: x}, io_binding)[0]

    return run


def torch_path(name: str, entry_weights: str, half: bool) -> Run | str:
    if not torch.cuda.is_available():
        return "torch has no CUDA here"
    built = build_model(name)
    if built.provenance != entry_weights:
        raise RuntimeError(f"torch has {built.provenance}, the repository {entry_weights}")
    module = built.module.eval().cuda()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=half):
            out: torch.Tensor = module(torch.from_numpy(x).cuda())
        return out.float().cpu().numpy()

    return run


def paths(root: Path, name: str) -> dict[str, Run | str]:
    """Every path for one model: a run, or why it is not measured."""
    entry = load_manifest(root).models[name]
    cuda = [(CUDA, cuda_provider_options()), "CPUExecutionProvider"]
    fp32, fp16 = model_path(root, entry), _fp16_file(root, name)
    makers: dict[str, Callable[[], Run | str]] = {
        "onnxruntime CUDA fp32, I/O binding": lambda: ort_path(fp32, cuda, True, CUDA),
        "onnxruntime CUDA fp32, plain run": lambda: ort_path(fp32, cuda, False, CUDA),
        "onnxruntime CUDA fp16, I/O binding": lambda: (
            ort_path(fp16, cuda, True, CUDA) if fp16 else f"no {fp16_name(name)} exported"
        ),
        "torch CUDA eager fp32": lambda: torch_path(name, entry.weights, half=False),
        "torch CUDA eager fp16 autocast": lambda: torch_path(name, entry.weights, half=True),
    }
    for half in (False, True):
        trt = [(TENSORRT, {"trt_fp16_enable": str(half)}), *cuda]
        label = f"onnxruntime TensorRT {'fp16' if half else 'fp32'}"
        makers[label] = lambda t=trt: ort_path(fp32, t, False, TENSORRT)  # type: ignore[misc]
    found: dict[str, Run | str] = {}
    for label, make in makers.items():
        try:
            found[label] = make()
        except Exception as exc:  # a path that cannot run here is a row saying why
            found[label] = f"{type(exc).__name__}: {str(exc)[:80]}"
    return found


def _fp16_file(root: Path, name: str) -> Path | None:
    entry = load_manifest(root).models.get(fp16_name(name))
    return model_path(root, entry) if entry is not None else None


def model_rows(root: Path, name: str, batches: list[int], repeats: int) -> list[list[str]]:
    entry = load_manifest(root).models[name]
    assert entry.cfg is not None
    hw = Preprocessor.from_dict(entry.cfg["preprocess"]).output_hw(224, 224)
    rng = np.random.default_rng(0)
    found = paths(root, name)
    reference = found["onnxruntime CUDA fp32, I/O binding"]
    rows = []
    for batch in batches:
        x = rng.standard_normal((batch, 3, *hw)).astype(np.float32)
        want = reference(x) if callable(reference) else None
        base_s = None
        for label, run in found.items():
            if isinstance(run, str):
                rows.append([name, label, str(batch), "-", "-", "-", run])
                continue
            err = "-" if want is None else f"{np.abs(run(x) - want).max():.1e}"
            seconds = median(time_call(lambda r=run, a=x: r(a), repeats))  # type: ignore[misc]
            base_s = base_s or seconds  # the first path (ORT fp32, bound) is the baseline
            rows.append([name, label, str(batch), f"{seconds * 1e3:.2f}",
                         f"{batch / seconds:.1f}", f"{base_s / seconds:.2f}x", err])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for name in args.models.split(","):
        rows += model_rows(args.repository, name, batches, args.repeats)
    emit_table(
        "in-process descriptor models on the GPU (host arrays in and out)",
        ["model", "path", "batch", "ms per batch", "images/s", "vs ORT fp32 bound",
         "max |d| vs ORT fp32"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
