import pytest
import yaml

from gpushift_webhook.config import ConfigError, WebhookConfig, load_config, parse_config


def test_empty_file_means_defaults(tmp_path):
    f = tmp_path / "config.yaml"
    f.write_text("")
    assert load_config(f) == WebhookConfig()


def test_full_file(tmp_path):
    f = tmp_path / "config.yaml"
    f.write_text(yaml.safe_dump({
        "sidecar": {"image": "registry.example/gpushift/sidecar:1", "native": False,
                    "resources": {"requests": {"cpu": "5m"}, "limits": {"memory": "64Mi"}}},
        "notebook_container": "main",
        "workspace": {"mount_path": "/home/user"},
        "profiles": [{"name": "a100", "resource": "nvidia.com/gpu", "count": 2,
                      "node_selector": {"gpu": "a100"},
                      "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                      "runtime_class_name": "nvidia"}],
        "default_profile": "a100",
        "image_map": [{"cpu": "jupyter-pytorch:v1", "cuda": "jupyter-pytorch-cuda:v1"}],
        "idle": {"timeout_seconds": 300, "min_seconds": 120, "max_seconds": 900},
    }))
    config = load_config(f)
    assert config.sidecar.native is False
    assert config.sidecar.resources.requests == {"cpu": "5m"}
    assert config.profiles[0].count == 2
    assert config.profiles[0].tolerations[0]["key"] == "nvidia.com/gpu"
    assert config.image_map[0].cuda == "jupyter-pytorch-cuda:v1"
    settings = config.sidecar_settings()
    assert settings["default_profile"] == "a100"
    assert settings["idle"]["timeout_seconds"] == 300


@pytest.mark.parametrize(("data", "message"), [
    ({"sidecar": {"imagee": "x"}}, "sidecar: unknown key(s) imagee"),
    ({"sidecar": {"native": "yes"}}, "sidecar.native: expected true or false"),
    ({"sidecar": {"port": "80"}}, "sidecar.port: expected an integer"),
    ({"sidecar": {"port": 70000}}, "not a TCP port"),
    ({"sidecar": {"run_as_user": 0}}, "never runs as root"),
    ({"sidecar": {"name": "Bad_Name"}}, "not a valid DNS label"),
    ({"profiles": [{"name": "x", "resource": "example.com/tpu"}]}, "not in gpu_resources"),
    ({"profiles": [{"name": "x"}, {"name": "x"}], "default_profile": "x"}, "unique"),
    ({"profiles": [{"count": 1}]}, "profiles[0]"),
    ({"default_profile": "nope"}, "is not a profile"),
    ({"idle": {"timeout_seconds": 10}}, "min_seconds <= timeout_seconds"),
    ({"image_map": [{"cpu": "a"}]}, "image_map[0]"),
    ({"workspace": {"mount_path": "relative"}}, "not an absolute path"),
    ({"checkpoints": {"keep": 0}}, "checkpoints.keep: must be between 1 and 1000"),
    ({"checkpoints": {"min_free_mib": -1}}, "checkpoints.min_free_mib"),
    ({"checkpoints": {"kept": 3}}, "checkpoints: unknown key(s) kept"),
    ([1, 2], "expected a mapping"),
])
def test_errors_name_the_field(data, message):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sidecar: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
