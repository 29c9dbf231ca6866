"""The idle move of the real `gpushift-sidecar serve` process against the real control plane.

A Notebook created on a GPU (limit, toleration and node selector of the default profile,
the CUDA image) and annotated `gpushift.io/notebook-idle-timeout: "1"`: the admin's
bounds are [3 s, 20 s], so the timeout is 3 s (warning 2 s). The sidecar runs with the
pod's facts and the namespace's `default-editor` kubeconfig bound to the chart's sidecar
rules (as in test_sidecar_migration.py). No browser, no activity report: the sidecar
warns, then patches the Notebook back to CPU with reason idle and the notebook's latest
kishu commit; the notebook controller recreates the pod on a CPU node (kwok), and the
new pod's sidecar takes the migration to `restoring` and counts the reclaimed GPU time.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_sidecar_migration as mig
import test_sidecar_patching as patching
from gpushift_testing.controlplane import GPU_RESOURCE, ControlPlane
from gpushift_testing.kube import pod_summary, wait_for
from gpushift_testing.sidecar_process import PodFacts, SidecarProcess
from gpushift_testing.workloads import create_workspace, gpu_limit, node_kind, wait_running

from gpushift_core.admin_settings import IdleSettings
from gpushift_webhook.config import WebhookConfig

NB_TIMEOUT = "gpushift.io/notebook-idle-timeout"
SETTINGS = WebhookConfig(
    profiles=[patching.DEFAULT_PROFILE], default_profile=patching.DEFAULT_PROFILE.name,
    image_map=patching.IMAGE_MAP,
    idle=IdleSettings(timeout_seconds=10, min_seconds=3, max_seconds=20, warning_seconds=2))


def gpu_notebook(admin: Any, namespace: str, name: str, workspace: Path,
                 annotations: dict[str, str]) -> dict[str, Any]:
    """A Notebook created on a GPU, with a hostPath PV workspace."""
    claim = f"{name}-workspace"
    create_workspace(admin.core, namespace, claim, workspace)
    profile = patching.DEFAULT_PROFILE
    body = {
        "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
        "metadata": {"name": name, "labels": {"app": name}, "annotations": {
            "notebooks.kubeflow.org/server-type": "jupyter", **annotations}},
        "spec": {"template": {"spec": {
            "serviceAccountName": patching.SA,
            "nodeSelector": dict(profile.node_selector),
            "tolerations": [dict(t) for t in profile.tolerations],
            "containers": [{
                "name": name, "image": patching.CUDA_IMAGE, "imagePullPolicy": "IfNotPresent",
                "resources": {"limits": {"cpu": "600m", "memory": "1.2Gi",
                                         GPU_RESOURCE: str(profile.count)},
                              "requests": {"cpu": "500m", "memory": "1Gi"}},
                "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"}],
            }],
            "volumes": [{"name": "workspace",
                         "persistentVolumeClaim": {"claimName": claim}}],
        }}},
    }
    created: dict[str, Any] = admin.custom.create_namespaced_custom_object(
        *patching.NB, namespace, "notebooks", body)
    return created


@pytest.fixture
def sidecar_settings() -> WebhookConfig:
    return SETTINGS


@pytest.fixture
def sidecar_args() -> list[str]:
    return ["--idle-tick", "0.1"]


async def test_an_idle_gpu_notebook_moves_back_to_cpu_without_a_browser(
        admin: Any, namespace: str, tmp_path: Path, control_plane: ControlPlane,
        start_sidecar: Callable[..., SidecarProcess]) -> None:
    assert control_plane.notebook_controller_running, control_plane.notebook_controller_reason
    workspace = tmp_path / "nb-workspace"
    created = gpu_notebook(admin, namespace, "nb", workspace, {NB_TIMEOUT: "1"})
    try:
        gpu_pod = wait_running(admin.core, namespace, "nb-0")
        assert node_kind(admin.core, gpu_pod.spec.node_name) == "gpu", \
            pod_summary(gpu_pod)
        # The notebook- key stays on the Notebook: changing it never recreates the pod.
        assert NB_TIMEOUT not in (gpu_pod.metadata.annotations or {})
        train = workspace / "work" / "train.ipynb"
        mig.kishu_db(train, "c-1", "c-2", workspace=workspace)

        t0 = time.monotonic()
        old = start_sidecar(PodFacts.of(gpu_pod), workspace, "run-gpu")
        status, registered = old.request("POST", "/notebooks", {"path": str(train)})
        assert status == 200 and registered["checkpoint"]["commit_id"] == "c-2", registered

        def idle() -> dict[str, Any]:
            status, body = old.request("GET", "/idle")
            assert status == 200, body
            return body

        # The annotation's 1 s is clamped into the admin's bounds: 3 s.
        clamped = wait_for("timeout from the annotation", lambda: (
            s if (s := idle())["timeout_source"] == "annotation" else None), 10,
            interval=0.05, describe=lambda: (idle(), old.logs()[-2000:]))
        assert clamped["timeout"] == 3
        assert f"{NB_TIMEOUT}: 1s is outside the admin's bounds [3s, 20s]; using 3s" in \
            clamped["reason"]
        # Nobody acts: the warning first, then the move.
        warned = wait_for("warning", lambda: s if (s := idle())["state"] == "warning" else None,
                          10, interval=0.05, describe=idle)
        assert warned["warning_until"] > time.time()
        moving = wait_for("moving", lambda: s if (s := idle())["state"] == "moving"
                          and s["migration"] else None, 10, interval=0.05, describe=idle)
        m = old.migration()
        assert moving["migration"] == m["id"]
        assert (m["target"], m["reason"], m["pending_cell"]) == ("cpu", "idle", None)
        assert m["checkpoint"] == {"notebook_path": str(train), "commit_id": "c-2"}
        assert "no GPU work for 3s on 1 GPU(s)" in m["notes"][0]
        decided_s = time.monotonic() - t0

        cpu_pod = wait_running(admin.core, namespace, "nb-0",
                                        not_uid=gpu_pod.metadata.uid)
        moved_s = time.monotonic() - t0
        assert node_kind(admin.core, cpu_pod.spec.node_name) == "cpu"
        assert gpu_limit(cpu_pod) is None
        assert cpu_pod.spec.containers[0].image == patching.CPU_IMAGE
        spec = mig.read_notebook(admin, namespace)["spec"]["template"]["spec"]
        assert "nodeSelector" not in spec and "tolerations" not in spec
        assert mig.annotation(mig.read_notebook(admin, namespace), mig.MIRROR)["target"] == "cpu"
        old.wait_phase("recreating")
        story = mig.wait_events(admin, namespace, "MigrationRequested", "CheckpointVerified",
                                "NotebookPatched")
        requested = next(e for e in story if e.reason == "MigrationRequested")
        assert "to CPU: requested (idle)" in requested.message
        assert all(e.involved_object.uid == created["metadata"]["uid"] for e in story)
        mig.wait_gone(admin, namespace, gpu_pod.metadata.uid)
        assert old.stop() == 0

        # The new pod: the migration arrives on CPU; the GPU time is counted there.
        new = start_sidecar(PodFacts.of(cpu_pod), workspace, "run-cpu")
        new.wait_phase("restoring")
        assert new.request("GET", "/idle")[1]["state"] == "inert"
        status, done = new.request("POST", "/migrations/current/restore",
                                   {"ok": True, "restored": ["model"]})
        assert status == 200 and done["phase"] == "done" and done["reason"] == "idle"
        token = (new.runtime_dir / "api-token").read_text().strip()
        req = urllib.request.Request(new.url + "/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            metrics = r.read().decode()
        assert "gpushift_sidecar_gpu_idle_seconds_reclaimed_total 3.0" in metrics
        assert new.stop() == 0
        mig.no_traceback(old, new)
        print(f"\nidle move decided after {decided_s:.1f}s, CPU pod Running after "
              f"{moved_s:.1f}s")
    finally:
        try:
            admin.core.delete_persistent_volume(f"{namespace}-nb-workspace"[:63])
        except Exception as e:
            if getattr(e, "status", None) != 404:
                raise
