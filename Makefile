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
# The front end is built again only when one of its sources changed (the stamp sits in
# the ignored build output).
FRONTEND_BUILT := server_ext/gpushift_jupyter/labextension/.gpushift-built
FRONTEND_SOURCES := $(shell find server_ext/src server_ext/schema server_ext/style -type f 2>/dev/null) \
	server_ext/package.json server_ext/yarn.lock server_ext/tsconfig.json

.PHONY: demo test lint typecheck dockerlint controlplane frontend frontend-build browser screenshots unit bench clean

$(STAMP): pyproject.toml server_ext/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# The notebook side, Python only: `make frontend` builds and links the labextension
	# (with jlpm), so the editable install need not run npm.
	SKIP_JUPYTER_BUILDER=1 $(BIN)/pip install --quiet -e server_ext
	touch $@

# The demo needs the front end built, nothing more: no jest here, and no rebuild unless
# its sources changed (FRONTEND_BUILT); hack/demo.py builds the control plane's binaries
# itself when they are missing. Only the demo's own lines reach the terminal.
demo: $(STAMP) $(FRONTEND_BUILT)
	@$(BIN)/python hack/demo.py

test: lint typecheck dockerlint controlplane frontend browser
	server_ext/hack/test-browsers.sh
	server_ext/hack/test-e2e-browser.sh
	$(BIN)/pytest -ra --durations=15 -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	PYTHONPATH=testing $(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy --strict -p gpushift_core -p gpushift_webhook -p gpushift_certs -p gpushift_sidecar
	$(BIN)/mypy --strict -p gpushift_jupyter
	$(BIN)/mypy --strict testing/gpushift_testing
	MYPYPATH=testing:tests $(BIN)/mypy --strict bench

dockerlint: $(STAMP)
	$(BIN)/hadolint Dockerfile.webhook Dockerfile.sidecar Dockerfile.notebook

controlplane:
	hack/build-controlplane.sh

# The JupyterLab extension: npm packages, TypeScript build, linked into .venv.
$(FRONTEND_BUILT): $(STAMP) $(FRONTEND_SOURCES)
	@server_ext/hack/test-frontend.sh --build
	@touch $@

frontend-build: $(FRONTEND_BUILT)

# The build (when needed) and the unit tests (jest); `make test` runs it.
frontend: $(FRONTEND_BUILT)
	server_ext/hack/test-frontend.sh --jest

# The README's pictures (server_ext/ui-tests/screenshots/), regenerated on purpose: the
# browser tests on the test pods and the end-to-end moves write them there (every other
# run writes to the ignored ui-tests/screenshots-latest/). Review and commit the result.
screenshots: $(STAMP) controlplane browser $(FRONTEND_BUILT)
	GPUSHIFT_SCREENSHOTS=$(CURDIR)/server_ext/ui-tests/screenshots server_ext/hack/test-frontend.sh --browser
	GPUSHIFT_SCREENSHOTS=$(CURDIR)/server_ext/ui-tests/screenshots server_ext/hack/test-e2e-browser.sh

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
	$(BIN)/python bench/checkpoint_storage.py
	$(BIN)/python bench/sqlite_pages.py
	$(BIN)/python bench/background_checkpoint.py
	$(BIN)/python bench/server_start.py
	$(BIN)/python bench/e2e_migration.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
