"""Least-privilege access in the local control plane: ServiceAccount tokens, Kubeflow's
real user roles with the chart's sidecar ClusterRole aggregated into kubeflow-edit (what a
notebook pod's token holds in a Kubeflow profile namespace), and the webhook's RBAC as the
chart renders it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from gpushift_testing.binaries import kubeflow_path
from gpushift_testing.controlplane import binary_paths
from gpushift_testing.kube import wait_for

CHART = Path(__file__).resolve().parents[2] / "charts" / "gpushift"
EDITOR_SA = "default-editor"  # the ServiceAccount of a Kubeflow profile namespace
KUBEFLOW_EDIT = "kubeflow-edit"  # what a profile binds default-editor to
# Kubeflow's user roles, unchanged (../shared/kubeflow/README.md says where from).
KUBEFLOW_ROLE_FILES = ("rbac/kubeflow-roles.yaml", "rbac/notebook-controller-user-roles.yaml")
AGGREGATE_TO_EDIT = "rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit"
# The release name the sidecar ClusterRole of `install_sidecar_cluster_role` is rendered
# with: no test's helm release uses it, so helm never finds it in its way.
ACCESS_RELEASE = "gpushift-access"
SIDECAR_ROLE = f"{ACCESS_RELEASE}-notebook-sidecar"


def helm_template(release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    """The chart's documents as `helm template release --namespace namespace *args`."""
    helm = binary_paths()["helm"]
    assert helm.is_file(), f"helm missing: run hack/build-controlplane.sh helm ({helm})"
    out = subprocess.run(
        [str(helm), "template", release, str(CHART), "--namespace", namespace, *args],
        capture_output=True, text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def sidecar_cluster_role(release: str = ACCESS_RELEASE) -> dict[str, Any]:
    """The chart's sidecar ClusterRole (with its aggregation label) as rendered."""
    roles = [d for d in helm_template(release, "gpushift",
                                      "--show-only", "templates/rbac-sidecar.yaml")
             if d["kind"] == "ClusterRole"
             and d["metadata"]["labels"].get("app.kubernetes.io/component") == "sidecar"]
    assert len(roles) == 1, roles
    return roles[0]


def sidecar_rules() -> list[dict[str, Any]]:
    """The rules of the chart's sidecar ClusterRole."""
    return list(sidecar_cluster_role()["rules"])


def kubeflow_roles() -> list[dict[str, Any]]:
    """Kubeflow's user ClusterRoles (kubeflow-admin/-edit/-view, aggregated, and the
    Kubernetes and Notebook rules aggregated into them), as in its manifests."""
    docs = []
    for relative in KUBEFLOW_ROLE_FILES:
        path = kubeflow_path(relative)
        assert path.is_file(), f"Kubeflow's roles missing: {path}"
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _create_or_keep(rbac: Any, body: dict[str, Any]) -> None:
    from kubernetes import client

    try:
        rbac.create_cluster_role(body)
    except client.ApiException as e:
        if e.status != 409:
            raise


def install_kubeflow_roles(rbac: Any) -> None:
    """Kubeflow's user ClusterRoles, created once per control plane (ones already there
    are kept: they are these, created by an earlier call)."""
    for doc in kubeflow_roles():
        _create_or_keep(rbac, doc)


def install_sidecar_cluster_role(rbac: Any) -> str:
    """The chart's sidecar ClusterRole (release ACCESS_RELEASE), which Kubeflow's
    kubeflow-edit aggregates by its label; replaced when the chart's rules changed.
    Returns its name."""
    role = sidecar_cluster_role()
    name = str(role["metadata"]["name"])
    _create_or_keep(rbac, role)
    live = rbac.read_cluster_role(name)
    if rbac.api_client.sanitize_for_serialization(live.rules) != role["rules"]:
        role["metadata"]["resourceVersion"] = live.metadata.resource_version
        rbac.replace_cluster_role(name, role)
    return name


def bind_profile_editor(core: Any, rbac: Any, namespace: str, sa: str = EDITOR_SA) -> None:
    """As a Kubeflow profile: ServiceAccount `sa` and a RoleBinding of it to the
    ClusterRole kubeflow-edit, in `namespace` only (the profile controller names both
    default-editor)."""
    core.create_namespaced_service_account(namespace, {"metadata": {"name": sa}})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": sa},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": KUBEFLOW_EDIT},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
    })


def can(authz: Any, user: str, groups: list[str], verb: str, group: str, resource: str,
        namespace: str = "", name: str = "") -> bool:
    """The real authorizer's answer (SubjectAccessReview)."""
    review = authz.create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": {
            "verb": verb, "group": group, "resource": resource, "namespace": namespace,
            "name": name}},
    })
    return bool(review.status.allowed)


def service_account_user(namespace: str, sa: str) -> tuple[str, list[str]]:
    """The user and groups a ServiceAccount token authenticates as."""
    return (f"system:serviceaccount:{namespace}:{sa}",
            ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
             "system:authenticated"])


def wait_sidecar_rules_granted(core: Any, namespace: str, sa: str,
                               timeout: float = 60) -> None:
    """Until the authorizer grants `sa` every rule of the sidecar's ClusterRole in
    `namespace` (aggregation is a controller's, and RBAC reaches the authorizer through
    informers: both take a moment)."""
    from kubernetes import client

    authz = client.AuthorizationV1Api(core.api_client)
    user, groups = service_account_user(namespace, sa)
    wanted = [(verb, group, resource) for rule in sidecar_rules()
              for group in rule["apiGroups"] for resource in rule["resources"]
              for verb in rule["verbs"]]

    def missing() -> list[str]:
        return [f"{verb} {resource}.{group}" for verb, group, resource in wanted
                if not can(authz, user, groups, verb, group, resource, namespace)]

    wait_for(f"{namespace}/{sa} granted the sidecar's rules through {KUBEFLOW_EDIT}",
             lambda: not missing(), timeout=timeout, interval=0.2,
             describe=lambda: f"still denied: {missing()}")


def webhook_rbac(release: str, namespace: str) -> list[dict[str, Any]]:
    """The webhook's ServiceAccount and RBAC as the chart renders them (the guard's grants
    included: rbac.migrationGuard is on by default; and the GPU capacity's, on by
    default too: its readers' Role and RoleBinding, for every ServiceAccount)."""
    return helm_template(release, namespace,
                         "--show-only", "templates/serviceaccount.yaml",
                         "--show-only", "templates/rbac-webhook.yaml",
                         "--show-only", "templates/rbac-capacity-readers.yaml",
                         "--set", "certs.mode=certManager")


def token_for(core: Any, service_account: str, namespace: str) -> str:
    """A bound token of the ServiceAccount (TokenRequest API), as the kubelet projects."""
    return str(core.create_namespaced_service_account_token(
        service_account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token)



def profile_editor_token(core: Any, rbac: Any, namespace: str, sa: str = EDITOR_SA) -> str:
    """A notebook pod's token in a Kubeflow profile namespace, as on a real cluster:
    Kubeflow's user roles, the chart's sidecar ClusterRole aggregated into kubeflow-edit,
    ServiceAccount `sa` bound to kubeflow-edit in `namespace` (`bind_profile_editor`).
    Waits until the authorizer grants the sidecar's rules; returns a token of `sa`."""
    install_kubeflow_roles(rbac)
    install_sidecar_cluster_role(rbac)
    bind_profile_editor(core, rbac, namespace, sa)
    wait_sidecar_rules_granted(core, namespace, sa)
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
