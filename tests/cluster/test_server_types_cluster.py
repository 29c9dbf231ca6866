"""Only what gpushift can see, on the real control plane with Kubeflow's real
notebook-controller: a VSCode Notebook (server type group-one) that the webhook already
knows gets no sidecar; and a sidecar that does run in a VSCode pod (the webhook had not
listed its Notebook yet) reads its Notebook under the pod's own RBAC and stays inert —
no idle move off the GPU, moves refused, `optimizerOff` in runtime-config.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_sidecar_idle as idle_module
import test_sidecar_patching as patching
import test_webhook_cluster as webhook_cluster
from gpushift_testing import controlplane as cpmod
from gpushift_testing.kube import wait_for
from gpushift_testing.sidecar_process import PodFacts, SidecarProcess
from gpushift_testing.webhook_process import (
    LocalWebhook,
    serve_local_webhook,
)
from gpushift_testing.workloads import wait_running

from gpushift_core.admin_settings import IdleSettings
from gpushift_webhook.config import WebhookConfig

SERVER_TYPE = "notebooks.kubeflow.org/server-type"
STOPPED = "kubeflow-resource-stopped"
VSCODE = "group-one"
LIST_INTERVAL = 1.0
SETTINGS = WebhookConfig(
    profiles=[patching.DEFAULT_PROFILE], default_profile=patching.DEFAULT_PROFILE.name,
    image_map=patching.IMAGE_MAP,
    idle=IdleSettings(timeout_seconds=3, min_seconds=3, max_seconds=20, warning_seconds=2))


@pytest.fixture(scope="module")
def gpushift_listing(control_plane: cpmod.ControlPlane,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWebhook]:
    """The chart with the webhook as a local process that also runs the guard, and so
    keeps the Notebooks' server types (listed every second)."""
    hook = serve_local_webhook(control_plane.kubeconfig, control_plane.api_client(),
                               tmp_path_factory.mktemp("webhook"), "--guard",
                               "--guard-interval", str(LIST_INTERVAL),
                               "--guard-lease-name", "gpushift-guard-server-types")
    try:
        yield hook
    finally:
        hook.stop()


@pytest.fixture
def sidecar_settings() -> WebhookConfig:
    return SETTINGS


@pytest.fixture
def sidecar_args() -> list[str]:
    return ["--idle-tick", "0.1", "--idle-annotations-interval", "1"]


def test_a_vscode_notebook_the_webhook_knows_gets_no_sidecar(
        gpushift_listing: LocalWebhook, control_plane: cpmod.ControlPlane, admin: Any,
        namespace: str) -> None:
    assert control_plane.notebook_controller_running, control_plane.notebook_controller_reason
    webhook_cluster.label_namespace(admin.core, namespace, "true")
    # Created stopped (as after Kubeflow's Stop): no pod until Start, so the webhook has
    # listed the Notebook by then.
    webhook_cluster.create_notebook(admin.custom, namespace, "code", annotations={
        SERVER_TYPE: VSCODE, STOPPED: "2026-01-01T00:00:00Z"})
    wait_for("the stopped StatefulSet", lambda: admin.apps.read_namespaced_stateful_set(
        "code", namespace).spec.replicas == 0)
    time.sleep(4 * LIST_INTERVAL)
    admin.custom.patch_namespaced_custom_object(
        *patching.NB, namespace, "notebooks", "code",
        {"metadata": {"annotations": {STOPPED: None}}})
    pod = webhook_cluster.running_pod(admin.core, namespace, "code")
    assert webhook_cluster.INJECTED not in (pod.metadata.annotations or {})
    assert not any(c.name == webhook_cluster.SIDECAR
                   for c in (pod.spec.init_containers or []) + pod.spec.containers)
    assert (f"server type '{VSCODE}' is in neither server_types.inject nor "
            "server_types.inert") in gpushift_listing.logs()
    # A Jupyter Notebook beside it is injected as always.
    webhook_cluster.create_notebook(admin.custom, namespace, "lab",
                                    annotations={SERVER_TYPE: "jupyter"})
    lab = webhook_cluster.running_pod(admin.core, namespace, "lab")
    assert webhook_cluster.INJECTED in (lab.metadata.annotations or {})


def test_a_sidecar_in_a_vscode_gpu_pod_stays_inert(
        admin: Any, namespace: str, tmp_path: Path, control_plane: cpmod.ControlPlane,
        start_sidecar: Callable[..., SidecarProcess]) -> None:
    assert control_plane.notebook_controller_running, control_plane.notebook_controller_reason
    workspace = tmp_path / "code-workspace"
    idle_module.gpu_notebook(admin, namespace, "code", workspace, {SERVER_TYPE: VSCODE})
    try:
        gpu_pod = wait_running(admin.core, namespace, "code-0")
        sc = start_sidecar(PodFacts.of(gpu_pod), workspace, "run-code")

        def idle() -> dict[str, Any]:
            status, body = sc.request("GET", "/idle")
            assert status == 200, body
            return body

        off = wait_for("the server type read from the Notebook", lambda: (
            s if VSCODE in ((s := idle())["reason"] or "") else None), 15,
            describe=lambda: (idle(), sc.logs()[-2000:]))
        assert off["state"] == "inert"
        runtime = json.loads((sc.runtime_dir / "runtime-config.json").read_text())
        assert runtime["optimizerOff"].startswith(
            f"the GPU optimizer is off for server type '{VSCODE}'")
        # Even with the notebook side registered (an authenticated write), and past the
        # 3 s timeout: never moved.
        status, snap = sc.request("PUT", "/idle/timeout", {"seconds": 3})
        assert status == 200 and snap["notebook_side_registered"] is True, snap
        assert snap["state"] == "inert"
        time.sleep(SETTINGS.idle.timeout_seconds + 2)
        assert idle()["state"] == "inert"
        status, refused = sc.request("POST", "/migrations",
                                     {"target": "cpu", "reason": "manual"})
        assert status == 409 and refused["error"] == "optimizer_off", refused
        assert sc.request("GET", "/migrations/current")[0] == 404
        assert wait_running(admin.core, namespace, "code-0").metadata.uid == \
            gpu_pod.metadata.uid
        assert sc.stop() == 0
        assert "Traceback" not in sc.logs()
    finally:
        try:
            admin.core.delete_persistent_volume(f"{namespace}-code-workspace"[:63])
        except Exception as e:
            if getattr(e, "status", None) != 404:
                raise
