#!/usr/bin/env bash
# The device side of a GPU session (docs/gpu-check.md): each verb is one `run` call, made
# back to back so the machine stays warm and /tmp keeps what the earlier calls left.
#
#   scripts/gpu_device.sh start [DIR]   first call: DIR/part1 + DIR/small; installs the small
#                                       wheels, starts the export of the torch-2.11-safe models
#                                       in the background (it outlives the call)
#   scripts/gpu_device.sh append N [DIR]   one call per middle part
#   scripts/gpu_device.sh run [DIR]     last call, with the last part and DIR/blob.sha256:
#                                       checks the blob, installs onnxruntime-gpu, completes
#                                       the repository, runs scripts/gpu_check.sh into $OUT
set -uo pipefail
cd "$(dirname "$0")/.."

verb="${1:-}"
shift || true
blob=/tmp/poolserve-blob
site=/tmp/poolserve-site     # the small wheels
ort_site=/tmp/poolserve-ort  # onnxruntime-gpu
repo=/tmp/poolserve-repo
models=(netvlad_poolformer_s12 netvlad_poolformer_s12_224 poolformer_s12 netvlad_head nonlocal_pool)

case "$verb" in
    start)
        dir="${1:-.gpu}"
        cat "$dir/part1" > "$blob"
        python3 -m pip install -q --no-deps --no-index --no-compile --target "$site" "$dir"/small/*.whl
        setsid nohup env PYTHONPATH="$site:$PWD" python3 -m export --out "$repo" --fp16 \
            --models "${models[@]}" > /tmp/poolserve-export.log 2>&1 < /dev/null &
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
        python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__)"
        ls -l "$blob"
        ;;
    append)
        cat "${2:-.gpu}/part$1" >> "$blob" && ls -l "$blob"
        ;;
    run)
        dir="${1:-.gpu}"
        last="$(find "$dir" -maxdepth 1 -name 'part*' | sort | tail -n 1)"
        cat "$last" >> "$blob"
        echo "$(cat "$dir/blob.sha256")  $blob" | sha256sum -c - || exit 9
        mkdir -p /tmp/poolserve-x && tar -xf "$blob" -C /tmp/poolserve-x || exit 9
        python3 -m pip install -q --no-deps --no-index --no-compile --target "$ort_site" \
            /tmp/poolserve-x/ort/*.whl || exit 9
        for _ in $(seq 1 150); do  # the background export, if it is still going
            [[ -f "$repo/manifest.json" ]] && break
            grep -q "^error" /tmp/poolserve-export.log && break
            sleep 2
        done
        grep -v "^  " /tmp/poolserve-export.log | tail -n 12
        PYTHONPATH="$site:$PWD" python3 scripts/merge_manifest.py "$repo" /tmp/poolserve-x/vgg || exit 9
        OUT="${OUT:-gpu_out}" PYTHON=python3 PYTHONPATH="$ort_site:$site" \
            scripts/gpu_check.sh --repository "$repo"
        ;;
    *)
        echo "usage: scripts/gpu_device.sh start|append N|run [DIR]" >&2
        exit 2
        ;;
esac
