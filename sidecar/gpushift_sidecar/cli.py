"""`gpushift-sidecar`: serve the loopback API (`serve`), or probe it (`probe`, the
startup probe).

The probe runs in every notebook pod until the sidecar is ready, and a move's new pod
starts its notebook container only once it passed: this module imports only what the
command line needs, and each command its own module (a probe that imported the
server's modules took 0.10 s to start instead of 0.02 s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from gpushift_sidecar.serve import RunnerFactory

_DEFAULT_PORT = 8765  # as gpushift_sidecar.env.DEFAULT_API_PORT, without importing it


def main(argv: list[str] | None = None, runner_factory: RunnerFactory | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpushift-sidecar", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="write runtime-config.json and serve the API")
    serve.add_argument("--host", default="127.0.0.1",
                       help="loopback address to listen on; any other is refused")
    serve.add_argument("--port", type=int, default=None,
                       help="port (default: $GPUSHIFT_API_PORT, else 8765)")
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--kubeconfig", default=None,
                       help="kubeconfig file for the Kubernetes API (tests, local runs); "
                            "default: the pod's ServiceAccount (in-cluster), else "
                            "$KUBECONFIG")
    serve.add_argument("--checkpoint-timeout", type=float, default=None,
                       help="seconds a migration waits for its kishu checkpoint to be "
                            "complete (default: $GPUSHIFT_CHECKPOINT_TIMEOUT, else 60)")
    serve.add_argument("--save-timeout", type=float, default=None,
                       help="seconds a move waits in `checkpointing` for the notebook "
                            "side to save every notebook and name the checkpoints before "
                            "it fails, nothing changed (default: $GPUSHIFT_SAVE_TIMEOUT, "
                            "else 600)")
    serve.add_argument("--restore-timeout", type=float, default=None,
                       help="seconds a migration waits in `restoring` for the notebook "
                            "side's restore report before it ends failed, the checkpoint "
                            "kept (default: $GPUSHIFT_RESTORE_TIMEOUT, else 600)")
    serve.add_argument("--idle-tick", type=float, default=1.0,
                       help="seconds between ticks of the idle timer on a GPU pod "
                            "(default 1)")
    serve.add_argument("--idle-annotations-interval", type=float, default=30.0,
                       help="seconds between reads of the Notebook's idle annotations "
                            "(timeout override, pin; default 30)")
    serve.add_argument("--activity-interval", type=float, default=60.0,
                       help="seconds between writes of a GPU pod's GPU work to its "
                            "Notebook (the busy GPU-hours; written only when it changed; "
                            "default 60)")
    probe = sub.add_parser("probe", help="exit 0 when GET /healthz answers 200, else 1")
    probe.add_argument("--port", type=int, default=None,
                       help="port (default: $GPUSHIFT_API_PORT, else 8765)")
    probe.add_argument("--timeout", type=float, default=1.0,
                       help="seconds to wait for one answer")
    probe.add_argument("--wait", type=float, default=0.0,
                       help="seconds to keep asking (every 50 ms) while the sidecar is not "
                            "ready yet, so the probe passes as soon as it is instead of at "
                            "the kubelet's next period (default 0: ask once)")
    args = parser.parse_args(argv)
    if args.command == "probe":
        from gpushift_sidecar.probe import run_probe  # noqa: PLC0415

        runtime_dir = os.environ.get("GPUSHIFT_RUNTIME_DIR", "").strip()
        return run_probe(args.port or _port_from_environ(), args.timeout, args.wait,
                         Path(runtime_dir) if runtime_dir else None)
    from gpushift_sidecar.serve import run_serve  # noqa: PLC0415

    return run_serve(args, runner_factory)


def entry() -> NoReturn:
    """The `gpushift-sidecar` command: `main`, then out at once. When a pod is replaced
    its new pod waits for this process to end, and Python's own finalization (tearing
    down ~1,000 modules) took 0.14 s after the sidecar had stopped. Everything is closed
    by then: `run_serve`'s event loop has ended (its worker threads joined), the state
    is on disk and the log shut down."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _port_from_environ() -> int:
    text = os.environ.get("GPUSHIFT_API_PORT", "").strip()
    return int(text) if text.isdigit() else _DEFAULT_PORT


if __name__ == "__main__":
    entry()
