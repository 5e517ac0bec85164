#!/usr/bin/env bash
# Start the service (`python -m app`, uvicorn; every setting from POOLSERVE_* variables).
# The Dockerfile's entrypoint, `make serve`, `make smoke` and CI all run this one script.
#
#   PYTHON  interpreter with poolserve installed (default: python)
set -euo pipefail

python="${PYTHON:-python}"

# onnxruntime-gpu[cuda,cudnn] installs CUDA and cuDNN as nvidia-* wheels, which the dynamic
# loader does not search. Put their lib folders on LD_LIBRARY_PATH so that the CUDA provider
# finds them in every uvicorn worker process. Without those wheels this adds nothing.
nvidia_libs="$("$python" - <<'PY'
import importlib.util
from pathlib import Path

spec = importlib.util.find_spec("nvidia")
roots = list(spec.submodule_search_locations or []) if spec else []
print(":".join(str(d) for root in roots for d in sorted(Path(root).glob("*/lib")) if d.is_dir()))
PY
)"
if [[ -n "$nvidia_libs" ]]; then
    export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

exec "$python" -m app "$@"
