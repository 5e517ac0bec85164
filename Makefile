# poolserve: `make serve` runs the service, `make test` is the one test command (CI calls it
# through .ci/run, after `make docker-check` and `make smoke`).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CUDA_STAMP := $(VENV)/.cuda-installed
# On a host whose driver answers nvidia-smi, `make serve` adds the CUDA 13 / cuDNN 9 wheels.
GPU := $(shell nvidia-smi -L 2>/dev/null | head -n 1)
# Typed packages; app/, bench/ and examples/ join when they exist.
TYPED := models export tests scripts $(wildcard app bench examples)

.PHONY: install test lint typecheck contracts unit export serve smoke docker-check bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[export,dev,ray]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy $(TYPED)

# The import layers (pyproject's [tool.importlinter]): no torch in app or export.runtime.
contracts: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck contracts unit

# The default models into model_repository/, unless a verified manifest already has them.
# POOLSERVE_EXPORT_MODELS / POOLSERVE_EXPORT_WEIGHTS choose models and checkpoints.
export: $(STAMP)
	PYTHON=$(BIN)/python scripts/export_models.sh

$(CUDA_STAMP): $(STAMP)
	$(BIN)/python -m pip install 'onnxruntime-gpu[cuda,cudnn]>=1.31,<1.32'
	touch $(CUDA_STAMP)

# CUDA where there is a GPU, else CPU (the service logs which provider each model got).
serve: export $(if $(GPU),$(CUDA_STAMP))
	PYTHON=$(BIN)/python scripts/serve.sh

smoke: $(STAMP)
	PYTHON=$(BIN)/python scripts/smoke.sh

# Everything about the container that can be checked without a Docker engine.
docker-check: $(STAMP)
	$(BIN)/hadolint Dockerfile
	docker-compose -f docker-compose.yml config --quiet
	docker-compose -f docker-compose.yml --profile cpu config --quiet

# Every throughput table (bench/RESULTS.md), server runs included; `make bench-quick` smokes it.
bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
