"""move_plan from one GPU profile to another: the CPU original is put back from the
record of the move that brought the notebook to its GPU, then the new profile applied;
the new record is that of a move from the CPU original. Checked by applying each patch
(test_move_plan's helpers), on a Notebook with scheduling fields of its own."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from test_move_plan import (
    CPU,
    CUDA,
    IMAGE_MAP,
    annotation_trip,
    applied,
    c0,
    kubeflow_notebook,
    pod_spec,
    same_bytes,
)

from gpushift_core.admin_settings import GpuProfile
from gpushift_core.move_plan import MovePlan, plan_move

# Two NVIDIA profiles with the same resource and count, on different nodes.
A100 = GpuProfile(name="a100", node_selector={"pool": "a100", "gpu.model": "A100"},
                  tolerations=[{"key": "a100", "operator": "Exists", "effect": "NoSchedule"}])
T4 = GpuProfile(name="t4", node_selector={"pool": "t4"},
                tolerations=[{"key": "t4", "operator": "Exists", "effect": "NoSchedule"}],
                runtime_class_name="nvidia")
AMD = GpuProfile(name="amd-2", resource="amd.com/gpu", count=2,
                 node_selector={"pool": "amd"})


def user_notebook() -> dict[str, Any]:
    """A CPU Notebook whose user chose a node pool and a toleration of their own."""
    return kubeflow_notebook(
        nodeSelector={"pool": "cpu-large"},
        tolerations=[{"key": "team", "operator": "Equal", "value": "ml",
                      "effect": "NoSchedule"}])


def move(nb: dict[str, Any], target: str, profile: GpuProfile | None,
         record: dict[str, Any] | None) -> tuple[dict[str, Any], MovePlan]:
    plan = plan_move(nb, target, profile, IMAGE_MAP,
                     previous=None if record is None else annotation_trip(record))
    return applied(nb, plan), plan


def test_a100_then_t4_then_cpu_gives_back_the_original_spec_byte_for_byte():
    original = user_notebook()
    on_a100, to_a100 = move(original, "gpu", A100, None)
    on_t4, to_t4 = move(on_a100, "gpu", T4, to_a100.previous_profile)
    back, _ = move(on_t4, "cpu", None, to_t4.previous_profile)
    assert same_bytes(pod_spec(back), pod_spec(original))
    assert to_t4.previous_profile["profile"] == "t4"


def test_on_the_second_profile_nothing_of_the_first_stays():
    original = user_notebook()
    on_a100, to_a100 = move(original, "gpu", A100, None)
    on_t4, to_t4 = move(on_a100, "gpu", T4, to_a100.previous_profile)
    straight, straight_plan = move(original, "gpu", T4, None)
    assert same_bytes(pod_spec(on_t4), pod_spec(straight))
    assert pod_spec(on_t4)["nodeSelector"] == {"pool": "t4"}
    assert [t["key"] for t in pod_spec(on_t4)["tolerations"]] == ["team", "t4"]
    assert c0(on_t4)["image"] == CUDA
    # Its record is that of a move from the CPU original: the same as the straight one's.
    assert to_t4.previous_profile == straight_plan.previous_profile


def test_to_another_resource_and_count_and_back():
    original = user_notebook()
    on_a100, to_a100 = move(original, "gpu", A100, None)
    on_amd, to_amd = move(on_a100, "gpu", AMD, to_a100.previous_profile)
    limits = c0(on_amd)["resources"]["limits"]
    assert limits["amd.com/gpu"] == "2" and "nvidia.com/gpu" not in limits
    back, _ = move(on_amd, "cpu", None, to_amd.previous_profile)
    assert same_bytes(pod_spec(back), pod_spec(original))


def test_the_same_profile_again_changes_nothing():
    on_t4, to_t4 = move(user_notebook(), "gpu", T4, None)
    again = plan_move(on_t4, "gpu", T4, IMAGE_MAP,
                      previous=annotation_trip(to_t4.previous_profile))
    assert again.operations == []
    assert again.previous_profile == to_t4.previous_profile


def test_a_record_left_from_a_move_since_undone_is_not_used():
    """Back on CPU, the Notebook may still carry the record of its earlier move to GPU:
    the next move to GPU plans from the spec as it is."""
    original = user_notebook()
    on_a100, to_a100 = move(original, "gpu", A100, None)
    back, _ = move(on_a100, "cpu", None, to_a100.previous_profile)
    with_stale = plan_move(back, "gpu", T4, IMAGE_MAP,
                           previous=annotation_trip(to_a100.previous_profile))
    without = plan_move(back, "gpu", T4, IMAGE_MAP)
    assert with_stale.operations == without.operations


def test_without_a_usable_record_the_new_profile_is_applied_over_the_gpu_spec():
    """A notebook created on a GPU (no record), or a record this code does not
    understand: the new profile's fields are set over what is there, as before."""
    gpu_born = kubeflow_notebook(nodeSelector={"pool": "a100"})
    c0(gpu_born)["image"] = CUDA
    c0(gpu_born)["resources"]["limits"]["nvidia.com/gpu"] = "1"
    for record in (None, {"version": 999, "target": "gpu"}):
        plan = plan_move(gpu_born, "gpu", T4, IMAGE_MAP, previous=record)
        on_t4 = applied(gpu_born, plan)
        assert pod_spec(on_t4)["nodeSelector"] == {"pool": "t4"}
        assert c0(on_t4)["image"] == CUDA
        assert "limits" not in plan.previous_profile["fields"]  # the GPU was there already


def test_a_patch_planned_from_an_earlier_read_fails_as_a_whole():
    original = user_notebook()
    on_a100, to_a100 = move(original, "gpu", A100, None)
    plan = plan_move(on_a100, "gpu", T4, IMAGE_MAP,
                     previous=annotation_trip(to_a100.previous_profile))
    assert plan.operations[0] == {"op": "test", "path": "/metadata/resourceVersion",
                                  "value": on_a100["metadata"]["resourceVersion"]}
    changed = copy.deepcopy(on_a100)
    changed["metadata"]["resourceVersion"] = "999"
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(changed, plan.operations)
    assert c0(changed)["image"] == CUDA and c0(original)["image"] == CPU
