"""The web server of the end-to-end browser tests (playwright.e2e.config.js): the whole
local demo (hack/demo.py: control plane, chart, local webhook with the migration guard,
opted-in namespace, Notebook `demo` with its workspace PVC, local pod runner and notebook
proxy), started fresh.

Before the demo starts, the workspace (the PVC's folder, HOME of the notebook container on
every pod the Notebook gets) is emptied and given a Jupyter config that loads Galata's
in-page helpers -- test-only, the way a user's own ``~/.jupyter`` would; the Jupyter token
and the authentication stay as the demo sets them. Then this process becomes demo.py
(exec), so Playwright's SIGTERM at the end reaches the demo, which stops all it started.

    python e2e_launcher.py --state DIR --port P --token T
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, NOTEBOOK = "kubeflow-user", "demo"  # demo.py's defaults
PORT_WAIT_S = 90
TEST_FOLDER = "e2e"  # the tests' folder in the workspace (their Galata tmpPath)
# The migration guard rolls back a moved pod not Ready after this long (the webhook's
# minimum). kwok marks a scheduled pod Ready at once, so only a pod no node can take (the
# rollback test's: the GPU is taken) waits it out -- 10 s instead of the chart's 300.
GUARD_READY_TIMEOUT_S = 10

# Galata drives JupyterLab through its helper extension and `window.jupyterapp`.
JUPYTER_CONFIG = """\
# Written by server_ext/ui-tests/e2e_launcher.py (browser tests only).
import jupyterlab.galata, pathlib
c.LabServerApp.extra_labextensions_path = [str(pathlib.Path(jupyterlab.galata.__file__).parent)]
c.LabApp.expose_app_in_browser = True
"""


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def prepare_workspace(state: Path) -> Path:
    """An empty workspace holding only the test Jupyter config and the tests' folder;
    returns its folder."""
    workspace = state / "volumes" / NAMESPACE / f"{NOTEBOOK}-workspace"
    shutil.rmtree(state / "volumes", ignore_errors=True)
    (workspace / ".jupyter").mkdir(parents=True)
    (workspace / ".jupyter" / "jupyter_server_config.py").write_text(JUPYTER_CONFIG)
    (workspace / TEST_FOLDER).mkdir()
    return workspace


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token", required=True)
    args = ap.parse_args()
    # demo.py takes another port when this one is busy, and the tests would wait for the
    # wrong one. Right after a previous run the port is often only in TIME_WAIT (up to a
    # minute), which a plain bind -- as demo.py's check does it -- also refuses.
    deadline = time.monotonic() + PORT_WAIT_S
    while not port_is_free(args.port):
        if time.monotonic() > deadline:
            print(f"e2e launcher: port {args.port} is taken; set GPUSHIFT_E2E_PORT to a free "
                  "one", file=sys.stderr, flush=True)
            return 2
        time.sleep(1)
    state = args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    workspace = prepare_workspace(state)
    print(f"e2e launcher: state {state}, workspace {workspace}", flush=True)
    demo = [sys.executable, str(REPO_ROOT / "hack" / "demo.py"), "--state", str(state),
            "--port", str(args.port), "--token", args.token,
            "--guard-ready-timeout", str(GUARD_READY_TIMEOUT_S)]
    os.execv(sys.executable, demo)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
