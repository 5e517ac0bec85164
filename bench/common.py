"""Timing and table helpers shared by the bench scripts."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def time_call(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(times: Sequence[float]) -> float:
    return statistics.median(times)


def emit_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Markdown table on stdout (paste-ready for RESULTS.md)."""
    lines = [f"\n### {title}\n", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    sys.stdout.write("\n".join(lines) + "\n")


def served_parser(description: str | None, quick_help: str) -> argparse.ArgumentParser:
    """The options of every bench that starts the server: --quick, --repository, --providers."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--providers", default="CPUExecutionProvider")
    return parser
