"""RBAC questions to the real authorizer (SubjectAccessReview) for the chart's cluster
tests: one `Access` per question with the expected answer, the polled check of a list of
them, and what the sidecar's, the webhook's and the migration guard's ServiceAccounts may
and may not do.

The sidecar runs under the notebook pod's own ServiceAccount. In a Kubeflow profile that
is `default-editor`, bound to Kubeflow's kubeflow-edit, which already lets it do far more
than the sidecar needs (`kubeflow_edit_cases`); the chart's role adds to kubeflow-edit only
`SIDECAR_ADDS_TO_KUBEFLOW_EDIT`. What only a ServiceAccount bound to the sidecar's role
alone is refused (`sidecar_role_only_cases`) holds for `sidecar.rbac.bindServiceAccounts`,
not for default-editor."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from chart_tools import (
    AGGREGATE_LABEL,
    CAPACITY_CONFIGMAP,
    FULLNAME,
    GUARD_LEASE,
    OTHER_NS,
    OTHER_RELEASE_OBJECTS,
    RELEASE_NS,
    TLS_SECRET,
    USER_NS,
    WEBHOOK_SA,
)
from gpushift_testing import access


@dataclass(frozen=True)
class Access:
    """One question to the authorizer and the expected answer."""

    sa: tuple[str, str]  # (namespace, name) of a ServiceAccount
    verb: str
    resource: str
    group: str = ""
    namespace: str = ""  # "" = all namespaces / cluster-scoped
    name: str = ""
    allowed: bool = True

    def __str__(self) -> str:
        where = f"in {self.namespace}" if self.namespace else "cluster-wide"
        obj = f"{self.resource}.{self.group}" if self.group else self.resource
        return (f"{self.sa[0]}:{self.sa[1]} {self.verb} {obj}"
                f"{'/' + self.name if self.name else ''} {where}: "
                f"expected {'allowed' if self.allowed else 'DENIED'}")


def allowed(authz: Any, a: Access) -> bool:
    ns, name = a.sa
    review = authz.create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{ns}:{name}",
            # What a real ServiceAccount token carries (system:authenticated included, so
            # the default discovery roles apply as in a cluster).
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}",
                       "system:authenticated"],
            "resourceAttributes": {"verb": a.verb, "group": a.group, "resource": a.resource,
                                   "namespace": a.namespace, "name": a.name},
        },
    })
    return bool(review.status.allowed)


def assert_access(authz: Any, cases: list[Access], timeout: float = 20) -> None:
    """All answers as expected; polled, since RBAC changes reach the authorizer through
    informers (and aggregation through a controller) a moment later."""

    def wrong() -> list[str]:
        return [str(a) for a in cases if allowed(authz, a) != a.allowed]

    deadline = time.monotonic() + timeout
    bad = wrong()
    while bad and time.monotonic() < deadline:
        time.sleep(0.25)
        bad = wrong()
    assert not bad, "the authorizer answered otherwise:\n  " + "\n  ".join(bad)
    print(f"{len(cases)} access checks as expected "
          f"({sum(a.allowed for a in cases)} allowed, {sum(not a.allowed for a in cases)} denied)")


# (group, resource, verb) the chart's sidecar ClusterRole grants that Kubeflow's
# kubeflow-edit does not (kubeflow-edit may only read Events): the sidecar tells each
# migration step as an Event on the Notebook.
SIDECAR_ADDS_TO_KUBEFLOW_EDIT = frozenset({("", "events", "create")})


def sidecar_cases(sa: tuple[str, str], other_ns: str) -> list[Access]:
    """What the sidecar under `sa` may do in its namespace, and nothing outside it:
    true however the sidecar's role is bound (kubeflow-edit or bindServiceAccounts)."""
    ns = sa[0]
    nb = {"resource": "notebooks", "group": "kubeflow.org"}
    yes = [
        Access(sa, "get", **nb, namespace=ns, name="alice"),
        Access(sa, "patch", **nb, namespace=ns, name="alice"),
        Access(sa, "get", "pods", namespace=ns, name="alice-0"),
        Access(sa, "list", "resourcequotas", namespace=ns),
        Access(sa, "create", "events", namespace=ns),
    ]
    no = [
        Access(sa, "patch", **nb, namespace=other_ns, name="bob"),
        Access(sa, "get", **nb, namespace=other_ns, name="bob"),
        Access(sa, "list", **nb),
        Access(sa, "get", **nb, name="alice"),
        Access(sa, "get", "pods", namespace=other_ns, name="bob-0"),
        Access(sa, "list", "resourcequotas", namespace=other_ns),
        Access(sa, "get", "secrets", namespace=other_ns, name="anything"),
        Access(sa, "create", "events", namespace=other_ns),
        Access(sa, "list", "nodes"),
        Access(sa, "list", "namespaces"),
        Access(sa, "update", "mutatingwebhookconfigurations",
               group="admissionregistration.k8s.io", name=FULLNAME),
        Access(sa, "patch", "mutatingwebhookconfigurations",
               group="admissionregistration.k8s.io", name=FULLNAME),
        Access(sa, "create", "clusterrolebindings", group="rbac.authorization.k8s.io"),
    ]
    return yes + [dataclasses.replace(a, allowed=False) for a in no]


def sidecar_role_only_cases(sa: tuple[str, str]) -> list[Access]:
    """Refused to a ServiceAccount bound to the sidecar's role alone
    (sidecar.rbac.bindServiceAccounts). NOT true of a profile's default-editor:
    kubeflow-edit allows all of it (`kubeflow_edit_cases`)."""
    ns = sa[0]
    nb = {"resource": "notebooks", "group": "kubeflow.org"}
    no = [
        Access(sa, "list", **nb, namespace=ns),
        Access(sa, "delete", **nb, namespace=ns, name="alice"),
        Access(sa, "update", **nb, namespace=ns, name="alice"),
        Access(sa, "get", "secrets", namespace=ns, name="anything"),
        Access(sa, "list", "pods", namespace=ns),
        Access(sa, "delete", "pods", namespace=ns, name="alice-0"),
        Access(sa, "create", "pods", namespace=ns),
        Access(sa, "patch", "events", namespace=ns, name="e"),
        Access(sa, "create", "events", group="events.k8s.io", namespace=ns),
    ]
    return [dataclasses.replace(a, allowed=False) for a in no]


def kubeflow_edit_cases(sa: tuple[str, str]) -> list[Access]:
    """What a profile's default-editor (so every notebook pod's token, and the user's
    code in the notebook) may do in its namespace through Kubeflow's kubeflow-edit,
    gpushift or not: read Secrets, create, patch and delete pods and Notebooks, exec into
    pods."""
    ns = sa[0]
    nb = {"resource": "notebooks", "group": "kubeflow.org"}
    return [
        Access(sa, "list", **nb, namespace=ns),
        Access(sa, "update", **nb, namespace=ns, name="alice"),
        Access(sa, "delete", **nb, namespace=ns, name="alice"),
        Access(sa, "create", **nb, namespace=ns),
        Access(sa, "get", "secrets", namespace=ns, name="anything"),
        Access(sa, "list", "secrets", namespace=ns),
        Access(sa, "list", "pods", namespace=ns),
        Access(sa, "create", "pods", namespace=ns),
        Access(sa, "patch", "pods", namespace=ns, name="alice-0"),
        Access(sa, "delete", "pods", namespace=ns, name="alice-0"),
        Access(sa, "create", "pods/exec", namespace=ns, name="alice-0"),
        Access(sa, "patch", "statefulsets", group="apps", namespace=ns, name="alice"),
        Access(sa, "list", "events", namespace=ns),
        Access(sa, "list", "resourcequotas", namespace=ns),
    ]


def guard_cases(*, granted: bool) -> list[Access]:
    """What the migration guard needs (rbac.migrationGuard), granted or not."""
    sa = WEBHOOK_SA
    nb = {"resource": "notebooks", "group": "kubeflow.org"}
    cases = [
        Access(sa, "get", **nb, namespace=USER_NS, name="alice"),
        Access(sa, "list", **nb),
        Access(sa, "watch", **nb),
        Access(sa, "patch", **nb, namespace=USER_NS, name="alice"),
        Access(sa, "patch", **nb, namespace=OTHER_NS, name="bob"),
        Access(sa, "list", "namespaces"),
        Access(sa, "get", "pods", namespace=USER_NS, name="alice-0"),
        Access(sa, "delete", "pods", namespace=USER_NS, name="alice-0"),
        Access(sa, "create", "events", namespace=USER_NS),
        Access(sa, "create", "events", namespace=RELEASE_NS),
        Access(sa, "list", "events", namespace=USER_NS),
        Access(sa, "get", "leases", group="coordination.k8s.io", namespace=RELEASE_NS,
               name=GUARD_LEASE),
        Access(sa, "update", "leases", group="coordination.k8s.io", namespace=RELEASE_NS,
               name=GUARD_LEASE),
    ]
    return [dataclasses.replace(a, allowed=granted) for a in cases]


def guard_never_cases() -> list[Access]:
    """What the guard's code never calls, so its ServiceAccount never gets it: it watches
    Notebooks only (no pod or namespace watch), reads pod <name>-0 by name (the pod list
    is the capacity publisher's: `capacity_cases`), creates Events (never updates them),
    lists namespaces (never reads one)."""
    sa = WEBHOOK_SA
    nb = {"resource": "notebooks", "group": "kubeflow.org"}
    no = [
        Access(sa, "update", **nb, namespace=USER_NS, name="alice"),
        Access(sa, "delete", **nb, namespace=USER_NS, name="alice"),
        Access(sa, "watch", "pods"),
        Access(sa, "patch", "pods", namespace=USER_NS, name="alice-0"),
        Access(sa, "get", "namespaces", name=USER_NS),
        Access(sa, "watch", "namespaces"),
        Access(sa, "patch", "events", namespace=USER_NS, name="e"),
        Access(sa, "create", "events", group="events.k8s.io", namespace=USER_NS),
        Access(sa, "get", "secrets", namespace=USER_NS, name="anything"),
    ]
    return [dataclasses.replace(a, allowed=False) for a in no]


def webhook_cases() -> list[Access]:
    sa = WEBHOOK_SA
    mwc = {"resource": "mutatingwebhookconfigurations", "group": "admissionregistration.k8s.io"}
    yes = [
        Access(sa, "get", "secrets", namespace=RELEASE_NS, name=TLS_SECRET),
        Access(sa, "update", "secrets", namespace=RELEASE_NS, name=TLS_SECRET),
        Access(sa, "create", "secrets", namespace=RELEASE_NS),
        Access(sa, "get", **mwc, name=FULLNAME),
        Access(sa, "patch", **mwc, name=FULLNAME),
    ]
    no = [
        Access(sa, "get", "secrets", namespace=RELEASE_NS, name="other-secret"),
        Access(sa, "get", "secrets", namespace=RELEASE_NS, name=f"{OTHER_RELEASE_OBJECTS}-tls"),
        Access(sa, "list", "secrets", namespace=RELEASE_NS),
        Access(sa, "get", "secrets", namespace=USER_NS, name=TLS_SECRET),
        Access(sa, "get", "secrets", namespace="kube-system", name=TLS_SECRET),
        Access(sa, "list", "secrets"),
        Access(sa, "delete", "secrets", namespace=RELEASE_NS, name=TLS_SECRET),
        Access(sa, "patch", "secrets", namespace=RELEASE_NS, name=TLS_SECRET),
        Access(sa, "patch", **mwc, name=OTHER_RELEASE_OBJECTS),
        Access(sa, "list", **mwc),
        Access(sa, "delete", **mwc, name=FULLNAME),
        Access(sa, "create", **mwc),
        Access(sa, "patch", "validatingwebhookconfigurations",
               group="admissionregistration.k8s.io", name=FULLNAME),
        Access(sa, "create", "pods", namespace=RELEASE_NS),
        Access(sa, "create", "pods", namespace=USER_NS),
        Access(sa, "create", "clusterrolebindings", group="rbac.authorization.k8s.io"),
        Access(sa, "create", "rolebindings", group="rbac.authorization.k8s.io",
               namespace=RELEASE_NS),
        Access(sa, "escalate", "clusterroles", group="rbac.authorization.k8s.io",
               name=f"{FULLNAME}-webhook"),
        Access(sa, "bind", "clusterroles", group="rbac.authorization.k8s.io", name="cluster-admin"),
        Access(sa, "impersonate", "serviceaccounts", namespace=USER_NS, name="default-editor"),
        Access(sa, "create", "serviceaccounts/token", namespace=USER_NS, name="default-editor"),
    ]
    return yes + [dataclasses.replace(a, allowed=False) for a in no]


def capacity_cases(*, granted: bool) -> list[Access]:
    """What the GPU capacity publisher needs (capacity.enabled, with the guard): list
    nodes and pods cluster-wide, create its ConfigMap, read and replace that one."""
    sa = WEBHOOK_SA
    cases = [
        Access(sa, "list", "nodes"),
        Access(sa, "list", "pods"),
        Access(sa, "list", "pods", namespace=USER_NS),
        Access(sa, "create", "configmaps", namespace=RELEASE_NS),
        Access(sa, "get", "configmaps", namespace=RELEASE_NS, name=CAPACITY_CONFIGMAP),
        Access(sa, "update", "configmaps", namespace=RELEASE_NS, name=CAPACITY_CONFIGMAP),
    ]
    return [dataclasses.replace(a, allowed=granted) for a in cases]


def capacity_never_cases() -> list[Access]:
    """What the capacity publisher never calls: no other ConfigMap, no watch or get of
    nodes and pods beyond the guard's pod get, nothing written to a node."""
    sa = WEBHOOK_SA
    no = [
        Access(sa, "get", "configmaps", namespace=RELEASE_NS, name=f"{FULLNAME}-config"),
        Access(sa, "update", "configmaps", namespace=RELEASE_NS, name=f"{FULLNAME}-config"),
        Access(sa, "update", "configmaps", namespace=RELEASE_NS, name="other"),
        Access(sa, "patch", "configmaps", namespace=RELEASE_NS, name=CAPACITY_CONFIGMAP),
        Access(sa, "delete", "configmaps", namespace=RELEASE_NS, name=CAPACITY_CONFIGMAP),
        Access(sa, "list", "configmaps", namespace=RELEASE_NS),
        Access(sa, "get", "configmaps", namespace=USER_NS, name=CAPACITY_CONFIGMAP),
        Access(sa, "create", "configmaps", namespace=USER_NS),
        Access(sa, "watch", "nodes"),
        Access(sa, "get", "nodes", name="kwok-gpu-0"),
        Access(sa, "patch", "nodes", name="kwok-gpu-0"),
    ]
    return [dataclasses.replace(a, allowed=False) for a in no]


def capacity_reader_cases(sa: tuple[str, str], *, granted: bool = True) -> list[Access]:
    """Any ServiceAccount (a notebook's default-editor) may get the capacity ConfigMap of
    the release namespace (when published), and no other ConfigMap there."""
    no = [
        Access(sa, "get", "configmaps", namespace=RELEASE_NS, name=f"{FULLNAME}-config"),
        Access(sa, "get", "configmaps", namespace=RELEASE_NS, name="other"),
        Access(sa, "list", "configmaps", namespace=RELEASE_NS),
        Access(sa, "watch", "configmaps", namespace=RELEASE_NS),
        Access(sa, "update", "configmaps", namespace=RELEASE_NS, name=CAPACITY_CONFIGMAP),
        Access(sa, "patch", "configmaps", namespace=RELEASE_NS, name=CAPACITY_CONFIGMAP),
        Access(sa, "delete", "configmaps", namespace=RELEASE_NS, name=CAPACITY_CONFIGMAP),
        Access(sa, "create", "configmaps", namespace=RELEASE_NS),
    ]
    return [Access(sa, "get", "configmaps", namespace=RELEASE_NS, name=CAPACITY_CONFIGMAP,
                   allowed=granted)] + [dataclasses.replace(a, allowed=False) for a in no]


# kubeflow-edit as it is without gpushift: the same aggregation, less every role of the
# gpushift chart (any release); and a ServiceAccount of USER_NS bound to it.
EDIT_WITHOUT_GPUSHIFT = "gpushift-test-kubeflow-edit-without-gpushift"
BASELINE_SA = (USER_NS, "edit-without-gpushift")


@pytest.fixture(scope="module")
def kubeflow_edit(kube: Any) -> Iterator[str]:
    """Kubeflow's arrangement, with Kubeflow's own roles: the aggregated ClusterRoles of
    ../shared/kubeflow/rbac/ (kubeflow-edit among them; created once per control plane),
    and in each profile namespace the ServiceAccount default-editor bound to kubeflow-edit
    by a RoleBinding, as the profile controller makes them. Also EDIT_WITHOUT_GPUSHIFT,
    bound to BASELINE_SA."""
    access.install_kubeflow_roles(kube.rbac)
    for ns in (USER_NS, OTHER_NS):
        access.bind_profile_editor(kube.core, kube.rbac, ns)
    kube.rbac.create_cluster_role({
        "metadata": {"name": EDIT_WITHOUT_GPUSHIFT},
        "aggregationRule": {"clusterRoleSelectors": [{
            "matchLabels": {AGGREGATE_LABEL: "true"},
            "matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "NotIn",
                                  "values": ["gpushift"]}]}]},
        "rules": [],
    })
    kube.core.create_namespaced_service_account(USER_NS,
                                                {"metadata": {"name": BASELINE_SA[1]}})
    kube.rbac.create_namespaced_role_binding(USER_NS, {
        "metadata": {"name": BASELINE_SA[1]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": EDIT_WITHOUT_GPUSHIFT},
        "subjects": [{"kind": "ServiceAccount", "name": BASELINE_SA[1],
                      "namespace": USER_NS}],
    })
    try:
        yield access.KUBEFLOW_EDIT
    finally:
        kube.rbac.delete_cluster_role(EDIT_WITHOUT_GPUSHIFT)


def rule_set(rules: Any) -> set[tuple[str, str, str, str]]:
    """Rules as (group, resource, verb, name) tuples, for comparing rule lists."""
    out = set()
    for r in rules or []:
        for g in r.api_groups or [""]:
            for res in r.resources or []:
                for v in r.verbs:
                    for n in r.resource_names or [""]:
                        out.add((g, res, v, n))
    return out
