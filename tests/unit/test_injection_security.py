"""The sidecar fits real Kubeflow namespaces: it runs as the notebook's user (never root),
meets Pod Security `restricted`, and brings the image pull secrets of its image. Every
patch is applied to the original pod and the result asserted."""

import copy
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubeflow_pods import NAMESPACE, notebook_pod

from gpushift_core.patches import apply
from gpushift_webhook.config import ConfigError, SidecarSettings, WebhookConfig, parse_config
from gpushift_webhook.injection import Outcome, plan_injection

CONFIG = WebhookConfig()
PULL = WebhookConfig(sidecar=SidecarSettings(image_pull_secrets=["regcred", "mirror.cred"]))


def inject(pod, config=CONFIG):
    decision = plan_injection(pod, NAMESPACE, config)
    assert decision.outcome is Outcome.INJECTED, decision.reason
    return decision, apply(pod, decision.operations)


def sidecar_of(result):
    return next(c for c in result["spec"]["initContainers"] if c["name"] == "gpushift-sidecar")


def identity(result):
    sc = sidecar_of(result)["securityContext"]
    return sc["runAsUser"], sc["runAsGroup"]


# ------------------------------------------------------------------ same user as the notebook


def test_notebook_container_user_is_the_sidecars():
    pod = notebook_pod()
    pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 1001, "runAsGroup": 1001}
    decision, result = inject(pod)
    assert identity(result) == (1001, 1001)
    assert decision.warnings == []


def test_pod_level_user_when_the_container_sets_none():
    pod = notebook_pod()
    pod["spec"]["securityContext"] = {"fsGroup": 100, "runAsUser": 1002, "runAsGroup": 1003}
    _, result = inject(pod)
    assert identity(result) == (1002, 1003)
    # The pod's securityContext (fsGroup included) is left as it was.
    assert result["spec"]["securityContext"] == pod["spec"]["securityContext"]


def test_container_wins_over_pod_field_by_field():
    """As the kubelet does: each field from the container when set there, else the pod."""
    pod = notebook_pod()
    pod["spec"]["securityContext"] = {"runAsUser": 2000, "runAsGroup": 2001}
    pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 1001}
    _, result = inject(pod)
    assert identity(result) == (1001, 2001)


def test_config_default_when_nobody_says():
    _, result = inject(notebook_pod())
    assert identity(result) == (1000, 100)
    custom = WebhookConfig(sidecar=SidecarSettings(run_as_user=4242, run_as_group=4243))
    _, result = inject(notebook_pod(), custom)
    assert identity(result) == (4242, 4243)


@pytest.mark.parametrize("where", ["container", "pod"])
def test_root_notebook_gets_the_default_user_and_a_warning(where):
    pod = notebook_pod()
    context = {"runAsUser": 0, "runAsGroup": 0}
    if where == "container":
        pod["spec"]["containers"][0]["securityContext"] = context
    else:
        pod["spec"]["securityContext"] = context
    decision, result = inject(pod)
    sc = sidecar_of(result)["securityContext"]
    assert sc["runAsUser"] == 1000 and sc["runAsNonRoot"] is True
    assert sc["runAsGroup"] == 0  # a group gives no privilege: the notebook's is kept
    (warning,) = decision.warnings
    assert "runs as root (UID 0)" in warning and "UID 1000" in warning
    assert warning.startswith("gpushift: ")


def test_root_container_under_a_non_root_pod_is_still_root():
    pod = notebook_pod()
    pod["spec"]["securityContext"] = {"runAsUser": 1001}
    pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
    decision, result = inject(pod)
    assert identity(result)[0] == 1000
    assert len(decision.warnings) == 1


@pytest.mark.parametrize("bad", ["1001", True, -5, 1.5, None, [1001], {"uid": 1}])
def test_malformed_user_counts_as_unset(bad):
    """The API server refuses such a pod after us; until then it must not crash or leak."""
    pod = notebook_pod()
    pod["spec"]["securityContext"] = {"runAsUser": 1002}
    pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": bad, "runAsGroup": bad}
    _, result = inject(pod)
    assert identity(result) == (1002, 100)


@pytest.mark.parametrize("context", ["not a mapping", ["x"], None])
def test_malformed_security_context_counts_as_unset(context):
    pod = notebook_pod()
    pod["spec"]["securityContext"] = context
    pod["spec"]["containers"][0]["securityContext"] = context
    _, result = inject(pod)
    assert identity(result) == (1000, 100)


def test_named_notebook_container_is_the_one_read():
    pod = notebook_pod()
    pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 1500}
    pod["spec"]["containers"].insert(0, {"name": "helper", "image": "busybox",
                                         "securityContext": {"runAsUser": 7}})
    config = replace(CONFIG, notebook_container="my-notebook")
    _, result = inject(pod, config)
    assert identity(result) == (1500, 100)


# ------------------------------------------------------------------ Pod Security "restricted"

RESTRICTED_VOLUMES = {"emptyDir", "persistentVolumeClaim", "projected", "downwardAPI",
                      "configMap", "secret", "csi", "ephemeral"}


def test_sidecar_meets_pod_security_restricted():
    """The checks of the `restricted` profile (v1.29+) that concern a container and the
    volumes it adds; the pod's own fields are the notebook's business."""
    pod = notebook_pod()
    pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 1001, "runAsGroup": 1001}
    _, result = inject(pod)
    sidecar = sidecar_of(result)
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] != 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}  # no add: restricted allows only NET_BIND
    assert sc["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    for key in ("procMount", "windowsOptions", "seLinuxOptions", "appArmorProfile"):
        assert key not in sc
    assert "ports" not in sidecar  # no hostPort
    added = result["spec"]["volumes"][len(pod["spec"]["volumes"]):]
    for volume in added:
        kinds = set(volume) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, volume
    for key in ("hostNetwork", "hostPID", "hostIPC", "securityContext"):
        assert result["spec"].get(key) == pod["spec"].get(key)


# ------------------------------------------------------------------ image pull secrets


def test_no_pull_secrets_configured_adds_none():
    _, result = inject(notebook_pod())
    assert "imagePullSecrets" not in result["spec"]


def test_pull_secrets_create_the_list_when_missing():
    pod = notebook_pod()
    assert "imagePullSecrets" not in pod["spec"]
    _, result = inject(pod, PULL)
    assert result["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror.cred"}]


def test_pull_secrets_appended_and_existing_ones_kept():
    pod = notebook_pod()
    pod["spec"]["imagePullSecrets"] = [{"name": "team-registry"}, {"name": "regcred"}]
    _, result = inject(pod, PULL)
    assert result["spec"]["imagePullSecrets"] == [
        {"name": "team-registry"}, {"name": "regcred"}, {"name": "mirror.cred"}]


def test_pull_secrets_all_present_add_nothing():
    pod = notebook_pod()
    pod["spec"]["imagePullSecrets"] = [{"name": "mirror.cred"}, {"name": "regcred"}]
    decision, result = inject(pod, PULL)
    assert result["spec"]["imagePullSecrets"] == pod["spec"]["imagePullSecrets"]
    assert not any(op["path"].startswith("/spec/imagePullSecrets") for op in decision.operations)


def test_pull_secrets_listed_twice_in_the_config_are_added_once():
    config = WebhookConfig(sidecar=SidecarSettings(image_pull_secrets=["regcred", "regcred"]))
    _, result = inject(notebook_pod(), config)
    assert result["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_pull_secrets_null_list_is_created():
    pod = notebook_pod()
    pod["spec"]["imagePullSecrets"] = None
    _, result = inject(pod, PULL)
    assert [s["name"] for s in result["spec"]["imagePullSecrets"]] == ["regcred", "mirror.cred"]


def test_pull_secrets_of_the_wrong_type_admit_the_pod_unchanged_with_warning():
    pod = notebook_pod()
    pod["spec"]["imagePullSecrets"] = "regcred"
    decision = plan_injection(pod, NAMESPACE, PULL)
    assert decision.outcome is Outcome.UNHANDLED and decision.operations == []
    assert decision.warnings and "imagePullSecrets" in decision.warnings[0]


def test_injecting_twice_changes_nothing_with_pull_secrets():
    pod = notebook_pod()
    pod["spec"]["imagePullSecrets"] = [{"name": "regcred"}]
    _, result = inject(pod, PULL)
    again = plan_injection(copy.deepcopy(result), NAMESPACE, PULL)
    assert again.outcome is Outcome.ALREADY_INJECTED and again.operations == []
    assert apply(result, again.operations) == result


secret_names = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(secret_names, max_size=4), st.lists(secret_names, max_size=4),
       st.one_of(st.none(), st.integers(0, 70000)), st.one_of(st.none(), st.integers(0, 70000)))
def test_pull_secrets_and_user_properties(existing, configured, pod_uid, container_uid):
    pod = notebook_pod()
    if existing:
        pod["spec"]["imagePullSecrets"] = [{"name": n} for n in existing]
    if pod_uid is not None:
        pod["spec"]["securityContext"]["runAsUser"] = pod_uid
    if container_uid is not None:
        pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": container_uid}
    config = WebhookConfig(sidecar=SidecarSettings(image_pull_secrets=configured))
    original = copy.deepcopy(pod)
    decision, result = inject(pod, config)
    assert pod == original, "planning must not modify its input"
    got = [s["name"] for s in result["spec"].get("imagePullSecrets", [])]
    # Existing entries first and unchanged; each configured name present; none added twice.
    assert got[: len(existing)] == existing
    assert set(configured) <= set(got)
    assert len(got) == len(existing) + len(set(configured) - set(existing))
    uid = identity(result)[0]
    wanted = container_uid if container_uid is not None else pod_uid
    assert uid == (1000 if wanted in (None, 0) else wanted)
    assert uid != 0
    assert (len(decision.warnings) == 1) == (wanted == 0)
    again = plan_injection(result, NAMESPACE, config)
    assert again.outcome is Outcome.ALREADY_INJECTED and again.operations == []


# ------------------------------------------------------------------ configuration


def test_pull_secrets_in_the_config_file():
    config = parse_config({"sidecar": {"image_pull_secrets": ["regcred"]}})
    assert config.sidecar.image_pull_secrets == ["regcred"]
    assert WebhookConfig().sidecar.image_pull_secrets == []


@pytest.mark.parametrize(("data", "message"), [
    ({"sidecar": {"image_pull_secrets": "regcred"}}, "expected a list"),
    ({"sidecar": {"image_pull_secrets": [1]}}, "image_pull_secrets[0]: expected a string"),
    ({"sidecar": {"image_pull_secrets": ["Reg_Cred"]}}, "not a valid Secret name"),
    ({"sidecar": {"image_pull_secrets": [""]}}, "not a valid Secret name"),
    ({"sidecar": {"run_as_group": -1}}, "must not be negative"),
])
def test_bad_pull_secrets_name_the_field(data, message):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)
