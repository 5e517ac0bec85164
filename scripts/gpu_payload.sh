#!/usr/bin/env bash
# Build, on the CPU machine, what a lent GPU machine needs for scripts/gpu_check.sh and cannot
# fetch itself (it has no network): docs/gpu-check.md says how the parts travel.
#
#   scripts/gpu_payload.sh [DIR]     (default .gpu, which git ignores)
#
# DIR/small/   wheels of the service's dependencies that the device image lacks (cp312)
# DIR/partN    one blob in pieces of at most 64 MB: onnxruntime-gpu 1.31 for cp312, repacked
#              with LZMA (205 MB instead of 256), and netvlad_vgg16 (+ fp16) exported here,
#              because the device's torch 2.11 refuses its dynamic H/W export
# DIR/blob.sha256
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${1:-.gpu}"
python="${PYTHON:-.venv/bin/python}"
rm -rf "$dir" && mkdir -p "$dir/small" "$dir/src/ort" "$dir/src/vgg"
download=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64)
"$python" -m pip download -q "${download[@]}" -d "$dir/src" 'onnxruntime-gpu>=1.31,<1.32'
"$python" -m pip download -q "${download[@]}" -d "$dir/small" \
    fastapi starlette pydantic pydantic-core pydantic-settings python-dotenv typing-inspection \
    annotated-types typing-extensions python-multipart uvicorn httptools \
    'onnxruntime-extensions>=0.15,<0.16' 'onnxconverter-common>=1.16,<1.17' orjson simplejpeg

"$python" - "$dir/src" <<'EOF'
import sys, zipfile
from pathlib import Path
src = next(Path(sys.argv[1]).glob("onnxruntime_gpu-*.whl"))
with zipfile.ZipFile(src) as whl, zipfile.ZipFile(Path(sys.argv[1], "ort", src.name), "w",
                                                  zipfile.ZIP_LZMA) as out:
    for info in whl.infolist():
        out.writestr(info.filename, whl.read(info))
EOF

"$python" -m export --out "$dir/src/vgg" --fp16 --models netvlad_vgg16
tar -cf "$dir/blob.tar" -C "$dir/src" ort vgg
sha256sum "$dir/blob.tar" | cut -d' ' -f1 > "$dir/blob.sha256"
head -c 58000000 "$dir/blob.tar" > "$dir/part1"  # rides with small/ in the first call
tail -c +58000001 "$dir/blob.tar" | split -b 64000000 --numeric-suffixes=2 -a 1 - "$dir/part"
rm -rf "$dir/src" "$dir/blob.tar"
ls -l "$dir" "$dir/small"
