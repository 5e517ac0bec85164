#!/usr/bin/env bash
# Start the service (`python -m app`, uvicorn; every setting from POOLSERVE_* variables).
# The Dockerfile's entrypoint, `make serve`, `make smoke` and CI all run this one script.
#
#   PYTHON  interpreter with poolserve installed (default: python)
set -euo pipefail

python="${PYTHON:-python}"

# CUDA and cuDNN wheels live where the dynamic loader does not look (see nvidia_libs.py).
nvidia_libs="$("$python" "$(dirname "$0")/nvidia_libs.py")"
if [[ -n "$nvidia_libs" ]]; then
    export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

exec "$python" -m app "$@"
