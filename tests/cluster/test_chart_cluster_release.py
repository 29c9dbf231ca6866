"""The Helm chart installed on a real control plane (kube-apiserver with RBAC):

- a real `helm install` / `upgrade` / `uninstall` of release RELEASE (not the `gpushift`
  release of test_webhook_cluster.py: every object name differs);
- RBAC proven by the real authorizer (SubjectAccessReview): the sidecar's grants through
  Kubeflow's real aggregated kubeflow-edit role (../shared/kubeflow/rbac/, bound to each
  profile's default-editor as a Kubeflow profile does) or the chart's RoleBindings, what
  the sidecar's role adds to kubeflow-edit (only SIDECAR_ADDS_TO_KUBEFLOW_EDIT), and the
  webhook's grants, the guard's included.

helm and kubectl come from hack/build-controlplane.sh; without them these tests fail.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from chart_rbac_cases import (
    BASELINE_SA,
    EDIT_WITHOUT_GPUSHIFT,
    SIDECAR_ADDS_TO_KUBEFLOW_EDIT,
    Access,
    assert_access,
    capacity_cases,
    capacity_never_cases,
    capacity_reader_cases,
    guard_cases,
    guard_never_cases,
    kubeflow_edit,  # noqa: F401 - the fixture, shared
    kubeflow_edit_cases,
    rule_set,
    sidecar_cases,
    sidecar_role_only_cases,
    webhook_cases,
)
from chart_tools import (
    AGGREGATE_LABEL,
    BOUND_NS,
    CHART,
    COMBINATIONS,
    FULLNAME,
    OTHER_NS,
    OTHER_RELEASE_OBJECTS,
    RELEASE,
    RELEASE_NS,
    SIDECAR_ROLE,
    TLS_SECRET,
    USER_NS,
    WEBHOOK_SA,
    Tools,
)
from gpushift_testing.kube import wait_for
from kubernetes.client.exceptions import ApiException

# Installed with every helm install/upgrade of RELEASE: the Deployment is created (kwok
# plays its pods), and the API server gives up on the Service-less webhook after 1 s.
BASE_VALUES: dict[str, Any] = {"webhook": {"deploy": True, "timeoutSeconds": 1}}


@pytest.fixture(scope="module")
def chart_namespaces() -> dict[str, dict[str, str]]:
    """The namespaces `kube` makes for this module, with their labels. The release
    namespace enforces PodSecurity "restricted": the webhook's pods are only created if the
    chart's pod spec meets it. USER_NS and OTHER_NS are Kubeflow profile namespaces,
    BOUND_NS gets sidecar.rbac.bindServiceAccounts' RoleBinding."""
    return {RELEASE_NS: {"pod-security.kubernetes.io/enforce": "restricted"},
            USER_NS: {}, OTHER_NS: {}, BOUND_NS: {}}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ----------------------------------------------------------------------------- release


@dataclass
class Release:
    tools: Tools
    kube: Any
    installed: bool = False

    def deploy(self, extra: dict[str, Any] | None = None) -> None:
        """helm upgrade --install with BASE_VALUES + extra (other values: chart defaults)."""
        values = self.tools.values_file(merge(BASE_VALUES, extra or {}))
        self.tools.helm("upgrade", "--install", RELEASE, str(CHART), "--namespace",
                        RELEASE_NS, "--values", str(values), "--timeout", "60s")
        self.installed = True

    def uninstall(self) -> None:
        self.tools.helm("uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait",
                        "--timeout", "60s")
        self.installed = False

    def manifest(self) -> list[dict[str, Any]]:
        proc = self.tools.helm("get", "manifest", RELEASE, "--namespace", RELEASE_NS)
        return [d for d in yaml.safe_load_all(proc.stdout) if d]

    def mwc(self) -> Any:
        return self.kube.admission.read_mutating_webhook_configuration(FULLNAME)


@pytest.fixture(scope="module")
def release(kube: Any, tools: Tools) -> Iterator[Release]:
    """RELEASE installed once for the module (opt-in, webhook deployed); uninstalled at the
    end whatever happens, so its webhook configuration never outlives this module."""
    rel = Release(tools, kube)
    t = time.monotonic()
    try:
        rel.deploy()
        print(f"helm install {RELEASE}: {time.monotonic() - t:.1f}s")
        yield rel
    finally:
        if rel.installed or tools.helm("status", RELEASE, "--namespace", RELEASE_NS,
                                       check=False).returncode == 0:
            tools.helm("uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait",
                       "--timeout", "60s", check=False)


# ----------------------------------------------------------------------------- 1. install


def test_install_creates_the_objects(release: Release, kube: Any) -> None:
    dep = kube.apps.read_namespaced_deployment(f"{FULLNAME}-webhook", RELEASE_NS)
    assert dep.spec.replicas == 2
    pod_labels = dep.spec.template.metadata.labels
    sel = dep.spec.selector.match_labels
    assert sel.items() <= pod_labels.items()

    pdb = kube.policy.read_namespaced_pod_disruption_budget(f"{FULLNAME}-webhook", RELEASE_NS)
    assert pdb.spec.min_available == 1
    assert pdb.spec.selector.match_labels == sel

    svc = kube.core.read_namespaced_service(f"{FULLNAME}-webhook", RELEASE_NS)
    assert svc.spec.selector == sel
    assert [(p.port, p.target_port) for p in svc.spec.ports] == [(443, "https")]

    cm = kube.core.read_namespaced_config_map(f"{FULLNAME}-config", RELEASE_NS)
    config = yaml.safe_load(cm.data["config.yaml"])
    assert config["sidecar"]["name"] == "gpushift-sidecar"
    assert kube.core.read_namespaced_service_account(f"{FULLNAME}-webhook", RELEASE_NS)

    # No object name shared with release "gpushift" of test_webhook_cluster.py (Helm would
    # refuse to adopt it, or one release would overwrite the other's).
    mine = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
            for d in release.manifest()}
    other = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
             for d in release.tools.template({}, "gpushift", "gpushift-system")}
    assert mine, "helm get manifest returned nothing"
    assert not mine & other, mine & other

    mwc = release.mwc()
    assert mwc.metadata.name == FULLNAME != OTHER_RELEASE_OBJECTS
    (hook,) = mwc.webhooks
    assert hook.failure_policy == "Ignore"
    assert hook.side_effects == "None"
    assert hook.timeout_seconds == 1  # webhook.timeoutSeconds (chart default 5, <= 10)
    assert hook.reinvocation_policy == "IfNeeded"
    assert hook.client_config.service.name == svc.metadata.name
    assert hook.client_config.service.namespace == RELEASE_NS
    assert hook.client_config.service.port == 443
    exprs = {e.key: e for e in hook.namespace_selector.match_expressions}
    enabled = exprs["gpushift.io/enabled"]
    assert (enabled.operator, enabled.values) == ("In", ["true"])
    names = exprs["kubernetes.io/metadata.name"]
    assert names.operator == "NotIn"
    assert {"kube-system", RELEASE_NS} <= set(names.values)

    # The chart's names and the webhook's arguments agree (RBAC is granted on these names).
    args = dep.spec.template.spec.containers[0].args
    assert args[args.index("--secret-name") + 1] == TLS_SECRET
    assert args[args.index("--webhook-configuration") + 1] == FULLNAME
    assert args[args.index("--namespace") + 1] == RELEASE_NS
    assert dep.spec.template.spec.service_account_name == WEBHOOK_SA[1]

    # The pods are admitted in a namespace that enforces PodSecurity "restricted" (kwok
    # plays them): the pod spec is hardened enough for it.
    def pods() -> list[Any]:
        selector = ",".join(f"{k}={v}" for k, v in sel.items())
        items = kube.core.list_namespaced_pod(RELEASE_NS, label_selector=selector).items
        return items if len(items) >= 2 else []

    def events() -> list[str]:
        return [f"{e.reason}: {e.message}"
                for e in kube.core.list_namespaced_event(RELEASE_NS).items]

    wait_for("2 webhook pods created under PodSecurity restricted", pods, timeout=60,
             describe=events)


def test_upgrade_to_cluster_wide_changes_the_namespace_selector(release: Release) -> None:
    release.deploy({"enablement": {"mode": "cluster-wide"}})
    try:
        (hook,) = release.mwc().webhooks
        exprs = {e.key: e for e in hook.namespace_selector.match_expressions}
        enabled = exprs["gpushift.io/enabled"]
        assert (enabled.operator, enabled.values) == ("NotIn", ["false"])
        names = exprs["kubernetes.io/metadata.name"]
        assert names.operator == "NotIn"
        assert {"kube-system", RELEASE_NS} <= set(names.values)
        assert hook.timeout_seconds == 1
    finally:
        release.deploy()
    (hook,) = release.mwc().webhooks
    assert {e.key: e.operator for e in hook.namespace_selector.match_expressions} == {
        "gpushift.io/enabled": "In", "kubernetes.io/metadata.name": "NotIn"}


# ----------------------------------------------------------------------------- 2. RBAC


def test_sidecar_rbac_through_kubeflow_edit_aggregation(
        release: Release, kube: Any, kubeflow_edit: str) -> None:  # noqa: F811
    release.deploy()
    role = kube.rbac.read_cluster_role(SIDECAR_ROLE)
    assert role.metadata.labels[AGGREGATE_LABEL] == "true"
    mine = rule_set(role.rules)

    def aggregated() -> bool:
        return mine <= rule_set(kube.rbac.read_cluster_role(kubeflow_edit).rules)

    wait_for(f"the rules of {SIDECAR_ROLE} aggregated into {kubeflow_edit}", aggregated,
             timeout=60)
    # kubeflow-edit is exactly the union of the labelled roles: Kubeflow's own and the
    # gpushift releases' of this session.
    labelled = kube.rbac.list_cluster_role(label_selector=f"{AGGREGATE_LABEL}=true").items

    def union_of_labelled() -> bool:
        union = set().union(*(rule_set(kube.rbac.read_cluster_role(r.metadata.name).rules)
                              for r in labelled))
        return rule_set(kube.rbac.read_cluster_role(kubeflow_edit).rules) == union

    wait_for(f"{kubeflow_edit} the union of the labelled roles", union_of_labelled,
             timeout=60)
    print("aggregated into kubeflow-edit from: "
          + ", ".join(sorted(r.metadata.name for r in labelled)))

    editor = (USER_NS, "default-editor")
    # What the sidecar needs, only in its namespace; and all that kubeflow-edit lets the
    # same token do there anyway (Secrets, pods, Notebooks: the user's own rights).
    assert_access(kube.authz, sidecar_cases(editor, OTHER_NS) + kubeflow_edit_cases(editor))
    # Another ServiceAccount of the profile namespace gets nothing.
    assert_access(kube.authz, [
        Access((USER_NS, "default"), "patch", "notebooks", "kubeflow.org", USER_NS, "alice",
               allowed=False)])


def test_the_sidecar_adds_to_kubeflow_edit_only_what_it_names(
        release: Release, kube: Any, kubeflow_edit: str) -> None:  # noqa: F811
    """Every verb of the chart's sidecar ClusterRole, asked of the real authorizer for a
    ServiceAccount bound to Kubeflow's kubeflow-edit as it is without gpushift: granted
    already, but for SIDECAR_ADDS_TO_KUBEFLOW_EDIT (which it refuses). So the sidecar
    can do nothing in a profile namespace that the notebook's own token (the user's code)
    could not do without gpushift, but that."""
    release.deploy()
    role = kube.rbac.read_cluster_role(SIDECAR_ROLE)
    grants = {(g, res, verb) for g, res, verb, _ in rule_set(role.rules)}
    assert grants >= SIDECAR_ADDS_TO_KUBEFLOW_EDIT, grants
    assert not [r for r in role.rules if r.resource_names], "named grants: compare by name"

    # The baseline really is kubeflow-edit less the gpushift roles, aggregated by the
    # controller from Kubeflow's roles.
    labelled = kube.rbac.list_cluster_role(label_selector=f"{AGGREGATE_LABEL}=true").items
    gpushift = [r.metadata.name for r in labelled
                if (r.metadata.labels or {}).get("app.kubernetes.io/name") == "gpushift"]
    kubeflow = [r.metadata.name for r in labelled if r.metadata.name not in gpushift]
    assert SIDECAR_ROLE in gpushift and "kubeflow-kubernetes-edit" in kubeflow, labelled

    def rules_of(names: list[str]) -> set[tuple[str, str, str, str]]:
        return set().union(*(rule_set(kube.rbac.read_cluster_role(n).rules) for n in names))

    wait_for(f"{EDIT_WITHOUT_GPUSHIFT} aggregated from Kubeflow's roles only", lambda: (
        rule_set(kube.rbac.read_cluster_role(EDIT_WITHOUT_GPUSHIFT).rules)
        == rules_of(kubeflow)), timeout=60)
    wait_for(f"{kubeflow_edit} = that + the gpushift roles", lambda: (
        rule_set(kube.rbac.read_cluster_role(kubeflow_edit).rules)
        == rules_of(kubeflow) | rules_of(gpushift)), timeout=60)

    editor = (USER_NS, "default-editor")
    cases = []
    for group, resource, verb in sorted(grants):
        cases.append(Access(editor, verb, resource, group, USER_NS))
        cases.append(Access(BASELINE_SA, verb, resource, group, USER_NS,
                            allowed=(group, resource, verb) not in SIDECAR_ADDS_TO_KUBEFLOW_EDIT))
    assert_access(kube.authz, cases)
    added = ", ".join(f"{v} {r}{'.' + g if g else ''}"
                      for g, r, v in sorted(SIDECAR_ADDS_TO_KUBEFLOW_EDIT))
    print(f"{len(grants)} grants of {SIDECAR_ROLE}; kubeflow-edit without gpushift "
          f"already holds {len(grants) - len(SIDECAR_ADDS_TO_KUBEFLOW_EDIT)}; added: {added}")


def test_no_cluster_role_binding_grants_the_sidecar_role(release: Release, kube: Any,
                                                         tools: Tools) -> None:
    release.deploy()
    live = [b.metadata.name for b in kube.rbac.list_cluster_role_binding().items
            if b.role_ref.name == SIDECAR_ROLE]
    assert not live, f"ClusterRoleBindings to {SIDECAR_ROLE}: {live}"
    for combo, values in COMBINATIONS.items():
        docs = tools.template(values, RELEASE, RELEASE_NS)
        crbs = [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"
                and d["roleRef"]["name"].endswith("-notebook-sidecar")]
        assert not crbs, f"{combo}: ClusterRoleBinding to the sidecar role: {crbs}"
        # The webhook's own bindings; the uninstall cleanup hook's binds its own account
        # to its own role (test_chart_hooks_cluster.py asks the authorizer about it).
        subjects = [s for d in docs if d["kind"] == "ClusterRoleBinding"
                    and d["roleRef"]["name"] != f"{FULLNAME}-cleanup" for s in d["subjects"]]
        assert subjects == [{"kind": "ServiceAccount", "name": WEBHOOK_SA[1],
                             "namespace": RELEASE_NS}] * len(subjects), subjects


def test_sidecar_rbac_through_bind_service_accounts(release: Release, kube: Any) -> None:
    kube.core.create_namespaced_service_account(BOUND_NS, {"metadata": {"name": "jupyter"}})
    release.deploy({"sidecar": {"rbac": {"bindServiceAccounts": [
        {"namespace": BOUND_NS, "name": "jupyter"}]}}})
    try:
        rb = kube.rbac.read_namespaced_role_binding(SIDECAR_ROLE, BOUND_NS)
        assert (rb.role_ref.kind, rb.role_ref.name) == ("ClusterRole", SIDECAR_ROLE)
        sa = (BOUND_NS, "jupyter")
        assert_access(kube.authz, [
            *sidecar_cases(sa, USER_NS),
            # Bound to the sidecar's role alone, unlike a profile's default-editor.
            *sidecar_role_only_cases(sa),
            # Only that ServiceAccount, only in that namespace.
            Access(sa, "patch", "notebooks", "kubeflow.org", OTHER_NS, "bob", allowed=False),
            Access((BOUND_NS, "default"), "patch", "notebooks", "kubeflow.org", BOUND_NS,
                   "alice", allowed=False),
        ])
    finally:
        release.deploy()
    # Gone with the value.
    wait_for(f"RoleBinding {BOUND_NS}/{SIDECAR_ROLE} removed by the upgrade",
             lambda: not kube.rbac.list_namespaced_role_binding(
                 BOUND_NS, field_selector=f"metadata.name={SIDECAR_ROLE}").items, timeout=30)
    assert_access(kube.authz, [
        Access((BOUND_NS, "jupyter"), "patch", "notebooks", "kubeflow.org", BOUND_NS, "alice",
               allowed=False)])


def test_webhook_rbac(release: Release, kube: Any) -> None:
    release.deploy()
    role = kube.rbac.read_namespaced_role(f"{FULLNAME}-webhook", RELEASE_NS)
    assert ("", "secrets", "get", TLS_SECRET) in rule_set(role.rules)
    assert_access(kube.authz, webhook_cases() + guard_cases(granted=True) + guard_never_cases()
                  + capacity_cases(granted=True) + capacity_never_cases())


def test_webhook_rbac_without_migration_guard(release: Release, kube: Any) -> None:
    release.deploy({"rbac": {"migrationGuard": False}})
    try:
        # The guard's grants are gone, and the capacity's (it runs with the guard); the
        # certificate's stay.
        assert_access(kube.authz, webhook_cases() + guard_cases(granted=False)
                      + guard_never_cases() + capacity_cases(granted=False)
                      + capacity_never_cases())
    finally:
        release.deploy()
    assert_access(kube.authz, guard_cases(granted=True) + capacity_cases(granted=True))


def test_capacity_rbac_and_its_readers(release: Release, kube: Any,
                                       kubeflow_edit: str) -> None:  # noqa: F811
    """A notebook's ServiceAccount (Kubeflow's default-editor, bound to the real
    kubeflow-edit) may get the capacity ConfigMap and no other ConfigMap of the release
    namespace; with capacity.enabled=false neither it nor the webhook keeps a grant."""
    release.deploy()
    editor = (USER_NS, "default-editor")
    readers = [*capacity_reader_cases(editor), *capacity_reader_cases((OTHER_NS, "default")),
               *capacity_reader_cases(BASELINE_SA)]
    assert_access(kube.authz, readers + capacity_cases(granted=True))
    release.deploy({"capacity": {"enabled": False}})
    try:
        assert_access(kube.authz, capacity_reader_cases(editor, granted=False)
                      + capacity_cases(granted=False) + guard_cases(granted=True))
    finally:
        release.deploy()
    assert_access(kube.authz, capacity_reader_cases(editor) + capacity_cases(granted=True))


# ----------------------------------------------------------------------------- 3. uninstall


def test_uninstall_removes_the_webhook_configuration(release: Release, kube: Any) -> None:
    release.deploy()
    assert release.mwc().metadata.name == FULLNAME
    release.uninstall()

    def gone(read: Any, *args: str) -> bool:
        try:
            read(*args)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for("the MutatingWebhookConfiguration removed",
             lambda: gone(kube.admission.read_mutating_webhook_configuration, FULLNAME),
             timeout=30)
    for name in (SIDECAR_ROLE, f"{FULLNAME}-webhook"):
        assert gone(kube.rbac.read_cluster_role, name), name
    assert gone(kube.rbac.read_cluster_role_binding, f"{FULLNAME}-webhook")
    assert gone(kube.apps.read_namespaced_deployment, f"{FULLNAME}-webhook", RELEASE_NS)
    # The webhook's ServiceAccount lost its cluster-wide grants with it.
    assert_access(kube.authz, [
        Access(WEBHOOK_SA, "patch", "mutatingwebhookconfigurations",
               "admissionregistration.k8s.io", name=FULLNAME, allowed=False),
        Access(WEBHOOK_SA, "list", "notebooks", "kubeflow.org", allowed=False),
    ])
