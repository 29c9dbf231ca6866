"""The local demo (``make demo``, ``hack/demo.py``): the whole product on this machine.

Builds the control plane's binaries when missing (``hack/build-controlplane.sh``, cached in
``~/.cache/gpushift/bin``: a second run reuses them), starts the local control plane
(etcd, kube-apiserver, controller-manager, scheduler, kwok with 2 CPU nodes and two GPU
nodes, an A100 and a T4 (`demo_gpus`), the Notebook CRD and Kubeflow's
notebook-controller), installs gpushift with its Helm
chart (the webhook running as a local process), opts a namespace in, creates a Notebook
with a workspace PVC, and starts the local pod runner and notebook proxy -- test
harnesses that play the kubelet and Kubeflow's route. Then it prints the JupyterLab URL
and waits; Ctrl-C (SIGINT or SIGTERM) stops everything it started.

State lives in ``--state`` (default ``.demo/``): the cluster is fresh on every run, the
workspace folder (``volumes/``) is kept, logs are in ``demo.log``, ``controlplane/logs``,
``webhook/`` and ``runner/pods/*/*/logs``.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from kubernetes import client

from gpushift_testing import demo_gpus, demo_setup
from gpushift_testing.binaries import build, missing_binaries
from gpushift_testing.common import free_port
from gpushift_testing.controlplane import ControlPlane, ControlPlaneError, binary_paths
from gpushift_testing.kube import wait_for
from gpushift_testing.notebook_proxy import NotebookProxy, Routes
from gpushift_testing.pod_processes import process_family, running
from gpushift_testing.pod_runner import PodRunner
from gpushift_testing.webhook_process import LocalWebhook, ca_bundle_published, install_chart

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_MARK = "gpushift demo ready:"  # the line tests wait for


def say(text: str) -> None:
    print(text, flush=True)
    logging.getLogger("gpushift.demo").info(text)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo the way Ctrl-C does


def _timed(what: str, stop: Callable[[], object]) -> None:
    """One step of the demo's stop, its time in demo.log (a stop that hangs shows where)."""
    log = logging.getLogger("gpushift.demo")
    log.info("stopping the %s ...", what)
    t0 = time.monotonic()
    stop()
    log.info("stopped the %s in %.1fs", what, time.monotonic() - t0)


def _proxy_port(wanted: int) -> int:
    """`wanted` when it is free (a URL that stays the same across runs), else any."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError:
            return free_port()
    return wanted


def _answers(url: str, token: str) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _start_plane(workdir: Path, stack: contextlib.ExitStack, attempts: int = 3) -> ControlPlane:
    """A fresh control plane. Its ports are picked free and then bound by the components
    a moment later; another process (or an outgoing connection's ephemeral port) can take
    one in between, so a start that fails with "address already in use" is retried."""
    for attempt in range(1, attempts + 1):
        shutil.rmtree(workdir, ignore_errors=True)
        plane = ControlPlane(workdir)
        try:
            plane.start()
        except ControlPlaneError as e:
            if "address already in use" not in str(e) or attempt == attempts:
                raise
            say(f"    a port was taken while starting ({e}); again with other ports ...")
            continue
        stack.callback(_timed, "control plane", plane.stop)
        return plane
    raise AssertionError("unreachable")


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    state: Path = args.state
    missing = missing_binaries()
    if missing:
        say(f"1/6 building the control plane's binaries {missing} (first run only; several "
            "minutes on 2 cores) ...")
        proc = build(check=False)
        if missing_binaries():
            say(f"error: hack/build-controlplane.sh failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-4000:]}")
            return 1
    else:
        say("1/6 control plane binaries: already built (~/.cache/gpushift/bin), reused")

    say("2/6 starting the local control plane (etcd, kube-apiserver, controllers, kwok) ...")
    plane = _start_plane(state / "controlplane", stack)
    api = plane.api_client()
    stack.callback(_timed, "API client", api.close)
    core = client.CoreV1Api(api)
    ns, name, claim = args.namespace, args.notebook, f"{args.notebook}-workspace"

    demo_gpus.add_gpu_pools(core)
    wait_for("the T4 node Ready", lambda: demo_gpus.gpu_pools_ready(core), 60,
             describe=lambda: plane.logs_tail(5))
    say(f"3/6 installing gpushift (Helm chart, webhook as a local process), namespace {ns} "
        "opted in ...")
    demo_setup.opt_in_namespace(core, ns)
    demo_setup.create_service_account(core, ns)
    shutil.rmtree(state / "webhook", ignore_errors=True)
    hook = LocalWebhook(plane.kubeconfig, state / "webhook")
    (state / "webhook").mkdir(parents=True)
    install_chart(binary_paths()["helm"], plane.kubeconfig, hook,
                  *demo_setup.chart_sets_binding(ns))
    hook.start(*demo_setup.webhook_arguments(state / "webhook", args.guard_ready_timeout))
    stack.callback(_timed, "webhook", hook.stop)
    admission = client.AdmissionregistrationV1Api(api)
    wait_for("the webhook's caBundle", lambda: ca_bundle_published(admission), 60,
             describe=hook.logs)
    wait_for("the webhook ready", hook.ready, 30, describe=hook.logs)

    workspace = state / "volumes" / ns / claim
    kept = sum(1 for _ in workspace.rglob("*")) if workspace.exists() else 0
    say(f"4/6 Notebook {ns}/{name} with workspace PVC {claim} on {workspace}"
        + (f" (kept from an earlier run: {kept} files)" if kept else ""))
    demo_setup.create_workspace_claim(core, ns, claim, workspace)
    token = args.token or secrets.token_hex(16)
    demo_setup.create_notebook(client.CustomObjectsApi(api), ns,
                               demo_setup.notebook_body(name, claim, token))

    say("5/6 starting the local pod runner (plays the kubelet for kwok's nodes) and the "
        "notebook proxy ...")
    routes = Routes()
    proxy = NotebookProxy(routes, _proxy_port(args.port)).start()
    stack.callback(_timed, "notebook proxy", proxy.stop)
    shutil.rmtree(state / "runner" / "pods", ignore_errors=True)
    runner = PodRunner(plane.kubeconfig, state / "runner", namespaces=[ns], routes=routes)
    runner.start()
    stack.callback(_timed, "pod runner", runner.stop)
    url = demo_setup.notebook_url(proxy.port, ns, name)
    wait_for("JupyterLab answering through the proxy",
             lambda: _answers(url + "api/status", token), args.timeout,
             describe=lambda: plane.logs_tail(5))
    say(f"6/6 JupyterLab is up.\n\n{READY_MARK} {url}lab?token={token}\n")
    say(_what_to_try(plane, ns, name, state))
    if args.exit_after_ready:
        return 0
    say("Ctrl-C stops everything.")
    while True:
        time.sleep(2)
        plane.check_alive()


def _what_to_try(plane: ControlPlane, ns: str, name: str, state: Path) -> str:
    kubectl = f"KUBECONFIG={plane.kubeconfig} {binary_paths()['kubectl']}"
    return "\n".join([
        "What to try:",
        "  - Open the URL. The status bar says which kind of pod you are on (CPU).",
        "  - Create some state: `import numpy as np; big = np.random.rand(2_000_000)`.",
        "  - Run a cell that needs a GPU (e.g. one that uses `device = \"cuda\"`): you are",
        "    asked to move; accept, and the pod is recreated on the (fake, kwok) GPU node",
        "    under the same URL, with `big` still there. Left idle, it moves back to CPU.",
        "  - Move by hand with the toolbar button, or choose the GPU (an A100 or a T4)",
        "    with \"Move to GPU…\" (Kernel menu, or a click on the status bar item).",
        f"  - Watch it happen: {kubectl} get pods -n {ns} -o wide -w",
        f"                     {kubectl} describe notebook {name} -n {ns}",
        f"  - Logs: {state}/runner/pods/{ns}/*/logs, {state}/webhook/webhook.log,",
        f"          {state}/controlplane/logs",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hack/demo.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", type=Path, default=REPO_ROOT / ".demo",
                    help="state folder (default: .demo/ in the repository)")
    ap.add_argument("--port", type=int, default=8888,
                    help="port of the notebook URL on 127.0.0.1 (default 8888, else a free one)")
    ap.add_argument("--namespace", default="kubeflow-user")
    ap.add_argument("--notebook", default="demo")
    ap.add_argument("--token", default=None,
                    help="the Jupyter token (default: a random one; fixed for browser tests)")
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds to wait for JupyterLab to answer")
    ap.add_argument("--guard-ready-timeout", type=int, default=None, metavar="SECONDS",
                    help="run the migration guard: a moved pod not Ready after SECONDS "
                         "(at least 10) is rolled back (default: no guard)")
    ap.add_argument("--exit-after-ready", action="store_true",
                    help="stop everything as soon as the URL answers (a check of the demo)")
    args = ap.parse_args(argv)
    if args.guard_ready_timeout is not None and args.guard_ready_timeout < 10:
        ap.error("--guard-ready-timeout must be at least 10 (the webhook's minimum)")
    args.state = args.state.resolve()
    args.state.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=args.state / "demo.log", level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C stops the demo even when it was started with SIGINT ignored: a shell without
    # job control ignores SIGINT in the commands it starts in the background (`cmd &`),
    # and Python then installs no KeyboardInterrupt handler (the Ctrl-C test hung so).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # `kill -USR1 <pid>` prints every thread's stack: how a stop that hangs is diagnosed.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    stack = contextlib.ExitStack()
    code = 1
    try:
        code = run(args, stack)
    except KeyboardInterrupt:
        code = 0
        say("\nstopping ...")
    except Exception as e:  # a clear line for the user, the traceback in demo.log
        logging.getLogger("gpushift.demo").exception("demo failed")
        say(f"error: {type(e).__name__}: {e}\n(details in {args.state / 'demo.log'})")
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.close()
    left = [pid for pid in process_family(os.getpid())[1:] if running(pid)]
    if left:
        say(f"warning: processes the demo started are still running: {left}")
        return code or 1
    say("stopped: every process the demo started has exited.")
    return code


if __name__ == "__main__":
    sys.exit(main())
