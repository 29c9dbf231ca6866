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

.PHONY: demo test lint typecheck dockerlint controlplane frontend browser unit bench clean

$(STAMP): pyproject.toml server_ext/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# The notebook side, Python only: `make frontend` builds and links the labextension
	# (with jlpm), so the editable install need not run npm.
	SKIP_JUPYTER_BUILDER=1 $(BIN)/pip install --quiet -e server_ext
	touch $@

demo: $(STAMP) controlplane frontend
	$(BIN)/python hack/demo.py

test: lint typecheck dockerlint controlplane frontend browser
	server_ext/hack/test-frontend.sh --browser
	server_ext/hack/test-e2e-browser.sh
	$(BIN)/pytest -ra --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .
	PYTHONPATH=testing $(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy --strict -p gpushift_core -p gpushift_webhook -p gpushift_certs -p gpushift_sidecar
	$(BIN)/mypy --strict -p gpushift_jupyter
	$(BIN)/mypy --strict testing/gpushift_testing

dockerlint: $(STAMP)
	$(BIN)/hadolint Dockerfile.webhook Dockerfile.sidecar Dockerfile.notebook

controlplane:
	hack/build-controlplane.sh

# The JupyterLab extension: npm packages, TypeScript build, linked into .venv; jest.
frontend: $(STAMP)
	server_ext/hack/test-frontend.sh --unit

# Debian's chromium for the browser tests (Galata); a browser download fails here.
browser:
	command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/server

bench: $(STAMP)
	$(BIN)/python bench/webhook_load.py
	$(BIN)/python bench/classifier_speed.py
	$(BIN)/python bench/checkpoint_kishu.py
	$(BIN)/python bench/e2e_migration.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
