"""Migration guards as real processes for the cluster tests: `gpushift-webhook serve
--guard` in a namespace of its own, with the chart's webhook RBAC only (a token of its
ServiceAccount), polling every second."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from gpushift_testing import access
from gpushift_testing.controlplane import ControlPlane
from gpushift_testing.kube import delete_namespaces
from gpushift_testing.pki import write_kubeconfig
from gpushift_testing.processes import stop_process
from gpushift_testing.webhook_process import free_port
from kubernetes import client


@dataclass
class GuardProcess:
    identity: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines() if self.log.exists() else []:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def count(self, msg: str) -> int:
        return sum(1 for line in self.lines() if line.get("msg") == msg)


@dataclass
class Guards:
    namespace: str
    lease: str
    procs: dict[str, GuardProcess] = field(default_factory=dict)
    capacity_configmap: str = ""
    """"<namespace>/<name>" of the published GPU capacity (with capacity_interval)."""

    def holder(self, coordination: Any) -> str:
        lease = coordination.read_namespaced_lease(self.lease, self.namespace)
        return str(lease.spec.holder_identity or "")

    def logs(self) -> str:
        return "\n".join(f"--- {p.identity}\n" + p.log.read_text()[-4000:]
                         for p in self.procs.values() if p.log.exists())


@contextlib.contextmanager
def running_guards(control_plane: ControlPlane, workdir: Path, identities: Iterable[str], *,
                   release: str, lease: str, namespace_prefix: str, ready_timeout: int,
                   image_map: list[dict[str, str]], lease_duration: float,
                   renew: float, without_watch: bool = False,
                   config_extra: dict[str, Any] | None = None,
                   capacity_interval: float | None = None) -> Iterator[Guards]:
    """One guard process per identity, sharing one Lease, with the chart's webhook RBAC
    of `release` in a fresh namespace; stopped and cleaned up afterwards.
    `without_watch`: as an admin who took `watch` out of the chart's ClusterRole.
    `config_extra`: more keys of the config file (profiles, ...). `capacity_interval`:
    also publish the GPU capacity (`--capacity`) into ConfigMap
    `<release>-gpushift-gpu-capacity` of that namespace (`Guards.capacity_configmap`)."""
    api = control_plane.api_client()
    core = client.CoreV1Api(api)
    namespace = f"{namespace_prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace,
                                        "labels": {"gpushift.io/test": "true"}}})
    docs, token = access.install_webhook_rbac(api, release, namespace)
    if without_watch:
        for doc in docs:
            if doc["kind"] == "ClusterRole":
                rules = [{**rule, "verbs": [v for v in rule["verbs"] if v != "watch"]}
                         for rule in doc["rules"]]
                client.RbacAuthorizationV1Api(api).patch_cluster_role(
                    doc["metadata"]["name"], {"rules": rules})
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", control_plane.server,
                                  control_plane.ca_file, token, "guard")
    config_file = workdir / "config.yaml"
    config: dict[str, Any] = {"guard": {"ready_timeout_seconds": ready_timeout},
                              "image_map": image_map, **(config_extra or {})}
    capacity_args: list[str] = []
    if capacity_interval is not None:
        config["capacity_configmap"] = f"{namespace}/{release}-gpushift-gpu-capacity"
        capacity_args = ["--capacity", "--capacity-interval", str(capacity_interval)]
    config_file.write_text(yaml.safe_dump(config))
    exe = str(Path(sys.executable).parent / "gpushift-webhook")
    guards = Guards(namespace, lease, capacity_configmap=str(
        config.get("capacity_configmap") or ""))
    for identity in identities:
        cert_dir = workdir / identity / "certs"  # no certificate: only the guard matters
        cert_dir.mkdir(parents=True)
        argv = [exe, "serve", "--host", "127.0.0.1", "--port", str(free_port()),
                "--cert-dir", str(cert_dir), "--config", str(config_file),
                "--namespace", namespace, "--kubeconfig", str(kubeconfig),
                "--guard", "--guard-lease-name", lease, "--guard-identity", identity,
                "--guard-interval", "1", "--guard-lease-duration", str(lease_duration),
                "--guard-renew-interval", str(renew), *capacity_args]
        guards.procs[identity] = GuardProcess(identity, argv, workdir / f"{identity}.log")
    for proc in guards.procs.values():
        proc.start()
    try:
        yield guards
    finally:
        for proc in guards.procs.values():
            proc.stop()
        access.delete_cluster_scoped(api, docs)
        delete_namespaces(core, [namespace])
        api.close()
