"""Print the lib folders of the installed nvidia-* wheels, joined for LD_LIBRARY_PATH.

onnxruntime-gpu[cuda,cudnn] brings CUDA and cuDNN as wheels under site-packages/nvidia/,
which the dynamic loader does not search. serve.sh puts these folders on LD_LIBRARY_PATH so
that the CUDA provider finds them in every uvicorn worker. Prints nothing without the wheels.
"""

import importlib.util
import sys
from pathlib import Path


def nvidia_lib_dirs() -> list[Path]:
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec else []
    return [d for root in roots for d in sorted(Path(root).glob("*/lib")) if d.is_dir()]


def main() -> int:
    sys.stdout.write(":".join(str(d) for d in nvidia_lib_dirs()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
