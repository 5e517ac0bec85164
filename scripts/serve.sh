#!/usr/bin/env bash
# Start the service (`python -m app`, uvicorn; every setting from POOLSERVE_* variables).
# The Dockerfile's entrypoint, `make serve`, `make smoke` and CI all run this one script.
#
#   PYTHON  interpreter with poolserve installed (default: python)
set -euo pipefail
# From the checkout (or /opt/poolserve in the image), so `-m app` finds the package and a
# relative POOLSERVE_MODEL_REPOSITORY means the same folder wherever this is called from.
cd "$(dirname "$0")/.."

python="${PYTHON:-python}"

# CUDA and cuDNN wheels live where the dynamic loader does not look (see nvidia_libs.py).
nvidia_libs="$("$python" scripts/nvidia_libs.py)"
if [[ -n "$nvidia_libs" ]]; then
    export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# exec: python replaces this shell (PID 1 in the container), so SIGTERM reaches it and its
# bounded drain (POOLSERVE_DRAIN_TIMEOUT_S) runs. Flags pass through: serve.sh --help.
exec "$python" -m app "$@"
