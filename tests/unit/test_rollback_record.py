"""rollback_record: the move back to CPU, with the record of the move to GPU (CPU -> GPU
-> CPU gives back the template byte for byte) and without one. Every plan is checked by
applying its patch, with test_move_plan's helpers."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_move_plan import (
    AMD,
    CPU,
    CUDA,
    GPU_TOLERATION,
    IMAGE_MAP,
    NVIDIA,
    annotation_trip,
    applied,
    c0,
    kubeflow_notebook,
    pod_spec,
    round_trip,
    same_bytes,
)

from gpushift_core.admin_settings import DEFAULT_GPU_RESOURCES, GpuProfile
from gpushift_core.labels import PREVIOUS_PROFILE_ANNOTATION
from gpushift_core.move_plan import plan_move
from gpushift_core.patches import apply
from gpushift_core.rollback_record import read_previous_profile
from gpushift_core.spec_editor import gpu_image_for

# --------------------------------------------------------------------------- back to CPU


def test_already_on_cpu_changes_nothing():
    nb = kubeflow_notebook()
    plan = plan_move(nb, "cpu", NVIDIA, IMAGE_MAP)
    assert plan.operations == []


def test_round_trip_gives_back_the_original_byte_for_byte():
    nb = kubeflow_notebook(nodeSelector={"zone": "a"},
                           tolerations=[{"key": "x", "operator": "Exists"}],
                           runtimeClassName="runc")
    gpu, back, _, to_cpu = round_trip(nb, AMD)
    assert gpu["spec"] != nb["spec"]
    assert back["metadata"].pop("resourceVersion") == "44"
    original = copy.deepcopy(nb)
    del original["metadata"]["resourceVersion"]
    assert same_bytes(back, original)
    assert to_cpu.operations[0] == {"op": "test", "path": "/metadata/resourceVersion",
                                    "value": "43"}
    assert to_cpu.previous_profile["target"] == "cpu"
    assert "to CPU (profile amd-2)" in to_cpu.summary


def test_move_back_restores_the_image_even_when_changed_meanwhile():
    nb = kubeflow_notebook()
    to_gpu = plan_move(nb, "gpu", NVIDIA, IMAGE_MAP)
    gpu = applied(nb, to_gpu)
    c0(gpu)["image"] = "someone/else:cuda"
    to_cpu = plan_move(gpu, "cpu", NVIDIA, IMAGE_MAP, previous=to_gpu.previous_profile)
    assert c0(applied(gpu, to_cpu))["image"] == CPU
    assert "image changed to someone/else:cuda since the move" in to_cpu.summary


def test_move_back_keeps_changes_others_made_meanwhile():
    nb = kubeflow_notebook()
    to_gpu = plan_move(nb, "gpu", NVIDIA, IMAGE_MAP)
    gpu = applied(nb, to_gpu)
    pod_spec(gpu)["tolerations"].insert(0, {"key": "late", "operator": "Exists"})
    c0(gpu)["resources"]["limits"]["memory"] = "4Gi"
    pod_spec(gpu)["nodeSelector"]["zone"] = "c"
    back = applied(gpu, plan_move(gpu, "cpu", NVIDIA, IMAGE_MAP,
                                  previous=to_gpu.previous_profile))
    assert pod_spec(back)["tolerations"] == [{"key": "late", "operator": "Exists"}]
    assert c0(back)["resources"]["limits"] == {"cpu": "1200m", "memory": "4Gi"}
    assert pod_spec(back)["nodeSelector"] == {"zone": "c"}
    assert c0(back)["image"] == CPU


def test_created_on_gpu_without_a_record():
    """Kubeflow's UI made it on a GPU: the profile's fields go, the user's stay."""
    user_toleration = {"key": "team", "operator": "Exists"}
    nb = kubeflow_notebook(nodeSelector={"nvidia.com/gpu.present": "true", "zone": "a"},
                           tolerations=[GPU_TOLERATION, user_toleration])
    c0(nb)["image"] = CUDA
    c0(nb)["resources"]["limits"]["nvidia.com/gpu"] = "1"
    plan = plan_move(nb, "cpu", None, IMAGE_MAP, profiles=[AMD, NVIDIA])
    cpu = apply(nb, plan.operations)
    assert c0(cpu)["image"] == CPU
    assert c0(cpu)["resources"]["limits"] == {"cpu": "1200m", "memory": "2Gi"}
    assert pod_spec(cpu)["nodeSelector"] == {"zone": "a"}
    assert pod_spec(cpu)["tolerations"] == [user_toleration]
    assert "profile nvidia-1" in plan.summary
    assert plan.operations[0]["op"] == "test"
    assert {op["path"] for op in plan.operations if op["op"] == "remove"} == {
        "/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu",
        "/spec/template/spec/nodeSelector/nvidia.com~1gpu.present",
        "/spec/template/spec/tolerations/0",
    }


def test_without_a_record_or_profile_only_the_gpu_limits_go():
    nb = kubeflow_notebook(tolerations=[GPU_TOLERATION])
    c0(nb)["resources"] = {"limits": {"habana.ai/gaudi": "8"}, "requests": {"habana.ai/gaudi": "8"}}
    plan = plan_move(nb, "cpu", None, IMAGE_MAP, profiles=[NVIDIA])
    cpu = apply(nb, plan.operations)
    assert c0(cpu)["resources"] == {}
    assert pod_spec(cpu)["tolerations"] == [GPU_TOLERATION]
    assert "no profile matches" in plan.summary
    assert f"image {CPU} is not in" not in plan.summary  # a CPU image: nothing to say


def test_record_of_a_move_that_found_a_gpu_falls_back_to_the_profile():
    nb = kubeflow_notebook(tolerations=[GPU_TOLERATION])
    c0(nb)["resources"]["limits"]["nvidia.com/gpu"] = "2"
    to_gpu = plan_move(nb, "gpu", NVIDIA, IMAGE_MAP)  # 2 -> 1 GPU
    gpu = applied(nb, to_gpu)
    back = applied(gpu, plan_move(gpu, "cpu", None, IMAGE_MAP, profiles=[NVIDIA],
                                  previous=to_gpu.previous_profile))
    assert "nvidia.com/gpu" not in c0(back)["resources"]["limits"]
    assert "tolerations" not in pod_spec(back)
    assert "nodeSelector" not in pod_spec(back)


def test_other_gpu_limits_do_not_survive_the_move_back():
    nb = kubeflow_notebook()
    to_gpu = plan_move(nb, "gpu", NVIDIA, IMAGE_MAP)
    gpu = applied(nb, to_gpu)
    c0(gpu)["resources"]["limits"]["amd.com/gpu"] = "1"
    back = applied(gpu, plan_move(gpu, "cpu", None, IMAGE_MAP,
                                  previous=to_gpu.previous_profile))
    assert c0(back)["resources"]["limits"] == {"cpu": "1200m", "memory": "2Gi"}


# --------------------------------------------------------------------------- property

KEYS = ["nvidia.com/gpu.present", "amd.com/gpu.present", "zone", "a/b~c"]
TOLERATIONS = [
    GPU_TOLERATION,
    {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
    {"operator": "Exists"},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule", "value": ""},
]
IMAGES = [CPU, CUDA, "jupyter-tf:1", "jupyter-tf-cuda:1", "mine:latest"]
ABSENT = object()


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field that is absent, null, or a value."""
    return st.one_of(st.just(ABSENT), st.none(), strategy)


quantities = st.dictionaries(
    st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "amd.com/gpu", "example.com/foo"]),
    st.sampled_from(["0", "1", "500m", "2Gi"]), max_size=4,
).map(lambda d: {k: ("0" if k.endswith("/gpu") else v) for k, v in d.items()})

containers = st.builds(
    lambda image, resources, extra: {
        "image": image,
        **({} if resources is ABSENT else {"resources": resources}),
        **extra,
    },
    st.sampled_from(IMAGES),
    maybe(st.builds(
        lambda lim, req: {k: v for k, v in (("limits", lim), ("requests", req))
                          if v is not ABSENT},
        maybe(quantities), maybe(quantities))),
    st.dictionaries(st.sampled_from(["command", "env"]), st.just([]), max_size=2),
)

pod_specs = st.builds(
    lambda cs, selector, tolerations, rcn, other: {
        "containers": [{"name": f"c{i}", **c} for i, c in enumerate(cs)],
        **{k: v for k, v in (("nodeSelector", selector), ("tolerations", tolerations),
                             ("runtimeClassName", rcn)) if v is not ABSENT},
        **other,
    },
    st.lists(containers, min_size=1, max_size=3),
    maybe(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(["true", "false", "x"]),
                          max_size=3)),
    maybe(st.lists(st.sampled_from(TOLERATIONS), max_size=4)),
    st.one_of(st.just(ABSENT), st.sampled_from(["runc", "nvidia"])),
    st.dictionaries(st.sampled_from(["hostname", "priority"]), st.just("v"), max_size=1),
)

profiles = st.builds(
    lambda resource, count, selector, tolerations, rcn: GpuProfile(
        name="p", resource=resource, count=count, node_selector=selector,
        tolerations=[dict(t) for t in tolerations], runtime_class_name=rcn),
    st.sampled_from(DEFAULT_GPU_RESOURCES),
    st.integers(1, 4),
    st.dictionaries(st.sampled_from(KEYS), st.sampled_from(["true", "false"]), max_size=2),
    st.lists(st.sampled_from(TOLERATIONS), max_size=3),
    st.sampled_from(["", "nvidia", "runc"]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=pod_specs, profile=profiles, pick=st.integers(0, 2), data=st.data())
def test_cpu_gpu_cpu_is_the_identity_on_the_template(spec, profile, pick, data):
    nb = {"apiVersion": "kubeflow.org/v1", "kind": "Notebook",
          "metadata": {"name": "nb", "resourceVersion": "7"},
          "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": spec}}}
    index = pick % len(spec["containers"])
    container = data.draw(st.sampled_from([index, f"c{index}"]))
    original = copy.deepcopy(nb)

    to_gpu = plan_move(nb, "gpu", profile, IMAGE_MAP, container=container)
    assert nb == original
    gpu = applied(nb, to_gpu)
    # On the GPU: everything the profile asks for.
    c = gpu["spec"]["template"]["spec"]["containers"][index]
    assert c["resources"]["limits"][profile.resource] == str(profile.count)
    requests = (c["resources"].get("requests") or {})
    assert requests.get(profile.resource, str(profile.count)) == str(profile.count)
    cuda = gpu_image_for(original["spec"]["template"]["spec"]["containers"][index]["image"],
                         IMAGE_MAP, profile.gpu_image_kind())
    if cuda:
        assert c["image"] == cuda
    gspec = gpu["spec"]["template"]["spec"]
    for key, value in profile.node_selector.items():
        assert gspec["nodeSelector"][key] == value
    for t in profile.tolerations:
        assert any({k: v for k, v in x.items() if v != ""} == {k: v for k, v in t.items()
                                                              if v != ""}
                   for x in gspec["tolerations"])
    if profile.runtime_class_name:
        assert gspec["runtimeClassName"] == profile.runtime_class_name
    # Only the pod spec changed.
    assert gpu["spec"]["template"]["metadata"] == original["spec"]["template"]["metadata"]

    to_cpu = plan_move(gpu, "cpu", profile, IMAGE_MAP, container=container,
                       previous=annotation_trip(to_gpu.previous_profile))
    back = applied(gpu, to_cpu)
    assert same_bytes(back["spec"]["template"], original["spec"]["template"]), (
        to_gpu.operations, to_cpu.operations)
    # And the same move again is the same patch (the record does not depend on history).
    again = plan_move(back, "gpu", profile, IMAGE_MAP, container=container)
    assert again.operations[1:] == to_gpu.operations[1:]


@pytest.mark.parametrize(("notebook", "record"), [
    ({"metadata": {"annotations": {PREVIOUS_PROFILE_ANNOTATION: '{"image": "cpu:1"}'}}},
     {"image": "cpu:1"}),
    ({"metadata": {"annotations": {}}}, None),
    ({"metadata": {"annotations": {PREVIOUS_PROFILE_ANNOTATION: ""}}}, None),
    ({"metadata": {"annotations": {PREVIOUS_PROFILE_ANNOTATION: "{not json"}}}, None),
    ({"metadata": {"annotations": {PREVIOUS_PROFILE_ANNOTATION: "[1, 2]"}}}, None),
    # Read from the API before anything validated it: any shape.
    ({"metadata": {"annotations": {PREVIOUS_PROFILE_ANNOTATION: 7}}}, None),
    ({"metadata": {"annotations": ["a"]}}, None),
    ({"metadata": "x"}, None),
    ({}, None),
])
def test_the_previous_profile_record_is_read_from_any_shape(
        notebook: dict[str, Any], record: dict[str, Any] | None) -> None:
    assert read_previous_profile(notebook) == record
