"""The whole product on the local control plane, for the end-to-end tests and the
migration bench: gpushift's chart with the webhook (and its migration guard) as a local
process, an opted-in namespace, a Notebook with a workspace PVC, the local pod runner
and the notebook proxy — and a user acting through the proxy as the browser does.

Settings are short so that the idle move and the guard's rollback happen within a test:
idle timeout 10 s (bounds 6 to 600 s, warning 5 s), guard ready timeout 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from gpushift_testing import access, demo_setup
from gpushift_testing.controlplane import ControlPlane
from gpushift_testing.jupyter_user import JupyterUser
from gpushift_testing.notebook_proxy import NotebookProxy, Routes
from gpushift_testing.pod_runner import PodRunner
from gpushift_testing.webhook_process import (
    LocalWebhook,
    serve_local_webhook,
)

CPU_IMAGE = demo_setup.CPU_IMAGE
CUDA_IMAGE = "gpushift/gpushift-notebook:0.1.0-cuda"  # the chart's image_map
GPU_RESOURCE = "nvidia.com/gpu"
E2E_CONFIG: dict[str, Any] = {
    "profiles": [{"name": "nvidia-1", "resource": GPU_RESOURCE, "count": 1,
                  "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists",
                                   "effect": "NoSchedule"}]}],
    "default_profile": "nvidia-1",
    "image_map": [{"cpu": CPU_IMAGE, "cuda": CUDA_IMAGE}],
    "idle": {"timeout_seconds": 10, "min_seconds": 6, "max_seconds": 600,
             "warning_seconds": 5},
    "guard": {"ready_timeout_seconds": 10},
}


def start_webhook(plane: ControlPlane, workdir: Path) -> LocalWebhook:
    """The chart installed by helm, the webhook (with the guard) as a local process on
    the e2e settings; returns once it is registered and ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(E2E_CONFIG))
    return serve_local_webhook(plane.kubeconfig, plane.api_client(), workdir,
                               "--config", str(config), "--guard", "--guard-interval", "1")


@dataclass
class NotebookUnderTest:
    namespace: str
    name: str
    token: str
    url: str
    workspace: Path
    runner: PodRunner

    def user(self) -> JupyterUser:
        return JupyterUser(self.url, self.token)

    def logs(self) -> str:
        return "\n".join(f"===== {p}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.runner.state_dir.glob("pods/*/*/logs/*.log")))


@contextlib.contextmanager
def notebook(plane: ControlPlane, admin: Any, namespace: str, tmp: Path, *,
             name: str = "nb", gpu: bool = False,
             env: dict[str, str] | None = None) -> Iterator[NotebookUnderTest]:
    """A Notebook (CPU, or GPU with the e2e profile) in `namespace` (opted in here),
    run by a local pod runner behind a proxy; everything stopped at the end. `env`:
    more environment variables of the notebook container."""
    demo_setup.opt_in_namespace(admin.core, namespace, create=False)
    access.profile_editor_token(admin.core, admin.rbac, namespace)
    workspace = tmp / f"{name}-workspace"
    demo_setup.create_workspace_claim(admin.core, namespace, f"{name}-workspace", workspace)
    token = uuid.uuid4().hex
    body = demo_setup.notebook_body(name, f"{name}-workspace", token, extra_env=env)
    if gpu:
        spec = body["spec"]["template"]["spec"]
        spec["containers"][0]["image"] = CUDA_IMAGE
        spec["containers"][0]["resources"]["limits"][GPU_RESOURCE] = "1"
        spec["tolerations"] = E2E_CONFIG["profiles"][0]["tolerations"]
    routes = Routes()
    proxy = NotebookProxy(routes).start()
    runner = PodRunner(plane.kubeconfig, tmp / f"{name}-runner", namespaces=[namespace],
                       routes=routes, grace=5).start()
    try:
        demo_setup.create_notebook(admin.custom, namespace, body)
        yield NotebookUnderTest(namespace, name, token,
                                demo_setup.notebook_url(proxy.port, namespace, name),
                                workspace, runner)
    finally:
        runner.stop()
        proxy.stop()


def empty_notebook() -> str:
    return json.dumps({"cells": [], "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5})


def phase_times(migration: dict[str, Any]) -> dict[str, float]:
    """Epoch seconds at which the migration entered each phase (its history)."""
    return {h["phase"]: datetime.fromisoformat(h["at"].replace("Z", "+00:00")).timestamp()
            for h in migration.get("history") or []}


async def restore_state(user: JupyterUser, kernel_id: str, path: str,
                        timeout: float) -> tuple[int, Any]:
    """`POST /restore` as the front end makes it: while the new pod's server restores
    the move itself, the request waits for it and gets its answer; while another tab
    recovers the notebook's state it answers 409 already_restoring: ask again until it
    answers what was restored (or anything else)."""
    deadline = time.monotonic() + timeout
    while True:
        status, answer = await user.gpushift("POST", "restore",
                                             {"kernel_id": kernel_id, "path": path},
                                             timeout=timeout)
        if not (status == 409 and isinstance(answer, dict)
                and answer.get("error") == "already_restoring"
                and time.monotonic() < deadline):
            return status, answer
        await asyncio.sleep(0.2)


async def wait_for_migration(user: JupyterUser, phases: set[str], timeout: float,
                             describe: Any = None) -> dict[str, Any]:
    """The notebook's migration once in one of `phases`, through the proxy (which
    answers 503 while the pod is replaced: retried)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            status, answer = await user.gpushift("GET", "migration", timeout=10)
        except Exception as exc:  # the server is between pods
            status, answer = 0, repr(exc)
        if status == 200 and isinstance(answer, dict):
            last = answer["migration"]
            if last is not None and last["phase"] in phases:
                return dict(last)
        await asyncio.sleep(0.2)
    raise AssertionError(f"migration not in {phases} within {timeout}s: {last}\n"
                         + (describe() if describe else ""))


