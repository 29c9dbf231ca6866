#!/usr/bin/env bash
# The browser tests (ui-tests/tests) against the LOWEST JupyterLab gpushift supports: the
# floor `jupyterlab>=X.Y` of server_ext/pyproject.toml, at its newest patch release, in a
# second virtual environment (.venv-lowest-jupyterlab: the project, that JupyterLab, the
# built labextension linked in), driven by Galata 5.Y (ui-tests/lowest-jupyterlab/; Galata
# 5.Y belongs to JupyterLab 4.Y, and its page helpers live in JupyterLab itself).
#
#   server_ext/hack/test-lowest-jupyterlab.sh                      # the default projects
#   server_ext/hack/test-lowest-jupyterlab.sh --project=gpu-pod    # arguments go to playwright
#
# Assumes the front end is built (hack/test-frontend.sh --unit) and Debian's chromium.
# The environment is made once and again only when a pyproject.toml changed. Its pods
# listen on ports 8898-8901 (GPUSHIFT_UI_PORT_BASE) and keep their files under
# ui-tests/lowest-jupyterlab/.jupyter-run/, so that it can run beside the suite of the
# current JupyterLab (hack/test-browsers.sh, what `make test` runs).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
VENV="${GPUSHIFT_LOWEST_VENV:-$ROOT/.venv-lowest-jupyterlab}"
TESTS="$HERE/ui-tests/lowest-jupyterlab"
export CI=1 PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

# The floor, as declared; Galata's minor must be the same (a raised floor changes both).
FLOOR="$(sed -n 's/^ *"jupyterlab>=\([0-9]*\.[0-9]*\),<5",.*/\1/p' "$HERE/pyproject.toml" | head -n 1)"
if [[ -z "$FLOOR" ]]; then
  echo "no jupyterlab>=X.Y,<5 floor found in server_ext/pyproject.toml" >&2
  exit 2
fi
MINOR="${FLOOR#*.}"
if ! grep -q "\"@jupyterlab/galata\": \"~5\.$MINOR\." "$TESTS/package.json"; then
  echo "ui-tests/lowest-jupyterlab/package.json: @jupyterlab/galata must be ~5.$MINOR.x for JupyterLab $FLOOR" >&2
  exit 2
fi
if [[ ! -f "$HERE/gpushift_jupyter/labextension/package.json" ]]; then
  echo "the front end is not built: run server_ext/hack/test-frontend.sh --unit first" >&2
  exit 2
fi
CHROMIUM="${GPUSHIFT_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  echo "browser tests need Debian's chromium at $CHROMIUM: apt-get install -y chromium" >&2
  exit 2
fi

STAMP="$VENV/.installed-$FLOOR"
if [[ ! -f "$STAMP" || "$ROOT/pyproject.toml" -nt "$STAMP" || "$HERE/pyproject.toml" -nt "$STAMP" ]]; then
  echo "== a virtual environment with JupyterLab $FLOOR ($VENV)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  # The German language pack: the hub pod's test runs under a non-English locale.
  "$VENV/bin/pip" install --quiet "jupyterlab==$FLOOR.*" -e "$ROOT" jupyterlab-language-pack-de-DE
  SKIP_JUPYTER_BUILDER=1 "$VENV/bin/pip" install --quiet -e "$HERE" "jupyterlab==$FLOOR.*"
  touch "$STAMP"
fi
# The built labextension, where this JupyterLab looks for prebuilt extensions: linked,
# never a copy. The editable install copies the build of that moment there (a folder,
# into which `ln -sfn` would only put a link): removed first, or a later run of this
# script would test the front end as it was when the venv was made.
mkdir -p "$VENV/share/jupyter/labextensions"
rm -rf "$VENV/share/jupyter/labextensions/gpushift-jupyter"
ln -s "$HERE/gpushift_jupyter/labextension" "$VENV/share/jupyter/labextensions/gpushift-jupyter"
echo "== JupyterLab $("$VENV/bin/jupyter-lab" --version), Galata ~5.$MINOR"

export PATH="$VENV/bin:$PATH" GPUSHIFT_PYTHON="$VENV/bin/python"
export GPUSHIFT_UI_PORT_BASE="${GPUSHIFT_UI_PORT_BASE:-8898}"
export GPUSHIFT_UI_RUN_ROOT="${GPUSHIFT_UI_RUN_ROOT:-$TESTS/.jupyter-run}"
cd "$TESTS"
rm -rf tests
cp -r ../tests tests
jlpm install >/dev/null
if [[ $# -eq 0 ]]; then
  set -- --project=cpu-pod --project=hub-pod
fi
jlpm playwright test "$@"
