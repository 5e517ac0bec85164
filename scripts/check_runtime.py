"""Build-time check of the runtime image: what can be proven without a GPU.

    python scripts/check_runtime.py [--cuda]

Always: torch is not installed, and onnxruntime is the one onnxruntime distribution (a CPU
`onnxruntime` next to `onnxruntime-gpu` shadows it and runs silently on CPU).
With --cuda: onnxruntime is the GPU build, every shared library its CUDA provider links
against resolves from the nvidia wheels (serve.sh's LD_LIBRARY_PATH) except libcuda.so.1, the
driver, which the NVIDIA Container Toolkit mounts at run time, and cuDNN 9 is there.
Exit 0 when every check holds, else 1 with one line per failure.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from nvidia_libs import nvidia_lib_dirs

DRIVER_LIBS = {"libcuda.so.1"}  # from the host driver, never from a wheel
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
)


def torch_absent() -> list[str]:
    return ["torch is installed in the runtime image"] if importlib.util.find_spec("torch") else []


def one_onnxruntime() -> list[str]:
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return [] if len(found) == 1 else [f"expected one onnxruntime distribution, found {found}"]


def unresolved_libraries(library: Path, search: str) -> list[str]:
    env = {**os.environ, "LD_LIBRARY_PATH": search}
    out = subprocess.run(["ldd", str(library)], env=env, capture_output=True, text=True).stdout
    missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
    return [name for name in missing if name not in DRIVER_LIBS]


def cuda_ready() -> list[str]:
    import onnxruntime  # here, so that the other checks still report when this import fails

    problems = []
    if onnxruntime.get_device() != "GPU":
        problems.append(f"onnxruntime is the {onnxruntime.get_device()} build")
    dirs = nvidia_lib_dirs()
    search = ":".join(str(d) for d in dirs)
    provider = Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not provider.is_file():
        return [*problems, f"{provider} is missing"]
    missing = unresolved_libraries(provider, search)
    if missing:
        problems.append(f"the CUDA provider needs {missing}, found in none of {search or '(none)'}")
    if not any((d / "libcudnn.so.9").is_file() for d in dirs):
        problems.append(f"libcudnn.so.9 is in none of {search or '(none)'}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the runtime image without a GPU.")
    parser.add_argument("--cuda", action="store_true", help="also check the CUDA libraries")
    args = parser.parse_args(argv)
    problems = torch_absent() + one_onnxruntime() + (cuda_ready() if args.cuda else [])
    for problem in problems:
        sys.stderr.write(f"check_runtime: {problem}\n")
    if not problems:
        sys.stdout.write("check_runtime: ok\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
