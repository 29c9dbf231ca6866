"""The real `gpushift-sidecar serve` process, with the env the webhook gives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushift_testing.common import GPU_RESOURCE, free_port
from gpushift_testing.kube import wait_for
from gpushift_testing.processes import stop_process

SIDECAR = Path(sys.executable).parent / "gpushift-sidecar"


@dataclass
class PodFacts:
    """What the webhook reads from the pod and hands the sidecar as env."""

    name: str
    uid: str
    node: str
    gpu: tuple[str, int] | None

    @classmethod
    def of(cls, pod: Any) -> PodFacts:
        limits = pod.spec.containers[0].resources.limits or {}
        count = int(limits.get(GPU_RESOURCE, 0) or 0)
        return cls(pod.metadata.name, pod.metadata.uid, pod.spec.node_name or "",
                   (GPU_RESOURCE, count) if count else None)


@dataclass
class SidecarProcess:
    process: subprocess.Popen[bytes]
    url: str
    runtime_dir: Path
    log: Path

    def logs(self) -> str:
        return self.log.read_text()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                ) -> tuple[int, dict[str, Any]]:
        token = (self.runtime_dir / "api-token").read_text().strip()
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                answer = r.read()
                return r.status, json.loads(answer) if answer else {}  # 204: no body
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def migration(self) -> dict[str, Any]:
        status, body = self.request("GET", "/migrations/current")
        assert status == 200, body
        return body

    def wait_phase(self, *phases: str, timeout: float = 30,
                   interval: float = 0.05) -> dict[str, Any]:
        found: dict[str, Any] = wait_for(f"migration in {phases}", lambda: (
            m if (m := self.migration())["phase"] in phases else None), timeout,
            interval=interval, describe=lambda: (self.migration(), self.logs()[-3000:]))
        return found

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return stop_process(self.process, sig, grace=15)


def sidecar_env(pod: PodFacts, namespace: str, runtime_dir: Path, workspace: Path, port: int,
                settings_json: str, tmpdir: Path | None = None) -> dict[str, str]:
    """The process's environment: this one's (no KUBECONFIG) plus the webhook's env."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    notebook = pod.name.rsplit("-", 1)[0]
    env.update({
        "PYTHONUNBUFFERED": "1",
        "GPUSHIFT_POD_NAME": pod.name, "GPUSHIFT_POD_NAMESPACE": namespace,
        "GPUSHIFT_POD_UID": pod.uid, "GPUSHIFT_NODE_NAME": pod.node,
        "GPUSHIFT_NOTEBOOK_NAME": notebook, "GPUSHIFT_NOTEBOOK_CONTAINER": notebook,
        "GPUSHIFT_GPU_RESOURCE": pod.gpu[0] if pod.gpu else "",
        "GPUSHIFT_GPU_COUNT": str(pod.gpu[1] if pod.gpu else 0),
        "GPUSHIFT_RUNTIME_DIR": str(runtime_dir), "GPUSHIFT_WORKSPACE_DIR": str(workspace),
        "GPUSHIFT_API_PORT": str(port), "GPUSHIFT_SETTINGS": settings_json,
    })
    return env


def start_sidecar(kubeconfig: Path, namespace: str, pod: PodFacts, workspace: Path,
                  runtime_dir: Path, log: Path, settings_json: str, *,
                  args: Sequence[str] = (), tmpdir: Path | None = None,
                  ready_timeout: float = 20) -> SidecarProcess:
    """`gpushift-sidecar serve --kubeconfig kubeconfig *args` as pod `pod`'s sidecar;
    returns once /healthz answers (AssertionError with its log if it exits first)."""
    port = free_port()
    env = sidecar_env(pod, namespace, runtime_dir, workspace, port, settings_json, tmpdir)
    with log.open("wb") as out:
        process = subprocess.Popen([str(SIDECAR), "serve", "--kubeconfig", str(kubeconfig),
                                    *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    sidecar = SidecarProcess(process, f"http://127.0.0.1:{port}", runtime_dir, log)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"sidecar exited {process.returncode}:\n{sidecar.logs()}")
        try:
            with urllib.request.urlopen(sidecar.url + "/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for("sidecar ready", healthy, ready_timeout, interval=0.05)
    except AssertionError:
        sidecar.stop(signal.SIGKILL)
        raise
    return sidecar


def log_path(directory: Path, runtime: str) -> Path:
    """A log file name for a sidecar of `runtime`, unique per start."""
    return directory / f"sidecar-{runtime}-{time.monotonic_ns()}.log"
