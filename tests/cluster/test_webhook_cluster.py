"""The webhook in a real control plane: registered by the Helm chart, TLS from its own
self-managed mode, Notebooks turned into pods by the real Kubeflow notebook-controller
and run by kwok."""

from __future__ import annotations

import contextlib
import re
import ssl
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpushift_testing import controlplane as cpmod
from gpushift_testing.kube import wait_for
from gpushift_testing.webhook_process import (
    NAMESPACE,
    RELEASE,
    LocalWebhook,
    install_chart,
    serve_local_webhook,
)
from gpushift_testing.workloads import create_workspace, wait_running
from kubernetes import client

INJECTED = "gpushift.io/injected"
SIDECAR = "gpushift-sidecar"


@pytest.fixture(scope="module")
def gpushift(control_plane: cpmod.ControlPlane,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWebhook]:
    """gpushift installed by helm (opt-in mode) with the webhook running locally."""
    hook = serve_local_webhook(control_plane.kubeconfig, control_plane.api_client(),
                               tmp_path_factory.mktemp("webhook"))
    try:
        yield hook
    finally:
        hook.stop()


def label_namespace(core: Any, name: str, value: str | None) -> None:
    core.patch_namespace(name, {"metadata": {"labels": {"gpushift.io/enabled": value}}})


def workspace(core: Any, namespace: str, name: str, tmp: Path) -> str:
    """A PV + PVC bound to it, as a Kubeflow workspace volume would be."""
    pv = f"{namespace}-{name}"[:60]
    create_workspace(core, namespace, f"{name}-workspace", tmp / pv, pv=pv, wait=False)
    return f"{name}-workspace"


def create_notebook(custom: Any, namespace: str, name: str, *, claim: str | None = None,
                    annotations: dict[str, str] | None = None) -> None:
    container: dict[str, Any] = {
        "name": name,
        "image": "kubeflownotebookswg/jupyter-scipy:v1.9.2",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
    }
    spec: dict[str, Any] = {"containers": [container]}
    if claim:
        container["volumeMounts"] = [{"name": "workspace", "mountPath": "/home/jovyan"}]
        spec["volumes"] = [{"name": "workspace", "persistentVolumeClaim": {"claimName": claim}}]
    custom.create_namespaced_custom_object("kubeflow.org", "v1", namespace, "notebooks", {
        "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {"template": {"spec": spec}},
    })


def running_pod(core: Any, namespace: str, name: str, timeout: float = 90) -> Any:
    return wait_running(core, namespace, f"{name}-0", timeout=timeout, interval=0.25)


def fail_open_count(plane: cpmod.ControlPlane) -> float:
    """apiserver_admission_webhook_fail_open_count for our webhook, from /metrics."""
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    request = urllib.request.Request(f"{plane.server}/metrics",
                                     headers={"Authorization": f"Bearer {plane.token}"})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_admission_webhook_fail_open_count") and \
                'name="pods.gpushift.io"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_notebook_in_opted_in_namespace_gets_the_sidecar(gpushift, control_plane, admin,
                                                          namespace, tmp_path):
    if not control_plane.notebook_controller_running:
        pytest.fail(f"notebook-controller not running: "
                    f"{control_plane.notebook_controller_reason}")
    label_namespace(admin.core, namespace, "true")
    claim = workspace(admin.core, namespace, "alice", tmp_path)
    create_notebook(admin.custom, namespace, "alice", claim=claim)
    statefulset = wait_for("StatefulSet alice",
                           lambda: admin.apps.read_namespaced_stateful_set("alice", namespace))
    assert statefulset.spec.template.spec.containers[0].name == "alice"
    pod = running_pod(admin.core, namespace, "alice")
    assert pod.metadata.labels["notebook-name"] == "alice"
    assert pod.metadata.annotations[INJECTED] == "0.1.0"
    assert pod.spec.node_name.startswith("kwok-cpu"), pod.spec.node_name
    sidecar = next(c for c in pod.spec.init_containers or [] if c.name == SIDECAR)
    assert sidecar.restart_policy == "Always"
    assert sidecar.startup_probe._exec.command[:2] == ["gpushift-sidecar", "probe"]
    assert sidecar.security_context.read_only_root_filesystem is True
    assert sidecar.security_context.run_as_non_root is True
    mounts = {m.mount_path: m.name for m in sidecar.volume_mounts}
    assert mounts["/home/jovyan"] == "workspace"
    assert mounts["/var/run/gpushift"] == "gpushift-runtime"
    # The ServiceAccount token reached the sidecar although it was added after the
    # ServiceAccount admission plug-in ran.
    assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts
    env = {e.name: e for e in sidecar.env}
    assert env["GPUSHIFT_POD_NAME"].value_from.field_ref.field_path == "metadata.name"
    assert env["GPUSHIFT_NOTEBOOK_NAME"].value == "alice"
    notebook = pod.spec.containers[0]
    assert {e.name: e.value for e in notebook.env}["GPUSHIFT_RUNTIME_DIR"] == "/var/run/gpushift"
    assert any(m.name == "gpushift-runtime" for m in notebook.volume_mounts)
    # The kubelet's part (kwok) saw the native sidecar as an init container.
    statuses = {s.name for s in pod.status.init_container_statuses or []}
    assert SIDECAR in statuses, pod.status


def test_gpu_notebook_lands_on_a_gpu_node_with_gpu_facts(gpushift, admin, namespace):
    label_namespace(admin.core, namespace, "true")
    admin.core.create_namespaced_pod(namespace, {
        "metadata": {"name": "gpu-0", "labels": {"notebook-name": "gpu"}},
        "spec": {"containers": [{"name": "gpu", "image": "jupyter-pytorch-cuda:v1",
                                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                  "effect": "NoSchedule"}]},
    })
    pod = wait_for("gpu-0 Running", lambda: (p := admin.core.read_namespaced_pod(
        "gpu-0", namespace)).status.phase == "Running" and p, timeout=60)
    assert pod.spec.node_name.startswith("kwok-gpu"), pod.spec.node_name
    sidecar = next(c for c in pod.spec.init_containers if c.name == SIDECAR)
    env = {e.name: e.value for e in sidecar.env}
    assert env["GPUSHIFT_GPU_RESOURCE"] == "nvidia.com/gpu" and env["GPUSHIFT_GPU_COUNT"] == "1"


def bare_notebook_pod(core: Any, namespace: str, name: str,
                      annotations: dict[str, str] | None = None) -> Any:
    return core.create_namespaced_pod(namespace, {
        "metadata": {"name": name, "labels": {"notebook-name": name},
                     "annotations": annotations or {}},
        "spec": {"containers": [{"name": name, "image": "jupyter-scipy:v1"}]},
    })


def test_unlabelled_namespace_and_opted_out_pods_are_untouched(gpushift, admin, namespace):
    pod = bare_notebook_pod(admin.core, namespace, "plain")
    assert INJECTED not in (pod.metadata.annotations or {})
    assert not pod.spec.init_containers
    label_namespace(admin.core, namespace, "true")
    wait_for("the namespace label to reach the webhook's selector",
             lambda: INJECTED in (bare_notebook_pod(
                 admin.core, namespace, f"probe-{uuid.uuid4().hex[:5]}").metadata.annotations
                 or {}), timeout=30)
    skipped = bare_notebook_pod(admin.core, namespace, "skip",
                                annotations={"gpushift.io/inject": "false"})
    assert INJECTED not in skipped.metadata.annotations
    assert not skipped.spec.init_containers
    # Not a notebook: no notebook-name label, not selected at all.
    other = admin.core.create_namespaced_pod(namespace, {
        "metadata": {"name": "other"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    assert not other.spec.init_containers


def test_webhook_stopped_pods_are_still_created_and_the_reason_is_visible(
        gpushift, control_plane, admin, namespace):
    label_namespace(admin.core, namespace, "true")
    before = fail_open_count(control_plane)
    gpushift.stop()
    try:
        # Opted out: the chart's match condition keeps it from the webhook altogether,
        # so the API server does not even try the stopped webhook (no fail-open).
        opted_out = bare_notebook_pod(admin.core, namespace, "opted-out",
                                      annotations={"gpushift.io/inject": "FALSE"})
        after_opted_out = fail_open_count(control_plane)
        started = time.monotonic()
        pod = bare_notebook_pod(admin.core, namespace, "while-down")
        elapsed = time.monotonic() - started
    finally:
        gpushift.start(*gpushift.args)
    assert INJECTED not in (opted_out.metadata.annotations or {})
    assert after_opted_out == before
    assert INJECTED not in (pod.metadata.annotations or {})
    assert elapsed < 10, f"pod create took {elapsed:.1f}s with the webhook down"
    assert fail_open_count(control_plane) > before
    log = (control_plane.logdir / "kube-apiserver.log").read_text()
    assert re.search(r"pods\.gpushift\.io.*(connection refused|connect:)", log), \
        "the API server's log should name the webhook and the reason"
    wait_for("webhook back", lambda: INJECTED in (bare_notebook_pod(
        admin.core, namespace, f"back-{uuid.uuid4().hex[:5]}").metadata.annotations or {}),
        timeout=30)


def test_certificates_rotated_while_pods_are_created(gpushift, control_plane, admin, namespace):
    """Short lifetimes: the serving certificate is renewed every few seconds and the CA
    is replaced once, while pods are created continuously. Every pod is injected."""
    label_namespace(admin.core, namespace, "true")
    original = gpushift.args
    gpushift.start("--secret-name", "gpushift-rotation-test", "--serving-cert-validity", "9",
                   "--ca-validity", "30", "--ca-propagation-delay", "3")
    try:
        # Switching to another Secret replaces the CA at once (not a rotation): wait
        # until the new CA is published before measuring.
        wait_for("the new CA published",
                 lambda: bundle_published(admin, "gpushift-rotation-test"), timeout=30)
        time.sleep(2)
        wait_for("rotation webhook serving", lambda: INJECTED in (bare_notebook_pod(
            admin.core, namespace, f"warm-{uuid.uuid4().hex[:5]}").metadata.annotations or {}),
            timeout=30)
        before = fail_open_count(control_plane)
        missed = []
        deadline = time.monotonic() + 40
        created = 0
        while time.monotonic() < deadline:
            pod = bare_notebook_pod(admin.core, namespace, f"rot-{created}")
            created += 1
            if INJECTED not in (pod.metadata.annotations or {}):
                missed.append(pod.metadata.name)
            time.sleep(0.2)
        logs = gpushift.logs()
        assert missed == [], f"{len(missed)}/{created} pods not injected"
        assert fail_open_count(control_plane) == before
        assert logs.count("renewed the serving certificate") >= 2, logs[-3000:]
        assert "promoted the next CA" in logs, logs[-3000:]
    finally:
        gpushift.start(*original)
        wait_for("the original CA published again",
                 lambda: bundle_published(admin, "gpushift-webhook-tls"), timeout=30)
        time.sleep(2)
        with contextlib.suppress(client.ApiException):
            admin.core.delete_namespaced_secret("gpushift-rotation-test", NAMESPACE)


def bundle_published(admin: Any, secret_name: str) -> bool:
    """Every webhook of the configuration trusts exactly the Secret's CA bundle."""
    secret = admin.core.read_namespaced_secret(secret_name, NAMESPACE)
    mwc = client.AdmissionregistrationV1Api(admin.raw).read_mutating_webhook_configuration(
        RELEASE)
    return all(w.client_config.ca_bundle == secret.data["ca-bundle.crt"] for w in mwc.webhooks)


def test_self_managed_secret_and_ca_bundle_agree(gpushift, admin):
    # The local process runs with the CLI's default --secret-name.
    wait_for("the Secret's CA bundle published",
             lambda: bundle_published(admin, "gpushift-webhook-tls"), timeout=30)
    secret = admin.core.read_namespaced_secret("gpushift-webhook-tls", NAMESPACE)
    assert set(secret.data) >= {"ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt"}
    mwc = client.AdmissionregistrationV1Api(admin.raw).read_mutating_webhook_configuration(
        RELEASE)
    for webhook in mwc.webhooks:
        assert webhook.failure_policy == "Ignore" and webhook.side_effects == "None"
        assert webhook.client_config.url == gpushift.url
    # The Secret belongs to the configuration (helm uninstall removes both).
    (owner,) = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == (
        "MutatingWebhookConfiguration", RELEASE, mwc.metadata.uid)


def test_the_tls_secret_goes_with_its_webhook_configuration(admin, control_plane, tmp_path):
    """A webhook configuration of its own and the webhook's certificate pass against it:
    the Secret it writes is owned by the configuration, so deleting the configuration
    (as `helm uninstall` does) makes Kubernetes' garbage collector delete the Secret,
    CA key and all. A Secret from before (no owner) is given one on the next pass."""
    import asyncio

    from gpushift_certs.rotation import RotationPolicy
    from gpushift_core.kube import KubeApi
    from gpushift_webhook.cert_objects import CertificateObjects
    from gpushift_webhook.self_managed import SelfManagedSettings, reconcile_once

    name, secret_name = "gpushift-gc-test", "gpushift-gc-test-tls"
    admission = client.AdmissionregistrationV1Api(admin.raw)
    admission.create_mutating_webhook_configuration({
        "metadata": {"name": name},
        "webhooks": [{"name": "never.gpushift.io", "admissionReviewVersions": ["v1"],
                      "sideEffects": "None", "failurePolicy": "Ignore",
                      "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
                      "objectSelector": {"matchLabels": {"gpushift-gc-test": "never"}},
                      "rules": [{"operations": ["CREATE"], "apiGroups": [""],
                                 "apiVersions": ["v1"], "resources": ["pods"]}]}]})
    settings = SelfManagedSettings(namespace=NAMESPACE, secret_name=secret_name,
                                   webhook_configuration=name, cert_dir=tmp_path,
                                   policy=RotationPolicy(dns_names=["gc.test"]))
    objects = CertificateObjects(KubeApi.connect(str(control_plane.kubeconfig)))
    try:
        admin.core.create_namespaced_secret(NAMESPACE, {  # written before owners existed
            "metadata": {"name": secret_name}, "type": "Opaque"})
        changes = asyncio.run(reconcile_once(objects, settings))
        assert changes, changes
        secret = admin.core.read_namespaced_secret(secret_name, NAMESPACE)
        assert set(secret.data) >= {"ca.crt", "ca.key", "tls.crt", "tls.key"}
        (owner,) = secret.metadata.owner_references
        uid = admission.read_mutating_webhook_configuration(name).metadata.uid
        assert (owner.kind, owner.name, owner.uid) == ("MutatingWebhookConfiguration", name,
                                                       uid)
        assert asyncio.run(reconcile_once(objects, settings)) == []  # owned: nothing to do
    finally:
        admission.delete_mutating_webhook_configuration(name)

    def secret_gone() -> bool:
        try:
            admin.core.read_namespaced_secret(secret_name, NAMESPACE)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for("the garbage collector to delete the Secret", secret_gone, timeout=60)


def test_cluster_wide_mode_injects_everywhere_but_opted_out(gpushift, control_plane, admin,
                                                           namespace):
    helm_bin = cpmod.binary_paths()["helm"]
    opted_out = f"{namespace[:50]}-out"
    admin.core.create_namespace({"metadata": {"name": opted_out,
                                             "labels": {"gpushift.io/enabled": "false"}}})
    wait_for(f"ServiceAccount {opted_out}/default",
             lambda: admin.core.read_namespaced_service_account("default", opted_out))
    install_chart(helm_bin, control_plane.kubeconfig, gpushift, "enablement.mode=cluster-wide")
    try:
        # The upgrade keeps the caBundle the webhook published (the chart looks it up).
        wait_for("unlabelled namespace injected", lambda: INJECTED in (bare_notebook_pod(
            admin.core, namespace, f"cw-{uuid.uuid4().hex[:5]}").metadata.annotations or {}),
            timeout=30)
        pod = bare_notebook_pod(admin.core, opted_out, "out")
        assert INJECTED not in (pod.metadata.annotations or {})
        for system in ("kube-system", NAMESPACE):
            pod = bare_notebook_pod(admin.core, system, f"sys-{uuid.uuid4().hex[:5]}")
            assert INJECTED not in (pod.metadata.annotations or {}), system
            admin.core.delete_namespaced_pod(pod.metadata.name, system)
    finally:
        install_chart(helm_bin, control_plane.kubeconfig, gpushift)
        admin.core.delete_namespace(opted_out)
    wait_for("opt-in mode again: unlabelled namespace left alone",
             lambda: INJECTED not in (bare_notebook_pod(
                 admin.core, namespace, f"oi-{uuid.uuid4().hex[:5]}").metadata.annotations
                 or {}), timeout=30)
