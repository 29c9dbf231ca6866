"""Which GPU profile a pod runs on (gpushift_core.pod_profile), and how the webhook, the
sidecar's environment and its "already there" checks use it: two profiles with the same
GPU resource and count (an A100 pool and a T4 pool) are told apart by the scheduling
fields on the pod's spec."""

from __future__ import annotations

import dataclasses
import datetime as dt

from gpushift_core.admin_settings import GpuFacts, GpuProfile
from gpushift_core.patches import apply
from gpushift_core.pod_profile import profile_of_pod
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.migration_steps import runs_on_target
from gpushift_sidecar.state import Migration, Reason, Target
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.injection import plan_injection

A100 = GpuProfile(name="a100", node_selector={"pool": "a100"},
                  tolerations=[{"key": "a100", "operator": "Exists", "effect": "NoSchedule"}])
T4 = GpuProfile(name="t4", node_selector={"pool": "t4"})
PLAIN = GpuProfile(name="any-nvidia")  # no scheduling fields: fits every nvidia pod
PROFILES = [PLAIN, A100, T4]
ONE = GpuFacts("nvidia.com/gpu", 1)


def test_the_scheduling_fields_tell_the_profiles_apart():
    a100_spec = {"nodeSelector": {"pool": "a100", "zone": "b"},
                 "tolerations": [{"key": "a100", "operator": "Exists", "effect": "NoSchedule"},
                                 {"key": "team", "operator": "Equal", "value": "ml"}]}
    assert profile_of_pod(a100_spec, ONE, PROFILES) == "a100"  # the most specific fit
    assert profile_of_pod({"nodeSelector": {"pool": "t4"}}, ONE, PROFILES) == "t4"
    assert profile_of_pod({}, ONE, PROFILES) == "any-nvidia"
    no_toleration = {"nodeSelector": {"pool": "a100"}}
    assert profile_of_pod(no_toleration, ONE, [A100, T4]) == ""
    assert profile_of_pod(a100_spec, GpuFacts("nvidia.com/gpu", 2), PROFILES) == ""
    assert profile_of_pod(a100_spec, None, PROFILES) == ""


def test_the_webhook_tells_the_sidecar(tmp_path):
    config = WebhookConfig(profiles=[A100, T4], default_profile="a100")
    pod = {"metadata": {"name": "nb-0", "labels": {"notebook-name": "nb"}},
           "spec": {"nodeSelector": {"pool": "t4"}, "containers": [{
               "name": "nb", "image": "jupyter:1",
               "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    injected = apply(pod, plan_injection(pod, "team", config).operations)
    sidecar = next(c for c in injected["spec"]["initContainers"]
                   if c["name"] == "gpushift-sidecar")
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["GPUSHIFT_GPU_PROFILE"] == "t4"


def environ(tmp_path, profile: str) -> dict[str, str]:
    (tmp_path / "ws").mkdir(exist_ok=True)
    config = WebhookConfig(profiles=[A100, T4], default_profile="a100")
    return {"GPUSHIFT_POD_NAME": "nb-0", "GPUSHIFT_POD_NAMESPACE": "team",
            "GPUSHIFT_POD_UID": "uid", "GPUSHIFT_NODE_NAME": "n",
            "GPUSHIFT_NOTEBOOK_NAME": "nb", "GPUSHIFT_NOTEBOOK_CONTAINER": "nb",
            "GPUSHIFT_GPU_RESOURCE": "nvidia.com/gpu", "GPUSHIFT_GPU_COUNT": "1",
            "GPUSHIFT_GPU_PROFILE": profile,
            "GPUSHIFT_RUNTIME_DIR": str(tmp_path / "run"),
            "GPUSHIFT_WORKSPACE_DIR": str(tmp_path / "ws"), "GPUSHIFT_API_PORT": "8765",
            "GPUSHIFT_SETTINGS": config.sidecar_settings_json}


def test_the_sidecar_knows_its_profile_and_ignores_one_it_does_not_know(tmp_path):
    env = SidecarEnv.from_environ(environ(tmp_path, "t4"))
    assert env.gpu == GpuFacts("nvidia.com/gpu", 1, "t4")
    assert env.settings.matching_profile(env.gpu).name == "t4"  # not the first, a100
    for unknown in ("", "renamed-since", "a100-2"):
        gpu = SidecarEnv.from_environ(environ(tmp_path, unknown)).gpu
        assert gpu == GpuFacts("nvidia.com/gpu", 1, "")


def test_on_t4_the_a100_is_another_target(tmp_path):
    env = SidecarEnv.from_environ(environ(tmp_path, "t4"))
    now = dt.datetime.now(dt.UTC)
    to = {name: Migration.new(env, target=Target.GPU, reason=Reason.MANUAL, profile=name,
                              checkpoint=None, pending_cell=None, now=now)
          for name in ("a100", "t4")}
    assert runs_on_target(to["t4"], env.gpu, env.settings)
    assert not runs_on_target(to["a100"], env.gpu, env.settings)
    # Without the profile known, resource and count decide, as before.
    unknown = dataclasses.replace(env.gpu, profile="")
    assert runs_on_target(to["a100"], unknown, env.settings)
