"""A real local Kubernetes control plane for gpushift's cluster tests and demo.

Runs, as plain processes on 127.0.0.1 with ports picked at run time:

- etcd, kube-apiserver, kube-controller-manager, kube-scheduler (built from their Go
  modules by ``hack/build-controlplane.sh``, cached outside the repo, see
  ``hack/controlplane-versions.env``),
- kwok, which plays the kubelets of fake nodes: 2 CPU nodes and GPU nodes that offer
  ``nvidia.com/gpu`` (tainted ``nvidia.com/gpu=present:NoSchedule``), and moves their pods
  to Running,
- Kubeflow's Notebook CRD (the real one) and a controller for it: Kubeflow's
  notebook-controller, built from its source in ../shared/kubeflow/notebook-controller and
  run as Kubeflow runs it (its own ServiceAccount and ClusterRole, leader election off).

Each process logs to ``<workdir>/logs/<name>.log``.

    cp = ControlPlane("/tmp/cp").start()
    api = cp.api_client()          # kubernetes.client.ApiClient, admin
    print(cp.kubeconfig)           # for kubectl / helm
    cp.stop()

CLI (demo): ``python -m gpushift_testing.controlplane up --workdir DIR``. The parts live in
binaries.py (versions, paths, build), pki.py, processes.py, components.py (command lines,
health checks), nodes.py and notebooks.py; this module re-exports their public names.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, config

from gpushift_testing import components as comp
from gpushift_testing import notebooks
from gpushift_testing.binaries import (
    BUILD_SCRIPT,
    REQUIRED_BINARIES,
    bin_dir,
    binary_paths,
    build,
    missing_binaries,
    notebook_crd_path,
    read_versions,
)
from gpushift_testing.common import (
    GPU_RESOURCE,
    GPU_TAINT,
    LOCALHOST,
    ControlPlaneError,
    free_ports,
    rss_bytes,
    tail_lines,
    wait_until,
)
from gpushift_testing.kwok_stages import harness_stages
from gpushift_testing.nodes import NodeSpec, create_nodes, default_nodes, nodes_ready
from gpushift_testing.pki import Pki, make_pki, write_auth
from gpushift_testing.processes import Proc, stop_all

__all__ = [
    "BUILD_SCRIPT",
    "GPU_RESOURCE",
    "GPU_TAINT",
    "LOCALHOST",
    "REQUIRED_BINARIES",
    "ControlPlane",
    "ControlPlaneError",
    "NodeSpec",
    "bin_dir",
    "binary_paths",
    "build",
    "main",
    "missing_binaries",
    "notebook_crd_path",
    "read_versions",
]


class ControlPlane:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok + a Notebook controller.

    ``notebook_controller``: None or True (default) installs the Notebook CRD and starts
    Kubeflow's notebook-controller; start fails when its binary is missing. False starts
    no Notebook controller (the CRD is still installed when found).
    ``notebook_controller_reason`` says what runs. ``notebook_controller_env``: environment
    of the controller over the defaults of ``notebooks.controller_command`` (e.g. the
    culler's ``ENABLE_CULLING``, ``CULL_IDLE_TIME``, ``IDLENESS_CHECK_PERIOD``).
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        cpu_nodes: int = 2,
        gpu_nodes: int = 1,
        gpus_per_node: int = 1,
        notebook_controller: bool | None = None,
        notebook_crd: str | os.PathLike[str] | None = None,
        notebook_controller_env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.nodes = default_nodes(cpu_nodes, gpu_nodes, gpus_per_node)
        self.want_notebook_controller = notebook_controller is not False
        self.notebook_crd = Path(notebook_crd) if notebook_crd else notebook_crd_path()
        self.notebook_controller_reason = "not started yet"
        self.notebook_controller_env = dict(notebook_controller_env or {})
        self.bins = binary_paths()
        self.versions = read_versions()
        self.logdir = self.workdir / "logs"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.token = ""
        self.server = ""
        self.ca_file = self.workdir / "pki" / "ca.crt"
        self.ports: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self.procs: dict[str, Proc] = {}
        self._stopped = False
        self._started = False
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- public API

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def notebook_controller_proc(self) -> Proc | None:
        """The process of Kubeflow's notebook-controller, if started."""
        return self.procs.get("notebook-controller")

    @property
    def notebook_controller_running(self) -> bool:
        p = self.notebook_controller_proc
        return p is not None and p.alive()

    def start(self, timeout: float = 180.0) -> ControlPlane:
        """Start everything and wait until nodes are Ready; returns self."""
        if self._started:
            return self
        self._started = True
        missing = missing_binaries()
        if missing:
            raise ControlPlaneError(
                f"missing binaries {missing}; run {BUILD_SCRIPT} (expected in {bin_dir()})"
            )
        atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            self._start(t0, timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Terminate all processes (SIGTERM, then SIGKILL after `grace`). Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        # etcd last: kube-apiserver shuts down slowly (up to `grace`) once etcd is gone
        procs = list(reversed(self.procs.values()))
        stop_all([p for p in procs if p.name != "etcd"], grace)
        stop_all([p for p in procs if p.name == "etcd"], grace)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient authenticated as the admin (system:masters)."""
        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]

    def logs_tail(self, lines: int = 40, names: Iterable[str] | None = None) -> str:
        """The last `lines` lines of each component's log, for printing on failure."""
        out = []
        for name, p in self.procs.items():
            if names is not None and name not in names:
                continue
            out.append(f"===== {name} ({p.state()}) {p.log} =====")
            out.extend(tail_lines(p.log, lines))
        return "\n".join(out)

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running component, from /proc."""
        return {n: rss_bytes(p.pid) for n, p in self.procs.items() if p.alive() and p.pid}

    def total_rss_bytes(self) -> int:
        return sum(self.rss_bytes().values())

    def check_alive(self) -> None:
        """Raise ControlPlaneError if a component has died."""
        for p in self.procs.values():
            p.check_alive()

    def summary(self) -> str:
        rss = self.rss_bytes()
        parts = [f"{n}={v / 2**20:.0f}MiB" for n, v in rss.items()]
        times = ", ".join(f"{k}={v:.1f}s" for k, v in self.timings.items())
        return (
            f"control plane at {self.server} (kubeconfig {self.kubeconfig})\n"
            f"  start: {times}\n"
            f"  RSS total {sum(rss.values()) / 2**20:.0f} MiB: {', '.join(parts)}\n"
            f"  notebook controller: {self.notebook_controller_reason}"
        )

    # ----------------------------------------------------------------- startup

    def _phase(self, name: str, t0: float) -> None:
        self.timings[name] = time.monotonic() - t0

    def _add(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        p = Proc(name, argv, self.logdir / f"{name}.log", env or {})
        self.procs[name] = p
        p.start()
        return p

    def _alive_and(self, name: str, check: Any) -> Any:
        """A wait_until check that first fails fast when process `name` has died."""

        def checked() -> Any:
            self.procs[name].check_alive()
            return check()

        return checked

    def _start(self, t0: float, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(comp.PORT_NAMES, free_ports(len(comp.PORT_NAMES)), strict=True))
        pki = make_pki(self.workdir / "pki")
        self.ca_file = pki.ca_cert
        self.server = f"https://{LOCALHOST}:{self.ports['apiserver']}"
        self.token, kubeconfigs = write_auth(
            self.workdir, self.server, pki.ca_cert, self.kubeconfig
        )
        self._phase("pki", t0)

        self._start_core(pki, kubeconfigs)
        self._phase("apiserver", t0)

        api = self.api_client()
        core = client.CoreV1Api(api)
        if self.want_notebook_controller or self.notebook_crd.is_file():
            notebooks.install_crd(api, self.notebook_crd)
        create_nodes(core, self.nodes)

        def ready() -> bool:
            self.procs["kwok"].check_alive()
            self.procs["kube-controller-manager"].check_alive()
            return nodes_ready(core, self.nodes)

        remaining = max(30.0, timeout - (time.monotonic() - t0))
        wait_until("fake nodes Ready and untainted", ready, remaining, 0.3)
        self._phase("nodes", t0)
        wait_until(
            "controller-manager and scheduler /healthz",
            lambda: (
                comp.healthz(self.ports["controller-manager"])
                and comp.healthz(self.ports["scheduler"])
            ),
            30,
        )
        wait_until(
            "default ServiceAccount",
            lambda: core.read_namespaced_service_account("default", "default"),
            60,
            0.3,
        )
        self._phase("controllers", t0)

        if self.want_notebook_controller:
            self._start_notebook_controller(api)
        else:
            self.notebook_controller_reason = "disabled"
        self._phase("notebook-controller", t0)
        self.check_alive()

    def _start_core(self, pki: Pki, kubeconfigs: dict[str, Path]) -> None:
        """etcd, apiserver (waited for), controller-manager, scheduler and kwok."""
        b, w, ports = self.bins, self.workdir, self.ports
        for d in ("apiserver", "controller-manager", "scheduler", "kwok-home"):
            (w / d).mkdir(exist_ok=True)
        self._add("etcd", comp.etcd_argv(b["etcd"], w / "etcd", ports))
        wait_until("etcd /health", self._alive_and("etcd", lambda: comp.etcd_healthy(ports)), 30)

        token_file = w / "pki" / "tokens.csv"
        argv = comp.apiserver_argv(b["kube-apiserver"], w / "apiserver", ports, pki, token_file)
        self._add("kube-apiserver", argv)

        def api_ready() -> bool:
            return comp.api_get(self.server, self.ca_file, self.token, "/readyz")[0] == 200

        wait_until("kube-apiserver /readyz", self._alive_and("kube-apiserver", api_ready), 90, 0.25)

        kcm, sched = kubeconfigs["controller-manager"], kubeconfigs["scheduler"]
        cm_dir = w / "controller-manager"
        cm_bin = b["kube-controller-manager"]
        self._add(
            "kube-controller-manager", comp.controller_manager_argv(cm_bin, cm_dir, ports, pki, kcm)
        )
        sched_argv = comp.scheduler_argv(b["kube-scheduler"], w / "scheduler", ports, sched)
        self._add("kube-scheduler", sched_argv)
        # kwok also reads ~/.kwok/kwok.yaml: give it an empty HOME
        # kwok's default stages, except that pods the local pod runner completes are
        # not marked Succeeded before they ran (kwok_stages.py).
        stages = harness_stages(b["kwok-stages"], w / "kwok-stages.yaml")
        kwok_argv = comp.kwok_argv(b["kwok"], stages, ports, self.kubeconfig)
        self._add("kwok", kwok_argv, env={"HOME": str(w / "kwok-home")})

    def _start_notebook_controller(self, api: Any) -> None:
        binary = self.bins["notebook-controller"]
        reason = notebooks.check_binary(binary)
        kubeconfig = notebooks.install_controller_identity(api, self.workdir, self.server,
                                                           self.ca_file)
        argv, env = notebooks.controller_command(binary, kubeconfig, self.ports)
        self._add("notebook-controller", argv, {**env, **self.notebook_controller_env})
        wait_until(
            "notebook-controller /readyz",
            self._alive_and("notebook-controller",
                            lambda: notebooks.controller_ready(self.ports)),
            60,
        )
        self.notebook_controller_reason = f"running: {reason}"


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gpushift_testing.controlplane",
        description="Local Kubernetes control plane (etcd, apiserver, controllers, kwok nodes).",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start it and wait for Ctrl-C")
    up.add_argument("--workdir", required=True, help="directory for certs, etcd data, logs")
    up.add_argument("--gpu-nodes", type=int, default=1)
    up.add_argument("--gpus-per-node", type=int, default=1)
    up.add_argument("--cpu-nodes", type=int, default=2)
    up.add_argument("--no-build", action="store_true", help="fail instead of building")
    up.add_argument(
        "--no-notebook-controller",
        action="store_true",
        help="start no Notebook controller",
    )
    sub.add_parser("build", help="run hack/build-controlplane.sh")
    sub.add_parser("paths", help="print where the binaries are expected")
    args = ap.parse_args(argv)

    if args.cmd == "build":
        return build(check=False).returncode
    if args.cmd == "paths":
        for name, p in binary_paths().items():
            print(f"{name:24} {p} {'' if p.is_file() else '(missing)'}")
        return 0

    if missing_binaries() and not args.no_build:
        print("building missing binaries (hack/build-controlplane.sh) ...", file=sys.stderr)
        build()
    cp = ControlPlane(
        args.workdir,
        cpu_nodes=args.cpu_nodes,
        gpu_nodes=args.gpu_nodes,
        gpus_per_node=args.gpus_per_node,
        notebook_controller=False if args.no_notebook_controller else None,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        cp.start()
        print(cp.summary(), flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        print(f"kubectl: {cp.bins['kubectl']}  helm: {cp.bins['helm']}", flush=True)
        print("Ctrl-C to stop.", flush=True)
        while not stop.wait(2):
            cp.check_alive()
    except KeyboardInterrupt:
        pass
    except ControlPlaneError as e:
        print(f"error: {e}\n{cp.logs_tail(20)}", file=sys.stderr)
        return 1
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
