"""scripts/gpu_check.sh on a host where onnxruntime cannot run CUDA: it stops at once with
a clear "no CUDA provider" message and exit 3, and leaves what it found in $OUT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


@pytest.mark.no_cuda
def test_gpu_check_stops_with_no_cuda_provider(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "gpu_check: no CUDA provider" in done.stderr
    found = (tmp_path / "providers.txt").read_text()
    assert "available providers:" in found
    assert sorted(p.name for p in tmp_path.iterdir()) == ["providers.txt"]  # nothing ran


def test_gpu_check_refuses_an_unknown_argument(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--bogus"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "unknown argument --bogus" in done.stderr
