"""The chart's RBAC as rendered: no wildcards or escalation verbs in any variant, the
sidecar's ClusterRole (aggregated into Kubeflow's kubeflow-edit, minimal, never bound
cluster-wide; bound per ServiceAccount by RoleBindings on request), and the webhook's
Role and ClusterRole in both certificate modes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from chart_rendering import NAMESPACE, RELEASE, VARIANTS, all_of, one, render

# --------------------------------------------------------------------------- RBAC


def _verbs(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {v for r in rules if group in r["apiGroups"] and resource in r["resources"]
            for v in r["verbs"]}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_wildcards_in_any_rule(variant):
    for role in all_of(render(*VARIANTS[variant]), "Role") + \
            all_of(render(*VARIANTS[variant]), "ClusterRole"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (role["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_sidecar_cluster_role_is_aggregated_and_minimal():
    docs = render()
    role = one(docs, "ClusterRole", f"{RELEASE}-notebook-sidecar")
    labels = role["metadata"]["labels"]
    assert labels["rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit"] == "true"
    rules = role["rules"]
    assert _verbs(rules, "kubeflow.org", "notebooks") == {"get", "patch"}
    assert _verbs(rules, "", "pods") == {"get"}
    # What the sidecar calls (gpushift_core.kube.KubeApi.create_event), nothing more.
    assert _verbs(rules, "", "events") == {"create"}
    # The quota pre-check of a move to GPU (KubeApi.list_resource_quotas).
    assert _verbs(rules, "", "resourcequotas") == {"list"}
    allowed = {("kubeflow.org", "notebooks"), ("", "pods"), ("", "events"),
               ("", "resourcequotas")}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) in allowed, rule
        assert "resourceNames" not in rule or rule["resourceNames"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_cluster_role_binding_grants_the_sidecar_anything(variant):
    docs = render(*VARIANTS[variant])
    sidecar_role = f"{RELEASE}-notebook-sidecar"
    for crb in all_of(docs, "ClusterRoleBinding"):
        assert crb["roleRef"]["name"] != sidecar_role
        # The webhook's own, and the uninstall cleanup hook's (its own account, for its
        # own role: test_chart_render_hooks.py).
        account = ("cleanup" if crb["roleRef"]["name"] == f"{RELEASE}-cleanup"
                   else "webhook")
        for subject in crb["subjects"]:
            assert subject == {"kind": "ServiceAccount", "name": f"{RELEASE}-{account}",
                               "namespace": NAMESPACE}
    bindings = [rb for rb in all_of(docs, "RoleBinding")
                if rb["roleRef"]["name"] == sidecar_role]
    if variant != "everything":
        assert not bindings


def test_bind_service_accounts_uses_namespaced_role_bindings():
    accounts = [{"namespace": "team-a", "name": "default-editor"},
                {"namespace": "team-a", "name": "ci"},
                {"namespace": "team-b", "name": "default-editor"}]
    docs = render(set_json=(f"sidecar.rbac.bindServiceAccounts={json.dumps(accounts)}",))
    sidecar_role = f"{RELEASE}-notebook-sidecar"
    bindings = [rb for rb in all_of(docs, "RoleBinding")
                if rb["roleRef"]["name"] == sidecar_role]
    subjects = set()
    for rb in bindings:
        assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                 "kind": "ClusterRole", "name": sidecar_role}
        for s in rb["subjects"]:
            assert s["kind"] == "ServiceAccount"
            assert s["namespace"] == rb["metadata"]["namespace"]
            subjects.add((s["namespace"], s["name"]))
    assert subjects == {(a["namespace"], a["name"]) for a in accounts}
    assert sorted(rb["metadata"]["namespace"] for rb in bindings) == ["team-a", "team-b"]


def test_webhook_rbac_self_managed():
    docs = render()
    role = one(docs, "Role", f"{RELEASE}-webhook")
    assert role["metadata"]["namespace"] == NAMESPACE
    rules = role["rules"]
    for rule in rules:
        if "secrets" in rule["resources"]:
            assert not {"list", "watch", "delete", "deletecollection"} & set(rule["verbs"])
            if set(rule["verbs"]) - {"create"}:
                assert rule["resourceNames"] == [f"{RELEASE}-tls"]
    # cert_objects reads, creates and replaces (update) the Secret; it never patches it.
    assert _verbs(rules, "", "secrets") == {"create", "get", "update"}
    assert _verbs(rules, "coordination.k8s.io", "leases") == {"create", "get", "update"}
    for rule in rules:
        if "leases" in rule["resources"] and set(rule["verbs"]) - {"create"}:
            assert rule["resourceNames"] == [f"{RELEASE}-guard"]
    # The webhook creates no Events in its own namespace.
    assert not _verbs(rules, "", "events")
    assert not _verbs(rules, "events.k8s.io", "events")

    cluster = one(docs, "ClusterRole", f"{RELEASE}-webhook")["rules"]
    (mwc_rule,) = [r for r in cluster if "mutatingwebhookconfigurations" in r["resources"]]
    assert mwc_rule["resourceNames"] == [RELEASE]
    assert set(mwc_rule["verbs"]) == {"get", "patch"}
    assert not _verbs(cluster, "", "secrets")
    crb = one(docs, "ClusterRoleBinding", f"{RELEASE}-webhook")
    assert crb["roleRef"]["name"] == f"{RELEASE}-webhook"
    rb = one(docs, "RoleBinding", f"{RELEASE}-webhook")
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": f"{RELEASE}-webhook"}


def test_webhook_rbac_cert_manager_drops_certificate_permissions():
    docs = render("certs.mode=certManager")
    assert not _verbs(one(docs, "Role", f"{RELEASE}-webhook")["rules"], "", "secrets")
    cluster = one(docs, "ClusterRole", f"{RELEASE}-webhook")["rules"]
    assert not [r for r in cluster if "mutatingwebhookconfigurations" in r["resources"]]
    docs = render("certs.mode=certManager", "rbac.migrationGuard=false")
    assert not [d for d in all_of(docs, "ClusterRole")
                if d["metadata"]["name"] == f"{RELEASE}-webhook"]
    # Only the uninstall cleanup hook's binding is left (test_chart_render_hooks.py).
    assert [b["metadata"]["name"] for b in all_of(docs, "ClusterRoleBinding")] == [
        f"{RELEASE}-cleanup"]


@pytest.mark.parametrize("sets", [(), ("certs.mode=certManager",)])
def test_webhook_cluster_role_has_only_the_verbs_the_guard_calls(sets):
    """The guard (gpushift_webhook.guard through gpushift_core.kube.KubeApi) follows the
    Notebooks of all namespaces with a watch (gpushift_webhook.notebook_watch), reads and
    patches one, lists namespaces by label, reads pod <name>-0 by name, deletes it with
    preconditions, creates Events and lists the FailedCreate Events of a StatefulSet: a
    watch on Notebooks only, no pod list, nothing else."""
    cluster = one(render(*sets, "capacity.enabled=false"), "ClusterRole",
                  f"{RELEASE}-webhook")["rules"]
    assert _verbs(cluster, "kubeflow.org", "notebooks") == {"get", "list", "watch", "patch"}
    assert _verbs(cluster, "", "namespaces") == {"list"}
    assert _verbs(cluster, "", "pods") == {"get", "delete"}
    events = _verbs(cluster, "", "events")
    assert events == {"create", "list"}
    assert not _verbs(cluster, "events.k8s.io", "events")
    for rule in cluster:
        assert "watch" not in rule["verbs"] or rule["resources"] == ["notebooks"], rule
    resources = {(g, r) for rule in cluster for g in rule["apiGroups"]
                 for r in rule["resources"]}
    assert resources <= {("kubeflow.org", "notebooks"), ("", "namespaces"), ("", "pods"),
                         ("", "events"), ("admissionregistration.k8s.io",
                                          "mutatingwebhookconfigurations")}


def test_webhook_without_secret_or_guard_has_no_role():
    docs = render("certs.mode=certManager", "rbac.migrationGuard=false")
    assert not [d for d in all_of(docs, "Role") + all_of(docs, "RoleBinding")
                if d["metadata"]["name"] == f"{RELEASE}-webhook"]


def test_capacity_rbac_lists_nodes_and_pods_and_writes_one_config_map():
    """capacity.enabled (default): the publisher lists nodes and pods cluster-wide
    (KubeApi.list_nodes, list_bound_pods), creates its ConfigMap and reads and replaces
    that one only; every ServiceAccount may get that one ConfigMap, nothing else."""
    docs = render()
    name = f"{RELEASE}-gpu-capacity"
    cluster = one(docs, "ClusterRole", f"{RELEASE}-webhook")["rules"]
    assert _verbs(cluster, "", "nodes") == {"list"}
    assert _verbs(cluster, "", "pods") == {"get", "delete", "list"}
    role = one(docs, "Role", f"{RELEASE}-webhook")["rules"]
    assert _verbs(role, "", "configmaps") == {"create", "get", "update"}
    for rule in role:
        if "configmaps" in rule["resources"] and set(rule["verbs"]) - {"create"}:
            assert rule["resourceNames"] == [name]
    reader = one(docs, "Role", f"{RELEASE}-gpu-capacity-reader")
    assert reader["metadata"]["namespace"] == NAMESPACE
    assert reader["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                "resourceNames": [name], "verbs": ["get"]}]
    binding = one(docs, "RoleBinding", f"{RELEASE}-gpu-capacity-reader")
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io",
                                    "kind": "Group", "name": "system:serviceaccounts"}]
    config = one(docs, "ConfigMap", f"{RELEASE}-config")["data"]["config.yaml"]
    assert f"capacity_configmap: {NAMESPACE}/{name}" in config
    args = one(docs, "Deployment", f"{RELEASE}-webhook")["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert args[args.index("--capacity-interval") + 1] == "30"
    for off in ("capacity.enabled=false", "guard.enabled=false"):
        docs = render(off)
        assert not [d for d in all_of(docs, "Role")
                    if d["metadata"]["name"] == f"{RELEASE}-gpu-capacity-reader"]
        assert "--capacity" not in one(docs, "Deployment", f"{RELEASE}-webhook")["spec"][
            "template"]["spec"]["containers"][0]["args"]
        assert "capacity_configmap" not in one(docs, "ConfigMap", f"{RELEASE}-config")[
            "data"]["config.yaml"]
