# The two commands of the README:
#   make demo   the main job: the local demo
#   make test   the whole test suite (what CI runs through .ci/run)
# Both set up everything they need on a fresh machine: a virtual environment in .venv
# with the project installed (editable) and its test tools, and the local Kubernetes
# control plane's binaries (cached outside the repository, built once).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck dockerlint controlplane unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/python hack/demo_webhook.py

test: lint typecheck dockerlint controlplane
	$(BIN)/pytest -ra --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict -p gpushift_webhook -p gpushift_certs -p gpushift_sidecar
	$(BIN)/mypy --strict testing/gpushift_testing

dockerlint: $(STAMP)
	$(BIN)/hadolint Dockerfile.webhook Dockerfile.sidecar Dockerfile.notebook

controlplane:
	hack/build-controlplane.sh

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/server

bench: $(STAMP)
	$(BIN)/python bench/webhook_load.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
