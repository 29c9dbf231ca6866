"""move_plan: every plan is checked by applying its patch to the Notebook it was planned
for (gpushift_core.patches.apply, i.e. jsonpatch): the move to GPU and its record, the
resourceVersion guard and the errors. The move back is test_rollback_record's; its
helpers (a Kubeflow notebook, `round_trip`) are the ones here."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest

from gpushift_core.admin_settings import GpuProfile, ImagePair
from gpushift_core.move_plan import MovePlan, PlanError, find_container, plan_move
from gpushift_core.patches import apply
from gpushift_core.spec_editor import RECORD_VERSION, cpu_image_for, gpu_image_for

CPU = "kubeflownotebookswg/jupyter-pytorch-full:v1.9.2"
CUDA = "kubeflownotebookswg/jupyter-pytorch-cuda-full:v1.9.2"
ROCM = "example/jupyter-pytorch-rocm-full:v1.9.2"
IMAGE_MAP = [ImagePair(cpu=CPU, cuda=CUDA, rocm=ROCM),
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
                               "after": {"present": True, "value": ROCM}}  # AMD: ROCm
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
    assert "already a GPU image" in again.summary


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
    assert gpu_image_for(CPU, IMAGE_MAP) == CUDA and cpu_image_for(CUDA, IMAGE_MAP) == CPU
    assert gpu_image_for(CUDA, IMAGE_MAP) is None and cpu_image_for("x", IMAGE_MAP) is None
    assert find_container(kubeflow_notebook()) == (0, "nb")


def test_target_may_be_a_str_enum():
    from enum import StrEnum

    class Target(StrEnum):
        GPU = "gpu"

    assert plan_move(kubeflow_notebook(), Target.GPU, NVIDIA, IMAGE_MAP).changes == 4
