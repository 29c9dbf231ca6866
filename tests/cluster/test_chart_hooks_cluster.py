"""The chart's hooks run for real on the local control plane: release RELEASE installed
by helm with the webhook as a local process, and the local pod runner (test harness)
running the hook and test pods' command -- `gpushift-webhook uninstall-cleanup` and
`probe-injection` from this environment, under their own ServiceAccounts' tokens -- so
each pod ends Succeeded or Failed by its exit code (kwok leaves pods labelled
kwok_stages.RUN_LOCALLY_LABEL to the runner; the chart labels its hook pods so through
`hookPodLabels`).

- `helm test` passes against a webhook that injects, and fails when it does not;
- the hook's and the test's RBAC, asked of the real authorizer;
- `helm uninstall` runs the cleanup Job, and leaves no MutatingWebhookConfiguration and
  no TLS Secret, although the webhook still runs while the hook does (as the
  Deployment's replicas do until helm deletes it);
- a replica that outlives its configuration writes the Secret owned by the
  configuration it last saw, and the garbage collector deletes it.

The uninstall test is last: the release is the module's.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_rbac_cases import Access, assert_access
from gpushift_testing import controlplane as cpmod
from gpushift_testing.binaries import binary_paths
from gpushift_testing.kube import delete_namespaces, wait_for
from gpushift_testing.kwok_stages import RUN_LOCALLY_LABEL
from gpushift_testing.pki import write_kubeconfig
from gpushift_testing.pod_runner import PodRunner
from gpushift_testing.webhook_process import (
    CHART,
    NAMESPACE,
    RELEASE,
    LocalWebhook,
    serve_local_webhook,
)
from kubernetes import client

TLS_SECRET = f"{RELEASE}-tls"  # the chart's self-managed Secret
CLEANUP = f"{RELEASE}-cleanup"
TEST = f"{RELEASE}-test"
TEAM = "gpushift-hooks-team"  # tests.namespace: injection enabled
OTHER = "gpushift-hooks-other"  # injection not enabled


class Setup:
    def __init__(self, plane: cpmod.ControlPlane, webhook: LocalWebhook, runner: PodRunner,
                 state: Path, api: Any) -> None:
        self.plane, self.webhook, self.runner, self.state = plane, webhook, runner, state
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.authz = client.AuthorizationV1Api(api)
        self.raw = api

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(binary_paths()["helm"]), "--kubeconfig",
                               str(self.plane.kubeconfig), *args], capture_output=True,
                              text=True, timeout=180, check=False)
        if check:
            assert proc.returncode == 0, f"helm {args} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def pod_log(self, namespace: str, prefix: str, container: str) -> str:
        """What the runner's processes of the newest pod named `prefix...` printed."""
        logs = sorted((self.state / "pods" / namespace).glob(f"{prefix}*/logs/{container}.log"),
                      key=lambda p: p.stat().st_mtime)
        assert logs, f"no pod {namespace}/{prefix}* was run by the pod runner"
        return logs[-1].read_text()


VALUES = (f"tests.namespace={TEAM}",)
STRING_VALUES = (f"hookPodLabels.{RUN_LOCALLY_LABEL}=true",)


@pytest.fixture(scope="module")
def setup(control_plane: cpmod.ControlPlane,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    api = control_plane.api_client()
    core = client.CoreV1Api(api)
    for ns, labels in ((TEAM, {"gpushift.io/enabled": "true"}), (OTHER, {})):
        core.create_namespace({"metadata": {"name": ns, "labels": {
            "gpushift.io/test": "true", **labels}}})
    state = tmp_path_factory.mktemp("runner")
    runner = PodRunner(control_plane.kubeconfig, state, grace=2).start()
    # The chart's own Secret name (the local webhook's default is another).
    webhook = serve_local_webhook(control_plane.kubeconfig, api,
                                  tmp_path_factory.mktemp("webhook"),
                                  "--secret-name", TLS_SECRET, sets=VALUES,
                                  set_strings=STRING_VALUES)
    try:
        yield Setup(control_plane, webhook, runner, state, api)
    finally:
        webhook.stop()
        runner.stop()
        delete_namespaces(core, [TEAM, OTHER])
        api.close()


def absent(read: Any, *args: str) -> bool:
    try:
        read(*args)
    except client.ApiException as exc:
        return bool(exc.status == 404)
    return False


# ------------------------------------------------------------- the harness: Jobs run locally


def test_a_job_pod_the_runner_runs_ends_with_its_exit_code(setup: Setup) -> None:
    """kwok would mark these pods Succeeded without running them; the runner runs the
    command and reports its exit code."""
    ns = TEAM

    def job(name: str, code: int) -> None:
        setup.batch.create_namespaced_job(ns, {
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"labels": {RUN_LOCALLY_LABEL: "true"}},
                "spec": {"restartPolicy": "Never", "containers": [{
                    "name": "main", "image": "python:3.11",
                    "command": ["python", "-c",
                                f"print('ran with exit code {code}'); raise SystemExit({code})"],
                }]}}}})

    ok, bad = f"ok-{uuid.uuid4().hex[:5]}", f"bad-{uuid.uuid4().hex[:5]}"
    job(ok, 0)
    job(bad, 3)
    try:
        def finished(name: str, kind: str) -> bool:
            status = setup.batch.read_namespaced_job_status(name, ns).status
            return any(c.type == kind and c.status == "True" for c in status.conditions or [])

        wait_for(f"Job {ok} Complete", lambda: finished(ok, "Complete"), timeout=60)
        wait_for(f"Job {bad} Failed", lambda: finished(bad, "Failed"), timeout=60)
        (pod,) = setup.core.list_namespaced_pod(ns, label_selector=f"job-name={bad}").items
        assert pod.status.phase == "Failed"
        (status,) = pod.status.container_statuses
        assert status.state.terminated.exit_code == 3
        assert status.state.terminated.reason == "Error"
        assert "ran with exit code 3" in setup.pod_log(ns, bad, "main")
        assert "ran with exit code 0" in setup.pod_log(ns, ok, "main")
    finally:
        for name in (ok, bad):
            setup.batch.delete_namespaced_job(name, ns, propagation_policy="Background")


# ----------------------------------------------------------------------------- helm test


def test_helm_test_passes_against_a_webhook_that_injects(setup: Setup) -> None:
    t = time.monotonic()
    proc = setup.helm("test", RELEASE, "--namespace", NAMESPACE, "--timeout", "90s")
    print(f"helm test: {time.monotonic() - t:.1f}s")
    assert "Phase:          Succeeded" in proc.stdout, proc.stdout
    log = setup.pod_log(NAMESPACE, TEST, "probe-injection")
    assert f"OK: the webhook injected gpushift-sidecar into a notebook pod in namespace {TEAM}" \
        in log, log
    # Passed: the test's pod and RBAC are gone (hook-succeeded); nothing was created.
    wait_for("the test pod deleted", lambda: absent(setup.core.read_namespaced_pod, TEST,
                                                      NAMESPACE), timeout=30)
    assert absent(setup.rbac.read_namespaced_role, TEST, TEAM)
    assert not setup.core.list_namespaced_pod(TEAM).items


def test_helm_test_fails_when_the_webhook_does_not_inject(setup: Setup) -> None:
    """The webhook stopped: failurePolicy Ignore lets the pod through without the
    sidecar, and the test says so."""
    setup.webhook.stop()
    try:
        proc = setup.helm("test", RELEASE, "--namespace", NAMESPACE, "--timeout", "90s",
                          check=False)
        assert proc.returncode != 0, proc.stdout
        assert f"{TEST} failed" in proc.stderr or "Phase:          Failed" in proc.stdout, (
            proc.stdout, proc.stderr)
        log = setup.pod_log(NAMESPACE, TEST, "probe-injection")
        assert f"FAIL: the webhook did not inject a notebook pod in namespace {TEAM}" in log
        pod = setup.core.read_namespaced_pod(TEST, NAMESPACE)  # kept to read
        assert pod.status.phase == "Failed"
    finally:
        setup.webhook.start(*setup.webhook.args)
        wait_for("the webhook ready", setup.webhook.ready, 30, describe=setup.webhook.logs)
    # And passes again, replacing the failed pod.
    setup.helm("test", RELEASE, "--namespace", NAMESPACE, "--timeout", "90s")


# ----------------------------------------------------------------------------- RBAC


def test_hook_and_test_accounts_may_do_exactly_their_job(setup: Setup) -> None:
    """The hooks' RBAC exists only while a hook runs: the chart's rendered hook RBAC is
    applied here as it is, and the real authorizer asked."""
    rendered = setup.helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                          "--set", VALUES[0], "--show-only", "templates/cleanup-hook.yaml",
                          "--show-only", "templates/tests/injection-test.yaml").stdout
    rbac = [d for d in yaml.safe_load_all(rendered)
            if d and d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    assert len(rbac) == 6
    manifest = yaml.safe_dump_all(rbac)
    kubectl = [str(binary_paths()["kubectl"]), "--kubeconfig", str(setup.plane.kubeconfig)]
    subprocess.run([*kubectl, "apply", "-f", "-"], input=manifest, text=True, check=True,
                   capture_output=True, timeout=60)
    cleanup, test = (NAMESPACE, CLEANUP), (NAMESPACE, TEST)
    mwc = ("mutatingwebhookconfigurations", "admissionregistration.k8s.io")
    try:
        assert_access(setup.authz, [
            Access(cleanup, "delete", *mwc, name=RELEASE),
            Access(cleanup, "delete", *mwc, name="another-webhook", allowed=False),
            Access(cleanup, "get", *mwc, name=RELEASE, allowed=False),
            Access(cleanup, "patch", *mwc, name=RELEASE, allowed=False),
            Access(cleanup, "list", *mwc, allowed=False),
            Access(cleanup, "delete", "secrets", namespace=NAMESPACE, name=TLS_SECRET),
            Access(cleanup, "delete", "secrets", namespace=NAMESPACE, name="other",
                   allowed=False),
            Access(cleanup, "get", "secrets", namespace=NAMESPACE, name=TLS_SECRET,
                   allowed=False),
            Access(cleanup, "delete", "secrets", namespace=TEAM, name=TLS_SECRET,
                   allowed=False),
            Access(cleanup, "delete", "pods", namespace=NAMESPACE, allowed=False),
            Access(test, "create", "pods", namespace=TEAM),
            Access(test, "create", "pods", namespace=OTHER, allowed=False),
            Access(test, "create", "pods", namespace=NAMESPACE, allowed=False),
            Access(test, "get", "pods", namespace=TEAM, allowed=False),
            Access(test, "list", "pods", namespace=TEAM, allowed=False),
            Access(test, "delete", "pods", namespace=TEAM, allowed=False),
            Access(test, "create", "secrets", namespace=TEAM, allowed=False),
        ])
    finally:
        subprocess.run([*kubectl, "delete", "-f", "-"], input=manifest, text=True,
                       check=False, capture_output=True, timeout=60)


def test_a_refused_cleanup_says_why_without_a_traceback(setup: Setup, tmp_path: Path) -> None:
    """Under an account without the hook's RBAC: the API's 403 Status, exit status 1."""
    token = setup.core.create_namespaced_service_account_token(
        "default", TEAM, {"spec": {"expirationSeconds": 600}}).status.token
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", setup.plane.server,
                                  setup.plane.ca_file, token, "default")
    proc = subprocess.run([str(Path(sys.executable).parent / "gpushift-webhook"),
                           "uninstall-cleanup", "--namespace", NAMESPACE,
                           "--webhook-configuration", RELEASE, "--secret-name", TLS_SECRET,
                           "--kubeconfig", str(kubeconfig)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "uninstall-cleanup: the API call failed: 403 Forbidden" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not absent(setup.admission.read_mutating_webhook_configuration, RELEASE)


# ----------------------------------------------------------- a replica outliving its config


def test_a_replica_outliving_its_configuration_leaves_no_secret(setup: Setup,
                                                                tmp_path: Path) -> None:
    """The hook deleted the configuration and the Secret; a replica's certificate pass
    before it stops writes the Secret again -- owned by the configuration it last saw,
    so the garbage collector deletes it (before: unowned, left behind)."""
    from gpushift_certs.rotation import RotationPolicy
    from gpushift_core.kube import KubeApi
    from gpushift_webhook.cert_objects import CertificateObjects
    from gpushift_webhook.self_managed import OwnerSeen, SelfManagedSettings, reconcile_once

    name, secret_name = "gpushift-outlived", "gpushift-outlived-tls"
    setup.admission.create_mutating_webhook_configuration({
        "metadata": {"name": name},
        "webhooks": [{"name": "never.gpushift.io", "admissionReviewVersions": ["v1"],
                      "sideEffects": "None", "failurePolicy": "Ignore",
                      "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
                      "objectSelector": {"matchLabels": {"gpushift-outlived": "never"}},
                      "rules": [{"operations": ["CREATE"], "apiGroups": [""],
                                 "apiVersions": ["v1"], "resources": ["pods"]}]}]})
    settings = SelfManagedSettings(namespace=NAMESPACE, secret_name=secret_name,
                                   webhook_configuration=name, cert_dir=tmp_path,
                                   policy=RotationPolicy(dns_names=["outlived.test"]))
    objects = CertificateObjects(KubeApi.connect(str(setup.plane.kubeconfig)))
    seen = OwnerSeen()
    asyncio.run(reconcile_once(objects, settings, seen))
    uid = setup.admission.read_mutating_webhook_configuration(name).metadata.uid
    assert seen.owner is not None and seen.owner.uid == uid
    # What the pre-delete hook does, then one more pass of the still running replica.
    setup.admission.delete_mutating_webhook_configuration(name)
    try:  # (the garbage collector may have been quicker: it is owned)
        setup.core.delete_namespaced_secret(secret_name, NAMESPACE)
    except client.ApiException as exc:
        assert exc.status == 404
    changes = asyncio.run(reconcile_once(objects, settings, seen))
    assert changes, "the pass wrote no Secret: nothing was tested"
    try:
        (owner,) = setup.core.read_namespaced_secret(secret_name, NAMESPACE) \
            .metadata.owner_references
        assert owner.uid == uid
    except client.ApiException as exc:
        assert exc.status == 404  # the garbage collector was quicker
    wait_for("the garbage collector to delete the Secret",
             lambda: absent(setup.core.read_namespaced_secret, secret_name, NAMESPACE),
             timeout=60)


# ----------------------------------------------------------------------------- uninstall


def test_uninstall_leaves_no_webhook_configuration_and_no_tls_secret(setup: Setup) -> None:
    """Last: uninstalls the module's release."""
    wait_for("the webhook's Secret, owned by its configuration", lambda: (
        setup.core.read_namespaced_secret(TLS_SECRET, NAMESPACE).metadata.owner_references),
        timeout=30)
    assert setup.webhook.process is not None  # running during the hook, as replicas are
    t = time.monotonic()
    setup.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "90s")
    print(f"helm uninstall: {time.monotonic() - t:.1f}s")
    log = setup.pod_log(NAMESPACE, CLEANUP, "cleanup")
    assert f"MutatingWebhookConfiguration {RELEASE}: deleted" in log, log
    # The Secret is owned by the configuration: the garbage collector may delete it
    # between the hook's two deletes.
    assert (f"Secret {NAMESPACE}/{TLS_SECRET}: deleted" in log
            or f"Secret {NAMESPACE}/{TLS_SECRET}: already absent" in log), log
    assert absent(setup.admission.read_mutating_webhook_configuration, RELEASE)
    # helm deletes the Deployment: the replicas stop (here: the local process).
    setup.webhook.stop()
    wait_for("no TLS Secret", lambda: absent(setup.core.read_namespaced_secret, TLS_SECRET,
                                             NAMESPACE), timeout=60)
    time.sleep(3)
    assert absent(setup.core.read_namespaced_secret, TLS_SECRET, NAMESPACE)
    assert absent(setup.admission.read_mutating_webhook_configuration, RELEASE)
    # The hook's own objects went with it (hook-succeeded).
    assert absent(setup.core.read_namespaced_service_account, CLEANUP, NAMESPACE)
    assert absent(setup.rbac.read_cluster_role, CLEANUP)
    assert absent(setup.rbac.read_cluster_role_binding, CLEANUP)
    assert not setup.batch.list_namespaced_job(NAMESPACE).items
    # Run again (a retried hook): both already absent, and that is a success.
    proc = subprocess.run([str(Path(sys.executable).parent / "gpushift-webhook"),
                           "uninstall-cleanup", "--namespace", NAMESPACE,
                           "--webhook-configuration", RELEASE, "--secret-name", TLS_SECRET,
                           "--kubeconfig", str(setup.plane.kubeconfig)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"MutatingWebhookConfiguration {RELEASE}: already absent",
        f"Secret {NAMESPACE}/{TLS_SECRET}: already absent"], proc.stdout
