#!/usr/bin/env bash
# The browser tests of `make test`: the suite on the current JupyterLab
# (hack/test-frontend.sh --browser, ports 8888-8891) and the suite on the lowest JupyterLab
# gpushift supports (hack/test-lowest-jupyterlab.sh, ports 8898-8901), side by side.
#
#   server_ext/hack/test-browsers.sh
#
# Why at the same time: each suite drives one browser and waits on kernels, sidecars and
# timers most of the time (the two cores were idle about 45% of a suite's run), so the two
# together take little more than the longer one. Each suite keeps its own pods, folders and
# reports; every line is printed as it comes, marked with its suite ("[lab newest]",
# "[lab lowest]": the lowest suite prints its JupyterLab's version, from the floor it
# reads). Exits non-zero when either suite failed, after both have ended.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Runs one suite, each line marked; its exit status is the suite's, not sed's.
marked() {
  local mark="$1"; shift
  "$@" 2>&1 | sed -u "s/^/[lab $mark] /"
  return "${PIPESTATUS[0]}"
}

marked newest "$HERE/test-frontend.sh" --browser &
newest=$!
marked lowest "$HERE/test-lowest-jupyterlab.sh" &
lowest=$!

status=0
wait "$newest" || { echo "== the browser tests on the newest JupyterLab failed" >&2; status=1; }
wait "$lowest" || { echo "== the browser tests on the lowest JupyterLab failed" >&2; status=1; }
exit "$status"
