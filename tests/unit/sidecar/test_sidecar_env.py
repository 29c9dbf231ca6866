import json
from pathlib import Path

import pytest
from sidecar_environ import environ_factory

from gpushift_core.admin_settings import GpuFacts, GpuProfile, IdleSettings, ImagePair
from gpushift_sidecar.env import DEFAULT_API_PORT, EnvError, SidecarEnv
from gpushift_webhook.config import WebhookConfig


@pytest.fixture
def environ(tmp_path):
    return environ_factory(tmp_path)


def test_the_webhooks_env_parses_into_the_webhooks_dataclasses(environ, tmp_path):
    config = WebhookConfig(image_map=[ImagePair(cpu="cpu:1", cuda="cuda:1")],
                           idle=IdleSettings(timeout_seconds=300))
    env = SidecarEnv.from_environ(environ(gpu=("nvidia.com/gpu", 1),
                                          GPUSHIFT_SETTINGS=config.sidecar_settings_json))
    assert env.pod_name == "my-notebook-0" and env.pod_namespace == "kubeflow-user"
    assert env.pod_uid == "0b9d5c9e-uid" and env.node_name == "node-a"
    assert env.notebook_name == "my-notebook" and env.notebook_container == "my-notebook"
    assert env.gpu == GpuFacts("nvidia.com/gpu", 1)
    assert env.runtime_dir == tmp_path / "run" and env.workspace_dir == tmp_path / "ws"
    assert env.api_port == 8765
    # The schema is the webhook's: the same dataclasses, equal to what the webhook has.
    assert env.settings.profiles == config.profiles
    assert isinstance(env.settings.profiles[0], GpuProfile)
    assert env.settings.image_map == [ImagePair(cpu="cpu:1", cuda="cuda:1")]
    assert env.settings.idle == config.idle
    assert env.settings.matching_profile(env.gpu).name == "nvidia-1"


def test_cpu_pod_without_workspace_and_default_port(environ):
    env = SidecarEnv.from_environ(environ(workspace=False, GPUSHIFT_API_PORT=""))
    assert env.gpu is None and env.workspace_dir is None
    assert env.api_port == DEFAULT_API_PORT


@pytest.mark.parametrize("variable", [
    "GPUSHIFT_POD_NAME", "GPUSHIFT_POD_NAMESPACE", "GPUSHIFT_NOTEBOOK_NAME",
    "GPUSHIFT_RUNTIME_DIR", "GPUSHIFT_SETTINGS",
])
def test_a_missing_required_variable_is_named(environ, variable):
    env = environ()
    del env[variable]
    with pytest.raises(EnvError, match=f"^{variable}: not set") as caught:
        SidecarEnv.from_environ(env)
    assert caught.value.variable == variable
    env[variable] = "  "
    with pytest.raises(EnvError, match=f"^{variable}: not set"):
        SidecarEnv.from_environ(env)


@pytest.mark.parametrize(("overrides", "variable", "message"), [
    ({"GPUSHIFT_GPU_COUNT": "one"}, "GPUSHIFT_GPU_COUNT", "not a whole number"),
    ({"GPUSHIFT_GPU_COUNT": "-1"}, "GPUSHIFT_GPU_COUNT", "not a whole number"),
    ({"GPUSHIFT_GPU_COUNT": "2"}, "GPUSHIFT_GPU_RESOURCE", "empty while"),
    ({"GPUSHIFT_GPU_RESOURCE": "example.com/tpu", "GPUSHIFT_GPU_COUNT": "1"},
     "GPUSHIFT_GPU_RESOURCE", "not one of gpu_resources"),
    ({"GPUSHIFT_GPU_RESOURCE": "nvidia.com/gpu", "GPUSHIFT_GPU_COUNT": "0"},
     "GPUSHIFT_GPU_COUNT", "0 while"),
    ({"GPUSHIFT_API_PORT": "99999"}, "GPUSHIFT_API_PORT", "not a TCP port"),
    ({"GPUSHIFT_API_PORT": "http"}, "GPUSHIFT_API_PORT", "not a TCP port"),
    ({"GPUSHIFT_RUNTIME_DIR": "var/run"}, "GPUSHIFT_RUNTIME_DIR", "not an absolute path"),
    ({"GPUSHIFT_WORKSPACE_DIR": "/home/../etc"}, "GPUSHIFT_WORKSPACE_DIR",
     "not an absolute path"),
    ({"GPUSHIFT_NOTEBOOK_NAME": "../../etc"}, "GPUSHIFT_NOTEBOOK_NAME",
     "not a Kubernetes object name"),
    ({"GPUSHIFT_POD_NAME": "My_Pod"}, "GPUSHIFT_POD_NAME", "not a Kubernetes object name"),
    ({"GPUSHIFT_SETTINGS": "{profiles"}, "GPUSHIFT_SETTINGS", "not JSON"),
    ({"GPUSHIFT_SETTINGS": "[]"}, "GPUSHIFT_SETTINGS", "expected a mapping"),
    ({"GPUSHIFT_SETTINGS": json.dumps({"profiles": [{"name": "a", "cuont": 1}]})},
     "GPUSHIFT_SETTINGS", r"profiles\[0\]: unknown key\(s\) cuont"),
    ({"GPUSHIFT_SETTINGS": json.dumps({"idle": {"timeout_seconds": "3m"}})},
     "GPUSHIFT_SETTINGS", "idle.timeout_seconds: expected an integer"),
    ({"GPUSHIFT_SETTINGS": json.dumps({"profiles": [{"name": "a"}],
                                       "default_profile": "b"})},
     "GPUSHIFT_SETTINGS", "default_profile: 'b' is not a profile"),
])
def test_an_invalid_variable_is_named(environ, overrides, variable, message):
    with pytest.raises(EnvError, match=message) as caught:
        SidecarEnv.from_environ(environ(**overrides))
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_reads_os_environ_by_default(environ, monkeypatch):
    for key, value in environ().items():
        monkeypatch.setenv(key, value)
    assert SidecarEnv.from_environ().pod_name == "my-notebook-0"
    assert isinstance(SidecarEnv.from_environ().runtime_dir, Path)
