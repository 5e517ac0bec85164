# poolserve for a GPU host: `docker compose up --build` (see README, "Docker").
#
# Stage `export` installs CPU torch and runs scripts/export_models.sh, the script `make serve`
# and CI run, to write the ONNX model repository. Stage `runtime` serves it with
# onnxruntime-gpu, CUDA 13 and cuDNN 9 from pip wheels, and has no torch.
#
# Build arguments (all optional):
#   POOLSERVE_EXPORT_MODELS   models to export, space or comma separated (default: the
#                             exporter's default set)
#   POOLSERVE_EXPORT_WEIGHTS  NAME=PATH checkpoints, paths inside CHECKPOINTS_DIR
#                             (e.g. "poolformer_s12=checkpoints/poolformer_s12.pth.tar")
#   CHECKPOINTS_DIR           folder of the build context copied to checkpoints/ (default:
#                             checkpoints)

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS export

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/export-venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# The CPU wheel: the export runs on CPU, and PyPI's torch pulls in gigabytes of CUDA.
RUN python -m venv /opt/export-venv \
    && pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY models ./models
COPY export ./export
# torch==2.13.0 in the `export` extra is already met by 2.13.0+cpu, so pip keeps it.
# DL3013: this is the project itself; its dependencies are pinned in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[export]" \
    && python -c "import torch; assert torch.version.cuda is None, torch.__version__"

ARG CHECKPOINTS_DIR=checkpoints
COPY ${CHECKPOINTS_DIR} ./checkpoints
COPY scripts/export_models.sh ./scripts/
ARG POOLSERVE_EXPORT_MODELS=""
ARG POOLSERVE_EXPORT_WEIGHTS=""
RUN POOLSERVE_MODEL_REPOSITORY=/model_repository \
    POOLSERVE_EXPORT_MODELS="${POOLSERVE_EXPORT_MODELS}" \
    POOLSERVE_EXPORT_WEIGHTS="${POOLSERVE_EXPORT_WEIGHTS}" \
    bash scripts/export_models.sh


FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /opt/poolserve

# onnxruntime-gpu 1.31 is built for CUDA 13.0; its extras pin the matching CUDA 13 and
# cuDNN 9 wheels (cuBLAS comes with them). Own layer: the largest, and it rarely changes.
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]==1.31.1"

COPY pyproject.toml README.md ./
COPY models ./models
# export's runtime half only (export.runtime); the exporter stays in the export stage.
COPY export/__init__.py ./export/
COPY export/runtime ./export/runtime
COPY app ./app
COPY scripts ./scripts
# The base dependencies and the OIP gRPC extra, no torch (it is in the `export` extra).
# check_runtime.py proves it, and that the CUDA provider's libraries resolve, as far as a
# build without a GPU can.
RUN pip install --no-cache-dir --editable ".[grpc]" \
    && pip check \
    && python scripts/check_runtime.py --cuda

COPY --from=export /model_repository ./model_repository

RUN groupadd --system --gid 10001 poolserve \
    && useradd --system --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin poolserve
USER 10001:10001

ENV POOLSERVE_MODEL_REPOSITORY=/opt/poolserve/model_repository \
    POOLSERVE_HOST=0.0.0.0 \
    POOLSERVE_PORT=8000 \
    POOLSERVE_WORKERS=1
# HTTP (REST and OIP), and OIP gRPC when POOLSERVE_GRPC_PORT is set (compose sets 8001).
EXPOSE 8000 8001

# Model load and warm-up come before ready; compose may lengthen the start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "scripts/healthcheck.py"]

# bash, not the file's exec bit, which a Windows checkout can lose.
ENTRYPOINT ["bash", "scripts/serve.sh"]
