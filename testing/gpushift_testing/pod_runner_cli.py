"""``python -m gpushift_testing.pod_runner_cli --kubeconfig K --state DIR``: the local pod
runner and the notebook proxy (TEST HARNESSES, see pod_runner.py) against a control plane
started by hand (``python -m gpushift_testing.controlplane up``), until Ctrl-C/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from gpushift_testing.notebook_proxy import NotebookProxy, Routes
from gpushift_testing.pod_runner import PodRunner


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpushift_testing.pod_runner_cli",
                                 description=__doc__)
    ap.add_argument("--kubeconfig", type=Path, required=True, help="an admin kubeconfig")
    ap.add_argument("--state", type=Path, required=True,
                    help="folder for pod folders, PVC folders and logs")
    ap.add_argument("--namespace", action="append", default=None,
                    help="run pods of this namespace only (repeatable; default: all)")
    ap.add_argument("--port", type=int, default=0, help="proxy port (default: a free one)")
    ap.add_argument("--grace", type=float, default=10.0,
                    help="seconds between SIGTERM and SIGKILL when a pod stops")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    routes = Routes()
    proxy = NotebookProxy(routes, args.port).start()
    runner = PodRunner(args.kubeconfig, args.state, namespaces=args.namespace, routes=routes,
                       grace=args.grace).start()
    print(f"notebooks at http://127.0.0.1:{proxy.port}/notebook/<namespace>/<name>/ "
          "(Ctrl-C stops)", flush=True)
    try:
        stop.wait()
    finally:
        runner.stop()
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
