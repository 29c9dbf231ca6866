"""A sidecar that cannot start never keeps the notebook from starting: the real
apiserver, Kubeflow's real notebook-controller, the chart and the webhook process with
its guard, whose sidecar image lies on a registry no kubelet can reach
(`registry.invalid`, a name reserved never to resolve).

The pods run on kwok nodes, which do not pull images: kwok reports every container
running. Where a real kubelet would report the pull failure, the test writes the pod's
status as the kubelet does (`kubelet_reports_pull_failure`: Pending, the native
sidecar waiting in ImagePullBackOff, the notebook container in PodInitializing). That
status write is the only stand-in; the guard, the webhook, the controller and the
StatefulSet do the rest for real: the Notebook gets the optimizer-off marker, the stuck
pod is deleted, the StatefulSet creates a pod from the new template and the webhook
leaves it without a sidecar. Stop removes the marker; Start injects the sidecar again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import test_webhook_cluster as webhook_cluster
import yaml
from gpushift_testing import controlplane as cpmod
from gpushift_testing.kube import wait_for
from gpushift_testing.webhook_process import LocalWebhook, serve_local_webhook
from gpushift_testing.workloads import wait_running
from test_guard_cluster import notebook_events

from gpushift_core.labels import KUBEFLOW_STOPPED_ANNOTATION, OPTIMIZER_OFF_ENV

NB = ("kubeflow.org", "v1")
UNPULLABLE = "registry.invalid/gpushift/sidecar:0.1.0"
PULL_MESSAGE = (f'Back-off pulling image "{UNPULLABLE}": ErrImagePull: failed to resolve '
                'reference: dial tcp: lookup registry.invalid: no such host')


@pytest.fixture(scope="module")
def unpullable_sidecar(control_plane: cpmod.ControlPlane,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWebhook]:
    """The chart with the webhook (and its guard, every second) as a local process whose
    sidecar image cannot be pulled; the guard waits 2 s before it calls a sidecar
    stuck."""
    workdir = tmp_path_factory.mktemp("webhook")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({"sidecar": {"image": UNPULLABLE},
                                      "guard": {"sidecar_start_grace_seconds": 2}}))
    hook = serve_local_webhook(control_plane.kubeconfig, control_plane.api_client(), workdir,
                               "--config", str(config), "--guard", "--guard-interval", "1",
                               "--guard-lease-name", "gpushift-guard-stuck-sidecar")
    try:
        yield hook
    finally:
        hook.stop()


def kubelet_reports_pull_failure(core: Any, pod: Any) -> None:
    """Write pod `pod`'s status as a kubelet that cannot pull the sidecar image does
    (kwok, which plays the node here, pulls nothing and would report it running)."""
    names = [c.name for c in pod.spec.containers]
    core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized",
             "message": f"containers with incomplete status: [{webhook_cluster.SIDECAR}]"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"}],
        "initContainerStatuses": [{
            "name": webhook_cluster.SIDECAR, "image": UNPULLABLE, "imageID": "",
            "ready": False, "started": False, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": PULL_MESSAGE}}}],
        "containerStatuses": [{
            "name": name, "image": c.image, "imageID": "", "ready": False, "started": False,
            "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
            for name, c in zip(names, pod.spec.containers, strict=True)],
    }})


def marker_of(custom: Any, namespace: str, name: str) -> str | None:
    nb = custom.get_namespaced_custom_object(*NB, namespace, "notebooks", name)
    for item in nb["spec"]["template"]["spec"]["containers"][0].get("env") or []:
        if item["name"] == OPTIMIZER_OFF_ENV:
            return str(item["value"])
    return None


def set_stopped(custom: Any, namespace: str, name: str, stopped: bool) -> None:
    value = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if stopped else None
    custom.patch_namespaced_custom_object(*NB, namespace, "notebooks", name, {
        "metadata": {"annotations": {KUBEFLOW_STOPPED_ANNOTATION: value}}})


def sidecar_of(pod: Any) -> Any:
    return next((c for c in (pod.spec.init_containers or [])
                 if c.name == webhook_cluster.SIDECAR), None)


def test_a_sidecar_that_cannot_be_pulled_does_not_keep_the_notebook_from_starting(
        unpullable_sidecar: LocalWebhook, control_plane: cpmod.ControlPlane, admin: Any,
        namespace: str) -> None:
    assert control_plane.notebook_controller_running, control_plane.notebook_controller_reason
    webhook_cluster.label_namespace(admin.core, namespace, "true")
    webhook_cluster.create_notebook(admin.custom, namespace, "nb")
    first = webhook_cluster.running_pod(admin.core, namespace, "nb")
    assert sidecar_of(first) is not None and sidecar_of(first).image == UNPULLABLE
    kubelet_reports_pull_failure(admin.core, first)

    released = wait_for("the notebook's pod recreated without the sidecar", lambda: (
        p if (p := admin.core.read_namespaced_pod("nb-0", namespace)).metadata.uid
        != first.metadata.uid and not p.metadata.deletion_timestamp else None), 60,
        interval=0.25, describe=unpullable_sidecar.logs)
    pod = wait_running(admin.core, namespace, "nb-0", not_uid=first.metadata.uid, timeout=60)
    assert sidecar_of(pod) is None and sidecar_of(released) is None
    assert webhook_cluster.INJECTED not in (pod.metadata.annotations or {})
    reason = marker_of(admin.custom, namespace, "nb")
    assert reason is not None and "ImagePullBackOff" in reason and UNPULLABLE in reason
    env = {e.name: e.value for e in pod.spec.containers[0].env or []}
    assert env[OPTIMIZER_OFF_ENV] == reason  # what the server extension shows
    [event] = notebook_events(admin.core, namespace, "nb", "SidecarNotStarted")
    assert event.type == "Warning" and reason in event.message
    assert "the guard turned the optimizer off" in unpullable_sidecar.logs()

    # Stop: the marker goes (no pod to restart); Start tries the sidecar again.
    set_stopped(admin.custom, namespace, "nb", True)
    wait_for("the marker removed while stopped",
             lambda: marker_of(admin.custom, namespace, "nb") is None, 30, interval=0.25,
             describe=unpullable_sidecar.logs)
    [retry] = notebook_events(admin.core, namespace, "nb", "SidecarRetryOnStart")
    assert retry.type == "Normal"
    wait_for("no pod while stopped", lambda: not admin.core.list_namespaced_pod(
        namespace, label_selector="notebook-name=nb").items, 30, interval=0.25)
    set_stopped(admin.custom, namespace, "nb", False)
    again = webhook_cluster.running_pod(admin.core, namespace, "nb")
    assert sidecar_of(again) is not None
    assert webhook_cluster.INJECTED in (again.metadata.annotations or {})
