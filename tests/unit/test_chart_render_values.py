"""What the chart's values make of it: `helm lint --strict` and the schema's refusal of
bad values, the rendered ConfigMap and the values schema against the webhook's config
dataclasses, the optional image pre-puller, and valid names and labels in every
variant.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from typing import Any

import pytest
from chart_rendering import (
    CHART,
    RELEASE,
    VARIANTS,
    all_of,
    chart_values,
    render,
    rendered_config,
    run_helm,
)

from gpushift_webhook.config import WebhookConfig, parse_config

# --------------------------------------------------------------------------- lint


@pytest.mark.parametrize("sets", [
    [],
    ["certs.mode=certManager"],
    ["enablement.mode=cluster-wide"],
    ["prePuller.enabled=true"],
    VARIANTS["everything"],
], ids=["defaults", "certManager", "cluster-wide", "prePuller", "everything"])
def test_helm_lint_passes(sets):
    args = ["lint", "--strict", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = run_helm(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("bad", [
    "certs.mode=vault", "enablement.mode=everywhere", "webhook.timeoutSeconds=60",
    "webhook.urlOverride=http://127.0.0.1:80/mutate", "config.sidecar.port=0",
    "config.sidecar.imag=x", "replica=3",
])
def test_schema_refuses_bad_values(bad):
    proc = run_helm("template", RELEASE, str(CHART), "--set", bad)
    assert proc.returncode != 0, f"--set {bad} was accepted"



# ---------------------------------------------------------------------- ConfigMap


def test_config_map_matches_the_webhook_schema():
    docs = render()
    config = rendered_config(docs)
    # The chart adds where the GPU capacity is published (capacity.enabled).
    assert config.capacity_configmap == "gpushift-system/gpushift-gpu-capacity"
    config = dataclasses.replace(config, capacity_configmap="")
    assert config == parse_config(chart_values()["config"])
    # values.yaml writes out the webhook's own defaults; only the example image map differs.
    assert config.image_map, "values.yaml should carry an example image pair"
    assert dataclasses.replace(config, image_map=[]) == WebhookConfig()
    # ... and names images with gpushift's notebook side (Dockerfile.notebook's tags).
    assert [(p.cpu, p.cuda) for p in config.image_map] == [
        ("gpushift/gpushift-notebook:0.1.0-cpu", "gpushift/gpushift-notebook:0.1.0-cuda")]
    assert config.unmapped_image == "ask"
    assert config.server_types.inject == ["jupyter"] and config.server_types.inert == []
    (profile,) = config.profiles
    assert profile.name == config.default_profile == "nvidia-1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        profile.tolerations


def test_config_map_overrides_keep_their_types():
    docs = render("config.idle.timeout_seconds=300", "config.idle.allow_pin=true",
                  "config.sidecar.port=9000", "config.sidecar.native=false")
    config = rendered_config(docs)
    assert config.idle.timeout_seconds == 300 and config.idle.allow_pin is True
    assert config.sidecar.port == 9000 and config.sidecar.native is False


def _dataclass_keys(cls: type) -> dict[str, Any]:
    """{field: nested keys or None} of a config dataclass, recursively."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if typing.get_origin(hint) is list:
            hint = typing.get_args(hint)[0]
        out[f.name] = _dataclass_keys(hint) if dataclasses.is_dataclass(hint) else None
    return out


def _schema_keys(schema: dict[str, Any]) -> dict[str, Any] | None:
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return _schema_keys(schema["items"])
    props = schema.get("properties")
    if schema.get("type") != "object" or props is None:
        return None
    assert schema.get("additionalProperties") is False, "a closed object must refuse extra keys"
    return {k: _schema_keys(v) for k, v in props.items()}


def test_values_schema_mirrors_the_config_dataclasses():
    schema = json.loads((CHART / "values.schema.json").read_text())
    got = _schema_keys(schema["properties"]["config"])
    want = _dataclass_keys(WebhookConfig)
    # Fields typed dict[str, str] (resources' requests/limits, node_selector) are open
    # maps in the schema; compare the dataclass structure only.
    assert got == want


def test_values_schema_modes_are_enums():
    props = json.loads((CHART / "values.schema.json").read_text())["properties"]
    assert props["certs"]["properties"]["mode"]["enum"] == ["selfManaged", "certManager"]
    assert props["enablement"]["properties"]["mode"]["enum"] == ["opt-in", "cluster-wide"]
    assert set(props) >= set(chart_values()), "every top-level value has a schema"



# --------------------------------------------------------------------- pre-puller


def test_pre_puller_is_off_by_default():
    assert not all_of(render(), "DaemonSet")


def _pullers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"].rsplit("-", 1)[1]: d for d in all_of(docs, "DaemonSet")}


def test_pre_puller_one_init_container_per_image():
    image_map = [{"cpu": "jupyter-pytorch:v1", "cuda": "jupyter-pytorch-cuda:v1"},
                 {"cpu": "jupyter-tf:v1", "cuda": "jupyter-tf-cuda:v1"},
                 {"cpu": "jupyter-scipy:v1", "cuda": "jupyter-pytorch-cuda:v1"}]
    docs = render("prePuller.enabled=true",
                  set_json=(f"config.image_map={json.dumps(image_map)}",))
    pullers = _pullers(docs)
    assert set(pullers) == {"gpu", "cpu"}
    for kind, key in (("gpu", "cuda"), ("cpu", "cpu")):
        pod = pullers[kind]["spec"]["template"]["spec"]
        images = [c["image"] for c in pod["initContainers"]]
        assert images == list(dict.fromkeys(p[key] for p in image_map)), kind
        names = [c["name"] for c in pod["initContainers"]]
        assert len(set(names)) == len(names)
        for c in pod["initContainers"]:
            assert c["command"] == ["sh", "-c", "echo pulled"]
            assert c["securityContext"]["runAsUser"] == 65534
        (pause,) = pod["containers"]
        assert pause["image"] == chart_values()["prePuller"]["pause"]["image"]
        assert pod["automountServiceAccountToken"] is False
    # The rendered ConfigMap carries the same map the pullers pull.
    assert [p.cuda for p in rendered_config(docs).image_map] == [p["cuda"] for p in image_map]


def test_pre_puller_node_placement():
    pullers = _pullers(render("prePuller.enabled=true"))
    gpu = pullers["gpu"]["spec"]["template"]["spec"]
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists"} in gpu["tolerations"]
    cpu = pullers["cpu"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in cpu
    (term,) = cpu["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"} in \
        term["matchExpressions"]


def test_pre_puller_extra_images_go_to_both():
    docs = render("prePuller.enabled=true",
                  set_json=('prePuller.extraImages=["gpushift/sidecar:0.1.0"]',))
    for ds in _pullers(docs).values():
        images = [c["image"] for c in ds["spec"]["template"]["spec"]["initContainers"]]
        assert images[-1] == "gpushift/sidecar:0.1.0"


def test_pre_puller_without_images_renders_nothing():
    assert not all_of(render("prePuller.enabled=true", set_json=("config.image_map=[]",)),
                      "DaemonSet")


# ---------------------------------------------------------------------- everything


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_names_and_labels_are_valid(variant):
    dns_label = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    long_release = "a-very-long-release-name-that-goes-on-and-on"
    for release in (RELEASE, long_release):
        for doc in render(*VARIANTS[variant], release=release):
            name = doc["metadata"]["name"]
            assert dns_label.match(name), name
            assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == release
