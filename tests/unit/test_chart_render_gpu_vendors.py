"""The chart's side of per-vendor GPU images and of profiles with CPU/memory and an
affinity: what the schema lets through (and the webhook then reads), what it refuses,
and one pre-puller DaemonSet per vendor whose images the map names."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chart_rendering import CHART, RELEASE, all_of, render, rendered_config, run_helm

from gpushift_core.admin_settings import GpuProfile, ImagePair

IMAGE_MAP = [{"cpu": "pytorch:1", "cuda": "pytorch-cuda:1", "rocm": "pytorch-rocm:1"},
             {"cpu": "tf:1", "cuda": "tf-cuda:1"},
             {"cpu": "habana:1", "gaudi": "habana-gaudi:1"}]
AMD_NODES = 'prePuller.rocm.nodeSelector={"amd.com/gpu.present": "true"}'
GAUDI_NODES = 'prePuller.gaudi.nodeSelector={"habana.ai/gaudi.present": "true"}'


def _pullers(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {d["metadata"]["name"].rsplit("-", 1)[1]:
            [c["image"] for c in d["spec"]["template"]["spec"]["initContainers"]]
            for d in all_of(docs, "DaemonSet")}


def test_each_vendor_pulls_its_builds_on_its_own_nodes():
    docs = render("prePuller.enabled=true", "prePuller.extraImages[0]=sidecar:1",
                  set_json=(f"config.image_map={json.dumps(IMAGE_MAP)}", AMD_NODES,
                            GAUDI_NODES))
    assert _pullers(docs) == {
        "gpu": ["pytorch-cuda:1", "tf-cuda:1", "sidecar:1"],
        "rocm": ["pytorch-rocm:1", "sidecar:1"],
        "gaudi": ["habana-gaudi:1", "sidecar:1"],
        "cpu": ["pytorch:1", "tf:1", "habana:1", "sidecar:1"],
    }
    rocm = next(d for d in all_of(docs, "DaemonSet") if d["metadata"]["name"].endswith("rocm"))
    spec = rocm["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"amd.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": "amd.com/gpu", "operator": "Exists"}]
    assert rendered_config(docs).image_map[0] == ImagePair(
        cpu="pytorch:1", cuda="pytorch-cuda:1", rocm="pytorch-rocm:1")


def test_a_map_without_rocm_or_gaudi_builds_renders_no_daemonset_for_them():
    docs = render("prePuller.enabled=true",
                  set_json=(f"config.image_map={json.dumps(IMAGE_MAP[1:2])}",))
    assert set(_pullers(docs)) == {"gpu", "cpu"}


def test_rocm_builds_without_the_nodes_named_fail_rendering_and_say_what_to_set():
    proc = run_helm("template", RELEASE, str(CHART), "--set", "prePuller.enabled=true",
                    "--set-json", f"config.image_map={json.dumps(IMAGE_MAP[:1])}")
    assert proc.returncode != 0
    assert "set prePuller.rocm.nodeSelector or .affinity" in proc.stderr, proc.stderr


def test_a_profile_with_cpu_memory_affinity_and_image_kind_reaches_the_webhook():
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "gpu.model", "operator": "In", "values": ["MI300X"]}]}]}}}
    profile = {"name": "mi300", "resource": "amd.com/gpu", "count": 1,
               "resources": {"requests": {"cpu": "4", "memory": "16Gi"},
                             "limits": {"memory": "32Gi"}},
               "affinity": affinity, "image_kind": "rocm"}
    docs = render(set_json=(f"config.profiles={json.dumps([profile])}",
                            'config.default_profile="mi300"'))
    (read,) = rendered_config(docs).profiles
    assert read == GpuProfile(name="mi300", resource="amd.com/gpu",
                              resources=profile["resources"], affinity=affinity,
                              image_kind="rocm")


@pytest.mark.parametrize("bad", [
    'config.image_map=[{"cpu": "a:1"}]',
    'config.image_map=[{"cpu": "a:1", "cuda": "b:1", "opencl": "c:1"}]',
    'config.profiles=[{"name": "p", "resources": {"limits": {"memory": "lots"}}}]',
    'config.profiles=[{"name": "p", "resources": {"limits": {"memory": 8}}}]',
    'config.profiles=[{"name": "p", "resources": {"request": {"cpu": "1"}}}]',
    'config.profiles=[{"name": "p", "affinity": {"nodeSelector": {}}}]',
    'config.profiles=[{"name": "p", "image_kind": "opencl"}]',
])
def test_the_schema_refuses_what_the_webhook_would(bad: str):
    proc = run_helm("template", RELEASE, str(CHART), "--set-json", bad,
                    "--set", "config.default_profile=p")
    assert proc.returncode != 0, f"{bad} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
