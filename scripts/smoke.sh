#!/usr/bin/env bash
# Smoke test of the shipped path: export the small repository with export_models.sh, start
# the service with serve.sh on a free loopback port, wait for /health/ready, check both
# endpoints with smoke_check.py, stop the server. Non-zero exit on any failure.
#
#   PYTHON                 interpreter with the `export` extra (default: .venv/bin/python)
#   SMOKE_MODEL            model to export and serve (default: netvlad_poolformer_s12_224)
#   SMOKE_READY_TIMEOUT    seconds to wait for readiness (default: 180)
#   SMOKE_REPOSITORY       reuse this repository folder instead of a fresh temporary one
set -euo pipefail
cd "$(dirname "$0")/.."

export PYTHON="${PYTHON:-.venv/bin/python}"
model="${SMOKE_MODEL:-netvlad_poolformer_s12_224}"
timeout="${SMOKE_READY_TIMEOUT:-180}"
workdir="$(mktemp -d)"
server_pid=""

cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

started=$SECONDS
repository="${SMOKE_REPOSITORY:-$workdir/model_repository}"
POOLSERVE_MODEL_REPOSITORY="$repository" POOLSERVE_EXPORT_MODELS="$model" \
    POOLSERVE_EXPORT_WEIGHTS="" scripts/export_models.sh
echo "smoke: export took $((SECONDS - started)) s"

port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$workdir/server.log"
started=$SECONDS
POOLSERVE_MODEL_REPOSITORY="$repository" POOLSERVE_MODELS="$model" \
    POOLSERVE_DEFAULT_MODEL="$model" POOLSERVE_HOST=127.0.0.1 POOLSERVE_PORT="$port" \
    POOLSERVE_WORKERS=1 scripts/serve.sh >"$log" 2>&1 &
server_pid=$!

if ! "$PYTHON" scripts/smoke_check.py "http://127.0.0.1:$port" --model "$model" \
    --ready-timeout "$timeout" --server-pid "$server_pid"; then
    echo "smoke: FAILED; server log:" >&2
    cat "$log" >&2
    exit 1
fi
echo "smoke: serve and checks took $((SECONDS - started)) s"
echo "smoke: passed"
