"""The chart's hooks as rendered: the pre-delete cleanup (a Job running
`gpushift-webhook uninstall-cleanup` with RBAC for exactly the objects it deletes) and
the `helm test` pod (`gpushift-webhook probe-injection`, allowed only to create pods in
tests.namespace); their values and the schema's checks. They run for real in
tests/cluster/test_chart_hooks_cluster.py.
"""

from __future__ import annotations

import pytest
from chart_rendering import CHART as CHART_DIR
from chart_rendering import (
    HARDENED,
    NAMESPACE,
    RELEASE,
    all_of,
    app_version,
    chart_values,
    one,
    render,
    run_helm,
)

from gpushift_webhook.cli import main as webhook_main

CLEANUP = f"{RELEASE}-cleanup"
TEST = f"{RELEASE}-test"
HOOK_DELETE = "before-hook-creation,hook-succeeded"


def hooks(docs, hook):
    return [d for d in docs
            if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == hook]


def test_cleanup_is_a_pre_delete_hook_by_default():
    assert chart_values()["cleanup"]["enabled"] is True
    docs = hooks(render(), "pre-delete")
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (kind, CLEANUP) for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                     "Role", "RoleBinding", "Job"))
    for doc in docs:
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook-delete-policy"] == HOOK_DELETE
        # RBAC before the Job that needs it.
        weight = int(annotations["helm.sh/hook-weight"])
        assert weight == (0 if doc["kind"] == "Job" else -10), doc["kind"]


def test_cleanup_job_runs_the_webhook_image_hardened():
    docs = render()
    job = one(docs, "Job", CLEANUP)
    assert job["metadata"]["namespace"] == NAMESPACE
    assert job["spec"]["backoffLimit"] == 1
    assert job["spec"]["activeDeadlineSeconds"] == 120
    template = job["spec"]["template"]
    assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    pod = template["spec"]
    assert pod["serviceAccountName"] == CLEANUP
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"] == f"gpushift/webhook:{app_version()}"
    assert container["args"] == ["uninstall-cleanup", "--namespace", NAMESPACE,
                                 "--webhook-configuration", RELEASE,
                                 "--secret-name", f"{RELEASE}-tls"]
    assert HARDENED.items() <= container["securityContext"].items()


def test_cleanup_args_are_what_the_webhook_cli_accepts(capsys):
    # --help after the chart's arguments: argparse parsed them all before it exits 0.
    (container,) = one(render(), "Job", CLEANUP)["spec"]["template"]["spec"]["containers"]
    with pytest.raises(SystemExit) as exited:
        webhook_main([*container["args"], "--help"])
    assert exited.value.code == 0
    assert "uninstall-cleanup" in capsys.readouterr().out


def test_cleanup_rbac_names_exactly_the_objects_it_deletes():
    docs = render()
    cluster = one(docs, "ClusterRole", CLEANUP)["rules"]
    assert cluster == [{"apiGroups": ["admissionregistration.k8s.io"],
                        "resources": ["mutatingwebhookconfigurations"],
                        "resourceNames": [RELEASE], "verbs": ["delete"]}]
    role = one(docs, "Role", CLEANUP)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                              "resourceNames": [f"{RELEASE}-tls"], "verbs": ["delete"]}]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        binding = one(docs, kind, CLEANUP)
        assert binding["roleRef"]["name"] == CLEANUP
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": CLEANUP,
                                        "namespace": NAMESPACE}]


def test_cleanup_in_cert_manager_mode_leaves_cert_managers_secret_alone():
    docs = render("certs.mode=certManager")
    (container,) = one(docs, "Job", CLEANUP)["spec"]["template"]["spec"]["containers"]
    assert "--secret-name" not in container["args"]
    assert not [r for r in all_of(docs, "Role") if r["metadata"]["name"] == CLEANUP]
    assert not [r for r in all_of(docs, "RoleBinding") if r["metadata"]["name"] == CLEANUP]


def test_cleanup_can_be_turned_off():
    assert not hooks(render("cleanup.enabled=false"), "pre-delete")


def test_helm_test_pod_probes_injection_in_the_tests_namespace():
    assert chart_values()["tests"]["namespace"] == "kubeflow-user-example-com"
    docs = render("tests.namespace=team-a", "config.sidecar.name=my-sidecar")
    tested = hooks(docs, "test")
    assert sorted((d["kind"], d["metadata"]["name"]) for d in tested) == sorted(
        (kind, TEST) for kind in ("ServiceAccount", "Role", "RoleBinding", "Pod"))
    for doc in tested:
        assert doc["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == HOOK_DELETE
    pod = one(docs, "Pod", TEST)
    assert pod["metadata"]["namespace"] == NAMESPACE
    assert pod["spec"]["serviceAccountName"] == TEST
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["probe-injection", "--namespace", "team-a",
                                 "--sidecar-name", "my-sidecar"]
    assert HARDENED.items() <= container["securityContext"].items()


def test_helm_test_may_only_create_pods_in_the_tests_namespace():
    docs = render("tests.namespace=team-a")
    role = one(docs, "Role", TEST)
    assert role["metadata"]["namespace"] == "team-a"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]
    binding = one(docs, "RoleBinding", TEST)
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": TEST,
                                    "namespace": NAMESPACE}]
    assert not [r for r in all_of(docs, "ClusterRole") if r["metadata"]["name"] == TEST]


def test_hook_pod_labels_reach_both_hook_pods_only():
    docs = render("hookPodLabels.team=ml")
    job_pod = one(docs, "Job", CLEANUP)["spec"]["template"]
    assert job_pod["metadata"]["labels"]["team"] == "ml"
    assert one(docs, "Pod", TEST)["metadata"]["labels"]["team"] == "ml"
    deploy = one(docs, "Deployment", f"{RELEASE}-webhook")
    assert "team" not in deploy["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize(("sets", "message"), [
    (["cleanup.enabled=yes"], "/cleanup/enabled"),
    (["cleanup.activeDeadlineSeconds=1"], "/cleanup/activeDeadlineSeconds"),
    (["tests.namespace=Not_A_Namespace"], "/tests/namespace"),
    (["hookPodLabels.team=1"], "/hookPodLabels/team"),
    (["tests.namespace=kube-system"], 'tests.namespace "kube-system" is never injected'),
    ([f"tests.namespace={NAMESPACE}"], f'tests.namespace "{NAMESPACE}" is never injected'),
])
def test_bad_hook_values_are_refused_with_a_clear_message(sets, message):
    args = ["template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE]
    for s in sets:
        args += ["--set", s]
    proc = run_helm(*args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_hook_pods_are_placed_like_the_webhook():
    docs = render("nodeSelector.pool=system", "imagePullSecrets[0]=regcred",
                  set_json=('tolerations=[{"key":"dedicated","operator":"Exists"}]',))
    deploy = one(docs, "Deployment", f"{RELEASE}-webhook")["spec"]["template"]["spec"]
    for pod in (one(docs, "Job", CLEANUP)["spec"]["template"]["spec"],
                one(docs, "Pod", TEST)["spec"]):
        for key in ("nodeSelector", "tolerations", "imagePullSecrets", "securityContext"):
            assert pod[key] == deploy[key], key
