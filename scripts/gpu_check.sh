#!/usr/bin/env bash
# The GPU proof (issue 17) as one prepared run on a CUDA host: provider check, GPU tests,
# parity on CUDA against CPU, and the GPU benchmarks. Every step writes its own file under
# $OUT as it goes, so the figures of the steps that ran come back even if a later one fails.
#
#   scripts/gpu_check.sh [--wheels DIR] [--repository DIR]
#
#   --wheels DIR       pip-install every wheel in DIR (onnxruntime-gpu 1.31 for this Python,
#                      and whatever else is missing) into a private folder put first on
#                      PYTHONPATH, without dependencies or an index
#   --repository DIR   model repository (default model_repository); the default models and
#                      their fp16 variants are exported into it when missing
#   PYTHON             interpreter (default python3)     OUT   results folder (default gpu_out)
#
# Stops with exit 3 and "no CUDA provider" when onnxruntime cannot run a session on CUDA;
# otherwise runs every step and exits 1 if any failed. Tolerances: docs/throughput.md.
set -uo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
out="${OUT:-gpu_out}"
repository="model_repository"
wheels=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        --repository) repository="$2"; shift 2 ;;
        *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ -n "$wheels" ]]; then
    site="$(mktemp -d)/site"
    "$python" -m pip install -q --no-deps --no-index --no-compile --target "$site" "$wheels"/*.whl \
        || { echo "gpu_check: installing the wheels in $wheels failed" >&2; exit 2; }
    export PYTHONPATH="$site:$PYTHONPATH"
fi
# CUDA and cuDNN from the nvidia-* wheels, as scripts/serve.sh does for the service.
nvidia_libs="$("$python" scripts/nvidia_libs.py)"
export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# 1. The provider check: listed is not enough (onnxruntime-gpu lists CUDA on any host).
{ nvidia-smi -L 2>&1 || echo "nvidia-smi: no GPU listed"; } | tee "$out/providers.txt"
"$python" - <<'EOF' 2>&1 | tee -a "$out/providers.txt"
import sys
import onnxruntime as ort
from export.runtime.sessions import CUDA, cuda_session_works
print(f"python {sys.version.split()[0]}, onnxruntime {ort.__version__} at {ort.__file__}")
print("available providers:", ort.get_available_providers())
if not cuda_session_works():
    print(f"a session asked for {CUDA} runs on CPU")
    sys.exit(3)
print("a session runs on", CUDA)
EOF
status=${PIPESTATUS[0]}
if [[ $status -eq 3 ]]; then
    echo "gpu_check: no CUDA provider: onnxruntime cannot run a session on" \
        "CUDAExecutionProvider here (its warning is in $out/providers.txt); nothing measured" >&2
fi
[[ $status -eq 0 ]] || exit "$status"

failed=()
step() {  # step NAME SECONDS FILE COMMAND...: run it bounded in time, tee'd to $out/FILE
    local name=$1 seconds=$2 file=$3 started=$SECONDS
    shift 3
    echo "=== gpu_check: $name" | tee -a "$out/$file"
    timeout "$seconds" "$@" 2>&1 | tee -a "$out/$file"
    local rc=${PIPESTATUS[0]}
    echo "=== gpu_check: $name: exit $rc after $((SECONDS - started)) s" | tee -a "$out/$file"
    [[ $rc -eq 0 ]] || failed+=("$name")
}

step "export" 300 export.txt "$python" -m export --out "$repository" --fp16 --if-missing
step "GPU and provider tests" 300 pytest.txt "$python" -m pytest -p no:cacheprovider -q \
    tests/test_runtime_options.py tests/test_io_binding.py
step "service GPU tests" 300 pytest.txt "$python" -m pytest -p no:cacheprovider -q \
    -m "gpu or no_cuda" tests/test_app_service.py
step "parity" 300 parity.md "$python" -m bench.gpu_parity --repository "$repository"
step "in-process models" 300 models.md "$python" -m bench.gpu_models --repository "$repository"
step "/pool 64 MB" 120 pool.md "$python" -m bench.pool_bandwidth --gpu --no-http
step "/descriptor under load" 420 descriptor.md "$python" -m bench.descriptor \
    --repository "$repository" --providers CUDAExecutionProvider,CPUExecutionProvider \
    --models netvlad_poolformer_s12,netvlad_poolformer_s12_224 --scale 4 --batch-sizes 8,32 \
    --configs "batching=0;batching=1;batching=1,max_batch_size=32"

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "gpu_check: failed steps: ${failed[*]}" >&2
    exit 1
fi
echo "gpu_check: every step passed; tables in $out"
