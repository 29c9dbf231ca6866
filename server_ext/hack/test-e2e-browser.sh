#!/usr/bin/env bash
# End-to-end browser tests of a REAL move (server_ext/ui-tests/e2e, Galata + Playwright in
# Debian's chromium): the whole local demo (hack/demo.py: control plane, chart, local
# webhook, Notebook with its workspace PVC, local pod runner and notebook proxy) is started
# by Playwright (ui-tests/e2e_launcher.py), JupyterLab is driven through the notebook's
# stable URL, and pod demo-0 is recreated on the fake (kwok) GPU node and back.
#
#   server_ext/hack/test-e2e-browser.sh            # both tests
#   server_ext/hack/test-e2e-browser.sh -g "CPU"   # extra arguments go to playwright
#
# Assumes the front end is built (hack/test-frontend.sh --unit) and the repository's .venv
# (GPUSHIFT_VENV moves it); the first run also builds the control plane's binaries.
# GPUSHIFT_E2E_PORT (default 18731) is the notebook proxy's port.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GPUSHIFT_VENV:-$(cd "$HERE/.." && pwd)/.venv}"
export PATH="$VENV/bin:$PATH"
export CI=1 PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export GPUSHIFT_PYTHON="$VENV/bin/python"

CHROMIUM="${GPUSHIFT_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  echo "browser tests need Debian's chromium at $CHROMIUM: apt-get install -y chromium" >&2
  exit 2
fi
if [[ ! -f "$HERE/gpushift_jupyter/labextension/package.json" ]]; then
  echo "the front end is not built: run server_ext/hack/test-frontend.sh --unit first" >&2
  exit 2
fi
cd "$HERE/ui-tests"
jlpm install >/dev/null
jlpm playwright test -c playwright.e2e.config.js "$@"
