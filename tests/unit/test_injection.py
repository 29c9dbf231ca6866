"""Every patch is applied to the original pod and the result asserted."""

import copy
import json
from dataclasses import replace

import pytest
from kubeflow_pods import NAMESPACE, notebook_pod

from gpushift_core.patches import apply
from gpushift_webhook import __version__
from gpushift_webhook.config import SidecarSettings, WebhookConfig, WorkspaceSettings
from gpushift_webhook.injection import Outcome, plan_injection

CONFIG = WebhookConfig()


def inject(pod, config=CONFIG, namespace=NAMESPACE):
    decision = plan_injection(pod, namespace, config)
    return decision, apply(pod, decision.operations)


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_native_sidecar_on_kubeflow_pod():
    pod = notebook_pod()
    decision, result = inject(pod)
    assert decision.outcome is Outcome.INJECTED
    assert decision.warnings == []
    assert decision.notebook == "my-notebook"
    (sidecar,) = result["spec"]["initContainers"]
    assert sidecar["name"] == "gpushift-sidecar"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["exec"]["command"][:2] == ["gpushift-sidecar", "probe"]
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sidecar["resources"]["requests"] == {"cpu": "10m", "memory": "64Mi"}
    assert sidecar["resources"]["limits"] == {"cpu": "250m", "memory": "192Mi"}
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts["gpushift-runtime"]["mountPath"] == "/var/run/gpushift"
    assert mounts["my-notebook-workspace"]["mountPath"] == "/home/jovyan"
    assert mounts["kube-api-access-x7k2p"]["mountPath"] == (
        "/var/run/secrets/kubernetes.io/serviceaccount")
    env = env_of(sidecar)
    assert env["GPUSHIFT_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["GPUSHIFT_POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["GPUSHIFT_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["GPUSHIFT_POD_UID"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    assert env["GPUSHIFT_NOTEBOOK_NAME"] == "my-notebook"
    assert env["GPUSHIFT_GPU_RESOURCE"] == "" and env["GPUSHIFT_GPU_COUNT"] == "0"
    assert env["GPUSHIFT_WORKSPACE_DIR"] == "/home/jovyan"
    assert json.loads(env["GPUSHIFT_SETTINGS"])["default_profile"] == "nvidia-1"
    # The shared runtime volume, in the pod and in the notebook container, with its env.
    volumes = {v["name"]: v for v in result["spec"]["volumes"]}
    assert volumes["gpushift-runtime"] == {"name": "gpushift-runtime",
                                           "emptyDir": {"sizeLimit": "16Mi"}}
    notebook = result["spec"]["containers"][0]
    assert {"name": "gpushift-runtime", "mountPath": "/var/run/gpushift"} in notebook[
        "volumeMounts"]
    nb_env = env_of(notebook)
    assert nb_env["GPUSHIFT_RUNTIME_DIR"] == "/var/run/gpushift"
    assert nb_env["GPUSHIFT_SIDECAR_URL"] == "http://127.0.0.1:8765"
    assert nb_env["NB_PREFIX"] == f"/notebook/{NAMESPACE}/my-notebook"
    assert result["metadata"]["annotations"]["gpushift.io/injected"] == __version__
    assert result["metadata"]["annotations"]["notebooks.kubeflow.org/server-type"] == "jupyter"


def test_nothing_else_changes():
    pod = notebook_pod(gpu=1, istio=True)
    _, result = inject(pod)
    for key in ("serviceAccountName", "securityContext", "tolerations", "hostname", "subdomain"):
        assert result["spec"][key] == pod["spec"][key]
    assert result["spec"]["initContainers"][0] == pod["spec"]["initContainers"][0]
    assert result["spec"]["volumes"][: len(pod["spec"]["volumes"])] == pod["spec"]["volumes"]
    original = pod["spec"]["containers"][0]
    changed = result["spec"]["containers"][0]
    for key in original:
        if key not in ("env", "volumeMounts"):
            assert changed[key] == original[key]
    assert changed["env"][: len(original["env"])] == original["env"]
    assert result["metadata"]["labels"] == pod["metadata"]["labels"]


@pytest.mark.parametrize(("resource", "count"), [("nvidia.com/gpu", 2), ("amd.com/gpu", 1),
                                                 ("habana.ai/gaudi", 8)])
def test_gpu_facts_from_limits(resource, count):
    pod = notebook_pod()
    pod["spec"]["containers"][0]["resources"]["limits"][resource] = str(count)
    _, result = inject(pod)
    env = env_of(result["spec"]["initContainers"][0])
    assert env["GPUSHIFT_GPU_RESOURCE"] == resource
    assert env["GPUSHIFT_GPU_COUNT"] == str(count)


def test_unparseable_gpu_limit_is_admitted_with_warning():
    pod = notebook_pod()
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "lots"
    decision = plan_injection(pod, NAMESPACE, CONFIG)
    assert decision.outcome is Outcome.UNHANDLED and decision.operations == []
    assert "not a whole number" in decision.warnings[0]


def test_no_workspace_volume_still_injects_with_warning():
    decision, result = inject(notebook_pod(workspace=False))
    assert decision.outcome is Outcome.INJECTED
    assert "will not survive a move" in decision.warnings[0]
    env = env_of(result["spec"]["initContainers"][0])
    assert env["GPUSHIFT_WORKSPACE_DIR"] == ""


def test_workspace_mounted_elsewhere_is_found_by_volume_name():
    config = replace(CONFIG, workspace=WorkspaceSettings(volume_name="my-notebook-workspace"))
    pod = notebook_pod()
    pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] = "/data"
    decision, result = inject(pod, config)
    assert decision.warnings == []
    mounts = {m["name"]: m for m in result["spec"]["initContainers"][0]["volumeMounts"]}
    assert mounts["my-notebook-workspace"]["mountPath"] == "/data"


def test_emptydir_at_home_is_not_a_workspace():
    pod = notebook_pod(workspace=False)
    pod["spec"]["volumes"].append({"name": "home", "emptyDir": {}})
    pod["spec"]["containers"][0]["volumeMounts"].append({"name": "home",
                                                         "mountPath": "/home/jovyan"})
    decision, _ = inject(pod)
    assert "will not survive a move" in decision.warnings[0]


def test_plain_container_mode():
    config = replace(CONFIG, sidecar=SidecarSettings(native=False))
    _, result = inject(notebook_pod(), config)
    assert "initContainers" not in result["spec"]
    sidecar = result["spec"]["containers"][1]
    assert sidecar["name"] == "gpushift-sidecar" and "restartPolicy" not in sidecar


def test_existing_init_containers_kept_and_sidecar_appended():
    _, result = inject(notebook_pod(istio=True))
    assert [c["name"] for c in result["spec"]["initContainers"]] == ["istio-init",
                                                                    "gpushift-sidecar"]


def test_named_notebook_container():
    pod = notebook_pod()
    pod["spec"]["containers"].insert(0, {"name": "helper", "image": "busybox"})
    config = replace(CONFIG, notebook_container="my-notebook")
    _, result = inject(pod, config)
    assert "env" not in result["spec"]["containers"][0]
    assert "GPUSHIFT_RUNTIME_DIR" in env_of(result["spec"]["containers"][1])
    missing = replace(CONFIG, notebook_container="nope")
    decision = plan_injection(pod, NAMESPACE, missing)
    assert decision.outcome is Outcome.UNHANDLED and "no container named" in decision.warnings[0]


def test_pod_without_annotations_labels_volumes_env():
    pod = notebook_pod(workspace=False)
    del pod["metadata"]["annotations"]
    del pod["spec"]["volumes"]
    c = pod["spec"]["containers"][0]
    del c["env"], c["volumeMounts"]
    decision, result = inject(pod)
    assert decision.outcome is Outcome.INJECTED
    assert result["metadata"]["annotations"] == {"gpushift.io/injected": __version__}
    assert [v["name"] for v in result["spec"]["volumes"]] == ["gpushift-runtime"]


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda p: p["metadata"]["labels"].pop("notebook-name"), "no notebook-name label"),
    (lambda p: p["metadata"]["annotations"].update({"gpushift.io/inject": "false"}),
     "gpushift.io/inject=false"),
    (lambda p: p["metadata"]["annotations"].update({"gpushift.io/inject": "False"}),
     "gpushift.io/inject=false"),
])
def test_skipped_pods(mutate, reason):
    pod = notebook_pod()
    mutate(pod)
    decision = plan_injection(pod, NAMESPACE, CONFIG)
    assert decision.outcome is Outcome.SKIPPED and reason in decision.reason
    assert decision.operations == []


def test_excluded_namespace():
    decision = plan_injection(notebook_pod(), "kube-system", CONFIG)
    assert decision.outcome is Outcome.SKIPPED


def test_injecting_twice_changes_nothing():
    pod = notebook_pod(gpu=1)
    _, once = inject(pod)
    again = plan_injection(once, NAMESPACE, CONFIG)
    assert again.outcome is Outcome.ALREADY_INJECTED and again.operations == []
    # Even without our annotation (someone removed it), the sidecar is not added twice.
    del once["metadata"]["annotations"]["gpushift.io/injected"]
    again = plan_injection(once, NAMESPACE, CONFIG)
    assert again.outcome is Outcome.ALREADY_INJECTED and again.operations == []


@pytest.mark.parametrize("breakage", [
    lambda p: p.__setitem__("spec", None),
    lambda p: p["spec"].__setitem__("containers", []),
    lambda p: p["spec"].__setitem__("containers", ["not-an-object"]),
    lambda p: p["spec"]["volumes"].append({"name": "gpushift-runtime", "emptyDir": {}}),
])
def test_unhandled_shapes_are_admitted_unchanged_with_warning(breakage):
    pod = notebook_pod()
    breakage(pod)
    before = copy.deepcopy(pod)
    decision = plan_injection(pod, NAMESPACE, CONFIG)
    assert decision.outcome is Outcome.UNHANDLED
    assert decision.operations == [] and decision.warnings
    assert pod == before
