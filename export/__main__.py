"""``python -m export``: write the model repository (see ``docs/model-repository.md``).

    python -m export --out model_repository [--models a b ...] [--prefer standard|custom]
                     [--weights name=path ...] [--if-missing] [--fp16]

Exit codes: 0 written (or already there with ``--if-missing``), 1 a model failed to export
or failed the parity gate (no manifest is left), 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from export.fp16 import fp16_name
from export.repository import (
    DEFAULT_MODELS,
    POOL_OP_MODELS,
    ModelReport,
    available_models,
    export_repository,
)
from export.runtime.errors import ExportError
from export.runtime.manifest import ManifestError, verify_repository

EXIT_OK, EXIT_GATE, EXIT_USAGE = 0, 1, 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export the pooling models to ONNX, gate each against torch, and write "
        "a Triton-layout model repository with manifest.json.",
    )
    parser.add_argument("--out", type=Path, default=Path("model_repository"), help="folder")
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help=f"models to export (default: {' '.join(DEFAULT_MODELS)}); "
        f"choices: {', '.join(available_models())}",
    )
    parser.add_argument("--prefer", choices=("standard", "custom"), default="standard")
    parser.add_argument(
        "--weights",
        nargs="+",
        default=[],
        metavar="NAME=PATH",
        help="checkpoint per model (safetensors or torch file); others are seeded",
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when a manifest whose files verify already covers the models",
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="also write <name>_fp16 (float16 inside, float32 inputs and outputs) for each "
        "descriptor and classifier, gated by cosine similarity to torch",
    )
    return parser.parse_args(argv)


def parse_weights(pairs: Sequence[str]) -> dict[str, Path]:
    weights = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--weights takes NAME=PATH, got {pair!r}")
        weights[name] = Path(path)
    return weights


def expected_names(models: Sequence[str], fp16: bool) -> list[str]:
    """The manifest entries an export of ``models`` writes (fp16 variants included)."""
    halves = [fp16_name(m) for m in models if fp16 and m not in POOL_OP_MODELS]
    return [*models, *halves]


def already_there(out: Path, models: Sequence[str], prefer: str) -> bool:
    """A manifest in ``out`` lists every model, with the same preference, files verified."""
    try:
        manifest = verify_repository(out, list(models))
    except ManifestError:
        return False
    return manifest.prefer == prefer


def say(line: str, stream: TextIO = sys.stdout) -> None:
    """The CLI's output: one line, flushed (an export takes minutes)."""
    stream.write(line + "\n")
    stream.flush()


def print_report(report: ModelReport) -> None:
    entry = report.entry
    cosine = entry.parity.min_cosine
    extra = f"  min cosine {cosine:.7f}" if cosine is not None else ""
    say(
        f"{report.name:<28} {report.seconds:7.1f} s  parity {entry.parity.max_abs_error:.2e}  "
        f"{entry.bytes / 1e6:8.2f} MB{extra}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    models = list(args.models or DEFAULT_MODELS)
    try:
        weights = parse_weights(args.weights)
    except ValueError as exc:
        say(f"error: {exc}", sys.stderr)
        return EXIT_USAGE
    wanted = expected_names(models, args.fp16)
    if args.if_missing and not weights and already_there(args.out, wanted, args.prefer):
        say(f"{args.out}: manifest already covers {', '.join(wanted)}; nothing to do")
        return EXIT_OK
    # torch's exporter warns about every torchvision op it cannot register.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    start = time.perf_counter()
    try:
        export_repository(
            args.out, models, args.prefer, weights, fp16=args.fp16, on_model=print_report
        )
    except ExportError as exc:
        say(f"error: {exc}\nno manifest written in {args.out}", sys.stderr)
        return EXIT_GATE
    except ValueError as exc:  # unknown model, misplaced or unreadable weights
        say(f"error: {exc}", sys.stderr)
        return EXIT_USAGE
    say(f"wrote {args.out} ({len(wanted)} models) in {time.perf_counter() - start:.1f} s")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
