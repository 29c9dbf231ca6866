"""GPU profiles that carry CPU/memory, an affinity and a GPU image per vendor (CUDA,
ROCm, Gaudi): what a move to GPU puts on the Notebook, that the move back gives the
original spec byte for byte, what is refused before anything happens, and how the
admin's settings are checked. Every patch applied (test_move_plan's helpers)."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import pytest
from test_move_plan import (
    CPU,
    CUDA,
    annotation_trip,
    applied,
    c0,
    kubeflow_notebook,
    pod_spec,
    same_bytes,
)

from gpushift_core.admin_settings import (
    AdminSettings,
    ConfigError,
    GpuFacts,
    GpuProfile,
    ImagePair,
    parse_admin_settings,
)
from gpushift_core.move_plan import MovePlan, PlanError, image_refusal, plan_move
from gpushift_core.pod_profile import profile_of_pod
from gpushift_core.quantity import QuantityError, parse_quantity
from gpushift_webhook.config import parse_config

ROCM = "example/jupyter-pytorch-rocm:1"
GAUDI = "example/jupyter-pytorch-gaudi:1"
VENDOR_MAP = [ImagePair(cpu=CPU, cuda=CUDA, rocm=ROCM, gaudi=GAUDI)]
CUDA_ONLY = [ImagePair(cpu=CPU, cuda=CUDA)]
ZONE_AFFINITY: dict[str, Any] = {"nodeAffinity": {
    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "gpu.model", "operator": "In",
                               "values": ["A100", "H100"]}]}]}}}
BIG = GpuProfile(name="a100-big", node_selector={"pool": "a100"},
                 resources={"requests": {"cpu": "4", "memory": "16Gi"},
                            "limits": {"cpu": "8", "memory": "32Gi"}},
                 affinity=ZONE_AFFINITY)
AMD = GpuProfile(name="mi300", resource="amd.com/gpu",
                 resources={"requests": {"memory": "8Gi"}, "limits": {"memory": "8Gi"}})
GAUDI_PROFILE = GpuProfile(name="gaudi2", resource="habana.ai/gaudi")


def move(nb: dict[str, Any], target: str, profile: GpuProfile | None,
         record: dict[str, Any] | None, image_map: list[ImagePair] = VENDOR_MAP,
         ) -> tuple[dict[str, Any], MovePlan]:
    plan = plan_move(nb, target, profile, image_map,
                     previous=None if record is None else annotation_trip(record))
    return applied(nb, plan), plan


# ------------------------------------------------------------------ CPU and memory


def test_the_profile_sets_cpu_and_memory_and_the_move_back_restores_the_notebooks_own():
    original = kubeflow_notebook()  # requests cpu 500m / memory 1Gi, limits 1200m / 2Gi
    gpu, to_gpu = move(original, "gpu", BIG, None)
    resources = c0(gpu)["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert resources["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
    assert "requests memory=16Gi" in to_gpu.summary
    back, to_cpu = move(gpu, "cpu", None, to_gpu.previous_profile)
    assert same_bytes(pod_spec(back), pod_spec(original))
    assert "requests memory restored to 1Gi" in to_cpu.summary


def test_a_notebook_without_resources_gets_them_and_loses_them_again():
    original = kubeflow_notebook()
    del c0(original)["resources"]
    gpu, to_gpu = move(original, "gpu", AMD, None)
    assert c0(gpu)["resources"] == {"limits": {"amd.com/gpu": "1", "memory": "8Gi"},
                                    "requests": {"memory": "8Gi"}}
    back, _ = move(gpu, "cpu", None, to_gpu.previous_profile)
    assert same_bytes(pod_spec(back), pod_spec(original))


def test_a_request_that_would_end_above_the_notebooks_limit_is_refused_before_any_patch():
    nb = kubeflow_notebook()  # limits memory 2Gi
    only_request = GpuProfile(name="more-memory", resources={"requests": {"memory": "4Gi"}})
    with pytest.raises(PlanError, match=r"memory request \(4Gi\) would be above its "
                                        r"limit \(2Gi\)"):
        plan_move(nb, "gpu", only_request, VENDOR_MAP)
    # Equal quantities written differently are not above: 2048Mi == 2Gi.
    equal = GpuProfile(name="same", resources={"requests": {"memory": "2048Mi"}})
    assert plan_move(nb, "gpu", equal, VENDOR_MAP).changes


# ------------------------------------------------------------------------- affinity


def test_the_profiles_affinity_replaces_the_notebooks_and_comes_back_off_it():
    own = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                           "labelSelector": {"matchLabels": {"a": "b"}}}}]}}
    for original in (kubeflow_notebook(), kubeflow_notebook(affinity=own)):
        gpu, to_gpu = move(original, "gpu", BIG, None)
        assert pod_spec(gpu)["affinity"] == ZONE_AFFINITY
        back, to_cpu = move(gpu, "cpu", None, to_gpu.previous_profile)
        assert same_bytes(pod_spec(back), pod_spec(original))
        assert "{" not in to_cpu.summary  # "affinity restored to the original", no dict


def test_without_a_record_the_profiles_affinity_goes_and_its_cpu_memory_are_kept_and_said():
    gpu, _ = move(kubeflow_notebook(), "gpu", BIG, None)
    back, to_cpu = move(gpu, "cpu", BIG, None)
    assert "affinity" not in pod_spec(back)
    assert "nvidia.com/gpu" not in c0(back)["resources"]["limits"]
    assert c0(back)["resources"]["requests"]["memory"] == "16Gi"
    assert "the profile's CPU/memory kept" in to_cpu.summary


# ------------------------------------------------------------------ images per vendor


@pytest.mark.parametrize(("profile", "image"), [
    (GpuProfile(name="nvidia"), CUDA),
    (GpuProfile(name="mig", resource="nvidia.com/mig-1g.10gb"), CUDA),
    (AMD, ROCM),
    (GAUDI_PROFILE, GAUDI),
    (GpuProfile(name="own", resource="example.com/gpu", image_kind="rocm"), ROCM),
])
def test_each_vendor_gets_its_build_of_the_cpu_image(profile: GpuProfile, image: str):
    resources = ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "amd.com/gpu",
                 "habana.ai/gaudi", "example.com/gpu"]
    gpu, to_gpu = move(kubeflow_notebook(), "gpu", profile, None)
    assert c0(gpu)["image"] == image
    back = applied(gpu, plan_move(gpu, "cpu", None, VENDOR_MAP, gpu_resources=resources,
                                  previous=annotation_trip(to_gpu.previous_profile)))
    assert c0(back)["image"] == CPU


def test_cuda_then_rocm_then_cpu_gives_back_the_original_spec_byte_for_byte():
    original = kubeflow_notebook(affinity={"nodeAffinity": {}})
    on_nvidia, to_nvidia = move(original, "gpu", BIG, None)
    on_amd, to_amd = move(on_nvidia, "gpu", AMD, to_nvidia.previous_profile)
    spec = pod_spec(on_amd)
    assert c0(on_amd)["image"] == ROCM and spec["affinity"] == {"nodeAffinity": {}}
    assert "nvidia.com/gpu" not in c0(on_amd)["resources"]["limits"]
    assert c0(on_amd)["resources"]["requests"] == {"cpu": "500m", "memory": "8Gi"}
    back, _ = move(on_amd, "cpu", None, to_amd.previous_profile)
    assert same_bytes(pod_spec(back), pod_spec(original))


def test_a_cuda_notebook_made_on_a_gpu_moved_to_amd_gets_the_rocm_build():
    nb = kubeflow_notebook()
    c0(nb)["image"] = CUDA
    c0(nb)["resources"]["limits"]["nvidia.com/gpu"] = "1"
    on_amd, plan = move(nb, "gpu", GpuProfile(name="amd", resource="amd.com/gpu"), None)
    assert c0(on_amd)["image"] == ROCM and f"image {CUDA} -> {ROCM}" in plan.summary


def test_a_pair_without_the_vendors_build_is_refused_or_kept_and_said():
    nb = kubeflow_notebook()
    with pytest.raises(PlanError, match=f"{CPU} has no Gaudi image"):
        plan_move(nb, "gpu", GAUDI_PROFILE, CUDA_ONLY, unmapped_image="refuse")
    kept = plan_move(nb, "gpu", GAUDI_PROFILE, CUDA_ONLY, unmapped_image="keep")
    assert f"image {CPU} has no Gaudi build in the image map: kept" in kept.summary
    # The sidecar asks before planning, from the pod's image, a CUDA build included.
    assert image_refusal(CPU, CUDA_ONLY, "refuse", "cuda") is None
    assert "no ROCm image" in str(image_refusal(CUDA, CUDA_ONLY, "refuse", "rocm"))
    assert image_refusal(CUDA, VENDOR_MAP, "ask", "rocm") is None


# ------------------------------------------------------------- which profile a pod is on


def test_profiles_that_differ_only_in_memory_or_affinity_are_told_apart():
    small = GpuProfile(name="small", resources={"limits": {"memory": "8Gi"}})
    large = GpuProfile(name="large", resources={"limits": {"memory": "64Gi"}})
    pinned = GpuProfile(name="pinned", affinity=ZONE_AFFINITY)
    profiles = [small, large, pinned]
    one = GpuFacts("nvidia.com/gpu", 1)

    def pod(memory: str, **extra: Any) -> dict[str, Any]:
        limits = {"nvidia.com/gpu": "1", "memory": memory}
        return {"containers": [{"name": "sidecar"},
                               {"name": "nb", "resources": {"limits": limits}}], **extra}

    assert profile_of_pod(pod("65536Mi"), one, profiles) == "large"  # same quantity
    assert profile_of_pod(pod("8Gi"), one, profiles) == "small"
    assert profile_of_pod(pod("2Gi", affinity=ZONE_AFFINITY), one, profiles) == "pinned"
    assert profile_of_pod(pod("2Gi"), one, profiles) == ""


# ------------------------------------------------------------------ admin's settings


def test_the_new_fields_travel_from_the_webhook_to_the_sidecar_unchanged():
    config = parse_config({
        "profiles": [BIG.to_json(), AMD.to_json(), GAUDI_PROFILE.to_json()],
        "default_profile": "a100-big",
        "image_map": [{"cpu": CPU, "cuda": CUDA, "rocm": ROCM}, {"cpu": "x:1", "gaudi": "x-g:1"}],
    })
    settings = parse_admin_settings(json.dumps(config.admin_settings().to_json()))
    assert settings.profiles == [BIG, AMD, GAUDI_PROFILE]
    assert settings.image_map == [ImagePair(cpu=CPU, cuda=CUDA, rocm=ROCM),
                                  ImagePair(cpu="x:1", gaudi="x-g:1")]
    assert settings.to_json()["image_map"][1] == {"cpu": "x:1", "gaudi": "x-g:1"}


@pytest.mark.parametrize(("profile", "message"), [
    ({"image_kind": "opencl"}, "profiles.p.image_kind: 'opencl' is not one of cuda, rocm"),
    ({"resources": {"request": {"cpu": "1"}}}, "'request' is not requests or limits"),
    ({"resources": {"limits": {"nvidia.com/gpu": "2"}}},
     "resources.limits.nvidia.com/gpu: the GPU is the profile's resource and count"),
    ({"resources": {"limits": {"memory": "lots"}}},
     "resources.limits.memory: 'lots' is not a Kubernetes quantity"),
    ({"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}},
     r"the request of cpu \(2\) is above its limit \(1500m\)"),
    ({"resources": {"limits": {"memory": 8}}}, "expected a string, got int"),
    ({"affinity": {"nodeSelector": {}}}, "affinity: unknown key.s. nodeSelector"),
])
def test_a_wrong_profile_is_refused_naming_the_field(profile: dict[str, Any], message: str):
    data = {"profiles": [{"name": "p", **profile}], "default_profile": "p"}
    with pytest.raises(ConfigError, match=message):
        parse_admin_settings(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_an_image_pair_without_a_gpu_build_is_refused():
    with pytest.raises(ConfigError, match=r"image_map\[0\]: a:1 names no GPU image"):
        parse_config({"image_map": [{"cpu": "a:1"}]})
    with pytest.raises(ConfigError, match=r"image_map\[0\].cpu: must not be empty"):
        parse_admin_settings(json.dumps({"image_map": [{"cpu": "", "cuda": "b"}]}))
    assert AdminSettings().image_map == []


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Fraction(1, 2)), ("4", 4), ("16Gi", 16 * 2**30), ("1.5G", 1_500_000_000),
    ("1e3", 1000), (".5Ki", 512), ("100u", Fraction(1, 10_000)),
])
def test_quantities_are_read_as_kubernetes_reads_them(text: str, value: Fraction):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "1GB", "1.2.3", "one", None, True, "1 Gi"])
def test_what_is_not_a_quantity_is_said(text: object):
    with pytest.raises(QuantityError, match="is not a Kubernetes quantity"):
        parse_quantity(text)


def test_a_profile_without_the_new_fields_is_written_as_before():
    """The sidecar's settings JSON: a profile that sets none of the new fields has the
    keys an older sidecar knows (it refuses unknown keys), so an admin who pins an older
    sidecar image keeps working."""
    assert set(GpuProfile(name="p").to_json()) == {
        "name", "resource", "count", "node_selector", "tolerations", "runtime_class_name"}
    assert ImagePair(cpu="a", cuda="b").to_json() == {"cpu": "a", "cuda": "b"}
