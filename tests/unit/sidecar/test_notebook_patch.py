"""notebook_patch: every plan is checked by applying its patch to the Notebook it was
planned for (gpushift_core.patches.apply, i.e. jsonpatch), and the record of a move to
GPU by moving back with it."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpushift_core.admin_settings import DEFAULT_GPU_RESOURCES, GpuProfile, ImagePair
from gpushift_core.move_plan import (
    RECORD_VERSION,
    MovePlan,
    PlanError,
    cpu_image_for,
    cuda_image_for,
    find_container,
    plan_move,
)
from gpushift_core.patches import apply

CPU = "kubeflownotebookswg/jupyter-pytorch-full:v1.9.2"
CUDA = "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.9.2"
IMAGE_MAP = [ImagePair(cpu=CPU, cuda=CUDA),
             ImagePair(cpu="jupyter-tf:1", cuda="jupyter-tf-cuda:1")]
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
NVIDIA = GpuProfile(name="nvidia-1", node_selector={"nvidia.com/gpu.present": "true"},
                    tolerations=[GPU_TOLERATION])
AMD = GpuProfile(name="amd-2", resource="amd.com/gpu", count=2,
                 node_selector={"amd.com/gpu.present": "true"},
                 tolerations=[{"key": "amd.com/gpu", "operator": "Exists",
                               "effect": "NoSchedule"}],
                 runtime_class_name="amd")
SPEC = ("spec", "template", "spec")


def kubeflow_notebook(**pod_spec: Any) -> dict[str, Any]:
    """A Notebook as Kubeflow's UI creates it (CPU), resourceVersion "42"."""
    container = {
        "name": "nb",
        "image": CPU,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"limits": {"cpu": "1200m", "memory": "2Gi"},
                      "requests": {"cpu": "500m", "memory": "1Gi"}},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "nb-workspace", "mountPath": "/home/jovyan"}],
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "serviceAccountName": "default-editor",
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}},
                    {"name": "nb-workspace",
                     "persistentVolumeClaim": {"claimName": "nb-workspace"}}],
    }
    spec.update(pod_spec)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Notebook",
        "metadata": {"name": "nb", "namespace": "team", "resourceVersion": "42",
                     "labels": {"app": "nb"}, "annotations": {"notebooks.kubeflow.org/"
                                                              "server-type": "jupyter"}},
        "spec": {"template": {"spec": spec}},
    }


def pod_spec(nb: dict[str, Any]) -> dict[str, Any]:
    return nb["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def c0(nb: dict[str, Any]) -> dict[str, Any]:
    return pod_spec(nb)["containers"][0]  # type: ignore[no-any-return]


def applied(nb: dict[str, Any], plan: MovePlan, *, bump: bool = True) -> dict[str, Any]:
    """The patch applied as the API server would: the resourceVersion then changes."""
    out = apply(nb, plan.operations)
    if bump and plan.operations:
        out["metadata"]["resourceVersion"] = str(int(out["metadata"]["resourceVersion"]) + 1)
    return out  # type: ignore[no-any-return]


def annotation_trip(record: dict[str, Any]) -> dict[str, Any]:
    """The record as it comes back from the state file / annotation (JSON)."""
    return json.loads(json.dumps(record))  # type: ignore[no-any-return]


def round_trip(nb: dict[str, Any], profile: GpuProfile, **kw: Any,
               ) -> tuple[dict[str, Any], dict[str, Any], MovePlan, MovePlan]:
    to_gpu = plan_move(nb, "gpu", profile, IMAGE_MAP, **kw)
    gpu = applied(nb, to_gpu)
    to_cpu = plan_move(gpu, "cpu", profile, IMAGE_MAP,
                       previous=annotation_trip(to_gpu.previous_profile), **kw)
    return gpu, applied(gpu, to_cpu), to_gpu, to_cpu


def same_bytes(a: Any, b: Any) -> bool:
    """Byte-for-byte: the same JSON, key order included."""
    return json.dumps(a) == json.dumps(b)


# --------------------------------------------------------------------------- to GPU


def test_to_gpu_operations_are_precise_and_escaped():
    nb = kubeflow_notebook()
    plan = plan_move(nb, "gpu", NVIDIA, IMAGE_MAP)
    c = "/spec/template/spec/containers/0"
    assert plan.operations == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
        {"op": "replace", "path": f"{c}/image", "value": CUDA},
        {"op": "add", "path": f"{c}/resources/limits/nvidia.com~1gpu", "value": "1"},
        {"op": "add", "path": "/spec/template/spec/nodeSelector",
         "value": {"nvidia.com/gpu.present": "true"}},
        {"op": "add", "path": "/spec/template/spec/tolerations", "value": [GPU_TOLERATION]},
    ]
    assert plan.changes == 4
    gpu = apply(nb, plan.operations)
    assert c0(gpu)["image"] == CUDA
    assert c0(gpu)["resources"] == {"limits": {"cpu": "1200m", "memory": "2Gi",
                                               "nvidia.com/gpu": "1"},
                                    "requests": {"cpu": "500m", "memory": "1Gi"}}
    assert pod_spec(gpu)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod_spec(gpu)["tolerations"] == [GPU_TOLERATION]
    assert "runtimeClassName" not in pod_spec(gpu)
    # Nothing else changed.
    for key in ("containers", "nodeSelector", "tolerations"):
        pod_spec(gpu).pop(key)
        pod_spec(nb).pop(key, None)
    assert gpu == nb
    assert "profile nvidia-1" in plan.summary and f"image {CPU} -> {CUDA}" in plan.summary


def test_to_gpu_record_says_exactly_what_was_there():
    nb = kubeflow_notebook(nodeSelector={"zone": "a"}, runtimeClassName="runc")
    plan = plan_move(nb, "gpu", AMD, IMAGE_MAP)
    record = plan.previous_profile
    assert record == annotation_trip(record)  # JSON as it is
    assert record["version"] == RECORD_VERSION and record["target"] == "gpu"
    assert (record["profile"], record["resource"], record["count"]) == ("amd-2",
                                                                         "amd.com/gpu", 2)
    assert record["container"] == {"name": "nb", "index": 0}
    fields = record["fields"]
    assert fields["image"] == {"before": {"present": True, "value": CPU},
                               "after": {"present": True, "value": CUDA}}
    assert fields["limits"] == {"amd.com/gpu": {"before": {"present": False},
                                                "after": {"present": True, "value": "2"}}}
    assert fields["nodeSelector"] == {"amd.com/gpu.present": {
        "before": {"present": False}, "after": {"present": True, "value": "true"}}}
    assert fields["runtimeClassName"] == {"before": {"present": True, "value": "runc"},
                                          "after": {"present": True, "value": "amd"}}
    assert record["tolerations"]["added"] == AMD.tolerations
    # nodeSelector existed; tolerations did not.
    assert record["parents"] == {"tolerations": "missing"}


def test_container_without_resources_gets_them_and_loses_them_again():
    nb = kubeflow_notebook()
    del c0(nb)["resources"]
    gpu, back, to_gpu, _ = round_trip(nb, NVIDIA)
    assert c0(gpu)["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert to_gpu.operations[2] == {"op": "add",
                                    "path": "/spec/template/spec/containers/0/resources",
                                    "value": {"limits": {"nvidia.com/gpu": "1"}}}
    assert to_gpu.previous_profile["parents"]["resources"] == "missing"
    assert same_bytes(back["spec"], nb["spec"])


@pytest.mark.parametrize("resources", [None, {}, {"limits": None}, {"limits": {}},
                                       {"requests": {"cpu": "1"}}])
def test_odd_resources_come_back_as_they_were(resources):
    nb = kubeflow_notebook()
    c0(nb)["resources"] = resources
    gpu, back, _, _ = round_trip(nb, NVIDIA)
    assert c0(gpu)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert same_bytes(back["spec"], nb["spec"])


def test_existing_gpu_request_is_set_equal_to_the_limit():
    nb = kubeflow_notebook()
    c0(nb)["resources"]["requests"]["nvidia.com/gpu"] = "0"
    gpu, back, _, _ = round_trip(nb, GpuProfile(name="n2", count=2))
    assert c0(gpu)["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert c0(gpu)["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert same_bytes(back["spec"], nb["spec"])


def test_image_not_in_the_map_is_kept_and_said():
    nb = kubeflow_notebook()
    c0(nb)["image"] = "my/own:image"
    gpu, back, to_gpu, _ = round_trip(nb, NVIDIA)
    assert c0(gpu)["image"] == "my/own:image"
    assert "image my/own:image is not in the image map: kept" in to_gpu.summary
    assert "image" not in to_gpu.previous_profile["fields"]
    assert same_bytes(back["spec"], nb["spec"])


def test_existing_node_selector_and_tolerations_are_kept():
    user_toleration = {"key": "team", "operator": "Equal", "value": "ml",
                       "effect": "NoSchedule"}
    nb = kubeflow_notebook(nodeSelector={"zone": "eu-1a"}, tolerations=[user_toleration])
    gpu, back, to_gpu, _ = round_trip(nb, NVIDIA)
    assert pod_spec(gpu)["nodeSelector"] == {"zone": "eu-1a", "nvidia.com/gpu.present": "true"}
    assert pod_spec(gpu)["tolerations"] == [user_toleration, GPU_TOLERATION]
    ops = {op["path"]: op for op in to_gpu.operations}
    assert ops["/spec/template/spec/nodeSelector/nvidia.com~1gpu.present"]["op"] == "add"
    assert ops["/spec/template/spec/tolerations/-"]["value"] == GPU_TOLERATION
    assert to_gpu.previous_profile["parents"] == {}
    assert same_bytes(back["spec"], nb["spec"])


def test_toleration_already_there_is_not_added_nor_removed_later():
    # Same toleration, written with an explicit empty value: Kubernetes reads it the same.
    mine = {**GPU_TOLERATION, "value": ""}
    nb = kubeflow_notebook(tolerations=[mine])
    gpu, back, to_gpu, _ = round_trip(nb, NVIDIA)
    assert pod_spec(gpu)["tolerations"] == [mine]
    assert to_gpu.previous_profile["tolerations"]["added"] == []
    assert pod_spec(back)["tolerations"] == [mine]
    assert same_bytes(back["spec"], nb["spec"])


def test_node_selector_key_with_another_value_is_restored():
    nb = kubeflow_notebook(nodeSelector={"nvidia.com/gpu.present": "false", "zone": "b"})
    gpu, back, to_gpu, _ = round_trip(nb, NVIDIA)
    assert pod_spec(gpu)["nodeSelector"] == {"nvidia.com/gpu.present": "true", "zone": "b"}
    assert any(op["op"] == "replace" for op in to_gpu.operations)
    assert same_bytes(back["spec"], nb["spec"])


def test_runtime_class_set_and_removed_again():
    nb = kubeflow_notebook()
    gpu, back, _, to_cpu = round_trip(nb, AMD)
    assert pod_spec(gpu)["runtimeClassName"] == "amd"
    assert c0(gpu)["resources"]["limits"]["amd.com/gpu"] == "2"
    assert {"op": "remove", "path": "/spec/template/spec/runtimeClassName"} in to_cpu.operations
    assert same_bytes(back["spec"], nb["spec"])


def test_null_scheduling_fields_come_back_null():
    nb = kubeflow_notebook(nodeSelector=None, tolerations=None)
    gpu, back, to_gpu, _ = round_trip(nb, NVIDIA)
    assert pod_spec(gpu)["tolerations"] == [GPU_TOLERATION]
    assert to_gpu.previous_profile["parents"] == {"nodeSelector": "null",
                                                  "tolerations": "null"}
    assert same_bytes(back["spec"], nb["spec"])


def test_named_container_that_is_not_the_first():
    nb = kubeflow_notebook()
    pod_spec(nb)["containers"].insert(0, {"name": "helper", "image": CPU})
    gpu, back, to_gpu, _ = round_trip(nb, NVIDIA, container="nb")
    assert pod_spec(gpu)["containers"][0] == {"name": "helper", "image": CPU}
    assert pod_spec(gpu)["containers"][1]["image"] == CUDA
    assert to_gpu.previous_profile["container"] == {"name": "nb", "index": 1}
    assert same_bytes(back["spec"], nb["spec"])
    # The record names the container: the move back finds it without being told.
    back2 = applied(gpu, plan_move(gpu, "cpu", None, IMAGE_MAP,
                                   previous=to_gpu.previous_profile))
    assert same_bytes(back2["spec"], nb["spec"])


def test_already_on_that_gpu_changes_nothing():
    nb = kubeflow_notebook()
    gpu = applied(nb, plan_move(nb, "gpu", NVIDIA, IMAGE_MAP))
    again = plan_move(gpu, "gpu", NVIDIA, IMAGE_MAP)
    assert again.operations == [] and again.changes == 0
    assert "nothing to change" in again.summary
    assert "already a CUDA image" in again.summary


def test_already_on_cpu_changes_nothing():
    nb = kubeflow_notebook()
    plan = plan_move(nb, "cpu", NVIDIA, IMAGE_MAP)
    assert plan.operations == []


# --------------------------------------------------------------------------- back to CPU


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


# --------------------------------------------------------------------------- concurrency


def test_patch_fails_on_a_notebook_that_changed_since_it_was_read():
    nb = kubeflow_notebook()
    plan = plan_move(nb, "gpu", NVIDIA, IMAGE_MAP)
    newer = copy.deepcopy(nb)
    newer["metadata"]["resourceVersion"] = "43"
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        apply(newer, plan.operations)
    assert nb == kubeflow_notebook()  # planning changed nothing


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("nb", "args", "kw", "message"), [
    (kubeflow_notebook(), ("tpu", NVIDIA), {}, "target must be"),
    (kubeflow_notebook(), ("gpu", None), {}, "needs a profile"),
    (kubeflow_notebook(), ("gpu", NVIDIA), {"container": "nope"}, "no container 'nope'"),
    (kubeflow_notebook(), ("gpu", NVIDIA), {"container": 3}, "no container at index 3"),
    ({"metadata": {"resourceVersion": "1"}, "spec": {}}, ("gpu", NVIDIA), {}, "no containers"),
    ({"metadata": {}, "spec": {}}, ("gpu", NVIDIA), {}, "resourceVersion"),
    (kubeflow_notebook(), ("cpu", NVIDIA), {"previous": {"version": 99}}, "not understood"),
    (kubeflow_notebook(tolerations="odd"), ("gpu", NVIDIA), {}, "unexpected shape"),
])
def test_plan_errors(nb, args, kw, message):
    with pytest.raises(PlanError, match=message):
        plan_move(nb, *args, IMAGE_MAP, **kw)


def test_resources_of_the_wrong_type_are_refused():
    nb = kubeflow_notebook()
    c0(nb)["resources"] = "lots"
    with pytest.raises(PlanError, match="unexpected shape"):
        plan_move(nb, "gpu", NVIDIA, IMAGE_MAP)


def test_image_map_lookups_and_container_lookup():
    assert cuda_image_for(CPU, IMAGE_MAP) == CUDA and cpu_image_for(CUDA, IMAGE_MAP) == CPU
    assert cuda_image_for(CUDA, IMAGE_MAP) is None and cpu_image_for("x", IMAGE_MAP) is None
    assert find_container(kubeflow_notebook()) == (0, "nb")


def test_target_may_be_a_str_enum():
    from enum import StrEnum

    class Target(StrEnum):
        GPU = "gpu"

    assert plan_move(kubeflow_notebook(), Target.GPU, NVIDIA, IMAGE_MAP).changes == 4


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
    cuda = cuda_image_for(original["spec"]["template"]["spec"]["containers"][index]["image"],
                          IMAGE_MAP)
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
