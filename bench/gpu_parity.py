"""GPU parity (issue 17): every repository model and every /pool op lowering run on
onnxruntime's CUDA provider against its CPU provider, with I/O binding on and off, under the
CUDA EP's default options (TF32 on) and with TF32 off; every ``_fp16`` variant on CUDA
against its fp32 model on CPU. Bounds and why: docs/throughput.md, "GPU parity".

    python -m bench.gpu_parity [--repository DIR] [--providers P1,P2]

Prints one Markdown table per kind of subject; exits 1 when any check fails. Error is
``max |cuda - cpu| / max(1, max |cpu|)`` (absolute for descriptors, whose elements are at
most 1; relative for logits); integer outputs (indices) must be equal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from app.codecs.preprocess import Preprocessor
from app.inference.binding import run_with_binding
from app.inference.sessions import input_shapes
from bench.common import emit_table
from bench.ops import lowered_graphs, prepare
from export.fp16 import FP16_SUFFIX, MAX_ABS_ERROR, MIN_COSINE
from export.runtime.manifest import ModelEntry, load_manifest, model_path
from export.runtime.sessions import CUDA, create_session, cuda_provider_options
from models.pooling import list_pools

CPU = ["CPUExecutionProvider"]
OP_SHAPE = (2, 16, 28, 28)
Feeds = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Bound:
    """What a CUDA run may differ from the CPU run by."""

    max_error: float
    min_cosine: float | None = None


TF32_ON = Bound(1e-2, 0.9999)
"""TF32 rounds conv/matmul operands to 10 mantissa bits (unit roundoff 4.9e-4)."""
TF32_OFF = Bound(1e-4, 0.99999)
"""Full fp32 on both sides: only summation order differs."""
FP16 = Bound(MAX_ABS_ERROR, MIN_COSINE)
"""The export's own fp16 gate (export/fp16.py), now on the GPU."""


@dataclass(frozen=True)
class Measured:
    error: float
    cosine: float | None
    integers_equal: bool

    def within(self, bound: Bound) -> bool:
        if not self.integers_equal or self.error > bound.max_error:
            return False
        if bound.min_cosine is None or self.cosine is None:  # ops have no rows to compare
            return True
        return self.cosine >= bound.min_cosine

    def cell(self) -> str:
        text = f"{self.error:.1e}" + (f", cos {self.cosine:.7f}" if self.cosine else "")
        return text if self.integers_equal else text + ", INDICES DIFFER"


def compare(got: Sequence[np.ndarray], want: Sequence[np.ndarray], rows: bool) -> Measured:
    """Worst error over the outputs; cosine per output row when ``rows`` (models)."""
    error, cosine, equal = 0.0, None, True
    for g, w in zip(got, want, strict=True):
        if w.dtype.kind in "iub":
            equal = equal and g.shape == w.shape and bool(np.array_equal(g, w))
            continue
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        scale = max(1.0, float(np.abs(w64).max(initial=0.0)))
        error = max(error, float(np.abs(g64 - w64).max(initial=0.0)) / scale)
        if rows:
            g2, w2 = g64.reshape(len(g64), -1), w64.reshape(len(w64), -1)
            norms = np.linalg.norm(g2, axis=1) * np.linalg.norm(w2, axis=1)
            row_min = float(np.min(np.sum(g2 * w2, axis=1) / np.maximum(norms, 1e-30)))
            cosine = row_min if cosine is None else min(cosine, row_min)
    return Measured(error, cosine, equal)


def cuda_options(tf32: bool) -> dict[str, dict[str, str]]:
    return {CUDA: {**cuda_provider_options(), "use_tf32": "1" if tf32 else "0"}}


@dataclass(frozen=True)
class Subject:
    """One graph to check: its name, the graph (or file) and its feeds."""

    name: str
    kind: str
    model: onnx.ModelProto | Path
    feeds: Feeds
    rows: bool
    reference: Callable[[], list[np.ndarray]] | None = None
    """The CPU result to compare with; None runs ``model`` on CPU."""


def check(subject: Subject, providers: list[str], bounds: tuple[Bound, Bound]) -> list[str]:
    """A table row: the four CUDA runs (TF32 on/off x binding on/off) against CPU."""
    if subject.reference is not None:
        want = subject.reference()
    else:
        want = list(create_session(subject.model, CPU).run(None, dict(subject.feeds)))
    cells, ok, active = [], True, "-"
    for tf32, bound in zip((True, False), bounds, strict=True):
        session = create_session(subject.model, providers, provider_options=cuda_options(tf32))
        active = session.get_providers()[0]
        bound_run = run_with_binding(session, subject.feeds) if active == CUDA else None
        plain_run = list(session.run(None, dict(subject.feeds)))
        for got in (bound_run, plain_run):
            if got is None:
                cells.append("n/a (not on CUDA)")
                continue
            measured = compare(got, want, subject.rows)
            ok = ok and measured.within(bound)
            cells.append(measured.cell())
    ok = ok and (active == CUDA or CUDA not in providers)
    return [subject.name, subject.kind, active, *cells, "ok" if ok else "FAIL"]


def model_subjects(root: Path) -> list[tuple[Subject, tuple[Bound, Bound]]]:
    """Every model in the repository, on random inputs of its warm-up shape (batch 2)."""
    manifest = load_manifest(root)
    rng = np.random.default_rng(0)
    subjects = []
    for name, entry in manifest.models.items():
        feeds = _feeds(entry, rng)
        path = model_path(root, entry)
        if name.endswith(FP16_SUFFIX):
            fp32 = manifest.models[name.removesuffix(FP16_SUFFIX)]
            ref_path = model_path(root, fp32)

            def fp32_on_cpu(p: Path = ref_path, f: Feeds = feeds) -> list[np.ndarray]:
                return list(create_session(p, CPU).run(None, dict(f)))

            subject = Subject(name, "fp16 vs fp32 CPU", path, feeds, True, fp32_on_cpu)
            subjects.append((subject, (FP16, FP16)))
        else:
            subjects.append((Subject(name, "model", path, feeds, True), (TF32_ON, TF32_OFF)))
    return subjects


def _feeds(entry: ModelEntry, rng: np.random.Generator) -> dict[str, np.ndarray]:
    policy = (entry.cfg or {}).get("preprocess")
    preprocess = Preprocessor.from_dict(policy) if policy is not None else None
    shapes = input_shapes(entry, preprocess, batch=2)
    return {n: rng.standard_normal(shape).astype(dt) for n, (shape, dt) in shapes.items()}


def op_subjects() -> list[Subject]:
    """Every lowering kind of every op, on a (2, 16, 28, 28) input (or the size the op's
    params fix) and the op's extra inputs, with its first registry example."""
    x = np.random.default_rng(0).random(OP_SHAPE, dtype=np.float32)
    subjects = []
    for op in list_pools():
        prepared = prepare(op, x)
        for kind, model in lowered_graphs(op, prepared.inputs[0], prepared).items():
            if isinstance(model, str):
                continue  # no lowering for this preference (already chosen as the other)
            names = [i.name for i in model.graph.input]
            feeds = dict(zip(names, prepared.inputs, strict=True))
            subjects.append(Subject(op, kind, model, feeds, rows=False))
    return subjects


HEADER = ["subject", "kind", "session's first EP", "TF32 on, bound", "TF32 on, plain",
          "TF32 off, bound", "TF32 off, plain", "verdict"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--providers", default=f"{CUDA},CPUExecutionProvider")
    args = parser.parse_args(argv)
    providers = args.providers.split(",")
    model_rows = [check(s, providers, b) for s, b in model_subjects(args.repository)]
    emit_table("GPU parity: repository models against onnxruntime CPU", HEADER, model_rows)
    op_rows = [check(s, providers, (TF32_ON, TF32_OFF)) for s in op_subjects()]
    emit_table("GPU parity: /pool op lowerings against onnxruntime CPU", HEADER, op_rows)
    failed = [f"{r[0]} ({r[1]})" for r in model_rows + op_rows if r[-1] != "ok"]
    sys.stdout.write(f"\nparity: {len(failed)} failed {failed}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
