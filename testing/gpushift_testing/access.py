"""Least-privilege access in the local control plane: ServiceAccount-token kubeconfigs
and the RBAC the chart renders for the sidecar and the webhook."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from gpushift_testing.controlplane import binary_paths

CHART = Path(__file__).resolve().parents[2] / "charts" / "gpushift"
EDITOR_SA = "default-editor"  # the ServiceAccount of a Kubeflow profile namespace
SIDECAR_ROLE = "gpushift-notebook-sidecar"


def helm_template(release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    """The chart's documents as `helm template release --namespace namespace *args`."""
    helm = binary_paths()["helm"]
    assert helm.is_file(), f"helm missing: run hack/build-controlplane.sh helm ({helm})"
    out = subprocess.run(
        [str(helm), "template", release, str(CHART), "--namespace", namespace, *args],
        capture_output=True, text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def sidecar_rules() -> list[dict[str, Any]]:
    """The rules of the chart's sidecar ClusterRole."""
    roles = [d for d in helm_template("gpushift", "gpushift",
                                      "--show-only", "templates/rbac-sidecar.yaml")
             if d["kind"] == "ClusterRole"
             and d["metadata"]["labels"].get("app.kubernetes.io/component") == "sidecar"]
    assert len(roles) == 1, roles
    return list(roles[0]["rules"])


def webhook_rbac(release: str, namespace: str) -> list[dict[str, Any]]:
    """The webhook's ServiceAccount and RBAC as the chart renders them (the guard's grants
    included: rbac.migrationGuard is on by default)."""
    return helm_template(release, namespace,
                         "--show-only", "templates/serviceaccount.yaml",
                         "--show-only", "templates/rbac-webhook.yaml",
                         "--set", "certs.mode=certManager")


def token_for(core: Any, service_account: str, namespace: str) -> str:
    """A bound token of the ServiceAccount (TokenRequest API), as the kubelet projects."""
    return str(core.create_namespaced_service_account_token(
        service_account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token)



def bind_sidecar_rules(core: Any, rbac: Any, namespace: str, sa: str = EDITOR_SA) -> str:
    """Create ServiceAccount `sa` bound to the chart's sidecar rules only (a namespaced
    Role), as in a Kubeflow profile; returns a token of it."""
    core.create_namespaced_service_account(namespace, {"metadata": {"name": sa}})
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": SIDECAR_ROLE}, "rules": sidecar_rules()})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": SIDECAR_ROLE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": SIDECAR_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
    })
    return token_for(core, sa, namespace)


def install_webhook_rbac(api: Any, release: str, namespace: str) -> tuple[list[dict[str, Any]],
                                                                          str]:
    """Create the chart's webhook RBAC in `namespace`; returns (its documents, a token of
    the webhook's ServiceAccount)."""
    from kubernetes import client, utils

    docs = webhook_rbac(release, namespace)
    for doc in docs:
        utils.create_from_dict(api, doc, namespace=namespace)  # type: ignore[no-untyped-call]
    return docs, token_for(client.CoreV1Api(api), f"{release}-gpushift-webhook", namespace)


def delete_cluster_scoped(api: Any, docs: list[dict[str, Any]]) -> None:
    """Delete the ClusterRoles and ClusterRoleBindings among `docs` (gone if absent)."""
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(api)
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            continue
        delete = (rbac.delete_cluster_role if doc["kind"] == "ClusterRole"
                  else rbac.delete_cluster_role_binding)
        try:
            delete(doc["metadata"]["name"])
        except client.ApiException as e:
            if e.status != 404:
                raise
