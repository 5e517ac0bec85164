#!/usr/bin/env bash
# Export the model repository if it is missing: the Dockerfile's build stage, `make serve`,
# `make smoke` and CI all run this one script.
#
#   POOLSERVE_MODEL_REPOSITORY  output folder (default: model_repository)
#   POOLSERVE_EXPORT_MODELS     models to export, space or comma separated
#                               (default: the exporter's default set)
#   POOLSERVE_EXPORT_WEIGHTS    NAME=PATH checkpoints, space or comma separated (default: none,
#                               every model gets its seeded init)
#   PYTHON                      interpreter with the `export` extra (default: python)
set -euo pipefail

out="${POOLSERVE_MODEL_REPOSITORY:-model_repository}"
python="${PYTHON:-python}"
models_list="${POOLSERVE_EXPORT_MODELS:-}"
weights_list="${POOLSERVE_EXPORT_WEIGHTS:-}"
read -r -a models <<<"${models_list//,/ }"
read -r -a weights <<<"${weights_list//,/ }"

args=(--out "$out" --if-missing)
if ((${#models[@]})); then
    args+=(--models "${models[@]}")
fi
if ((${#weights[@]})); then
    args+=(--weights "${weights[@]}")
fi

echo "export_models: $python -m export ${args[*]}" >&2
exec "$python" -m export "${args[@]}"
