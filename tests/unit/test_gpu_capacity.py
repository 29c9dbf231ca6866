"""What is free per GPU profile (gpushift_core.gpu_capacity, capacity_document): the
scheduler's filters as far as a profile decides them (Ready, unschedulable, node
selector, required node affinity, taints and Kubernetes' toleration matching), a pod's
request (requests vs limits, init containers, native sidecars), several nodes and the
largest free on one node, the GPU model, and the published document."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from gpushift_core.admin_settings import GpuProfile
from gpushift_core.capacity_document import (
    build_document,
    parse_document,
    same_content,
    split_configmap_ref,
)
from gpushift_core.gpu_capacity import node_accepts, pod_request, profile_capacity, tolerates

GPU = "nvidia.com/gpu"
TAINT = {"key": GPU, "value": "present", "effect": "NoSchedule"}
TOLERATE_GPU = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]


def node(name: str, gpus: int | str | None = 4, *, labels: dict[str, str] | None = None,
         taints: list[dict[str, Any]] | None = None, ready: bool = True,
         unschedulable: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints or [], **({"unschedulable": True} if unschedulable else {})},
        "status": {"allocatable": {"cpu": "8", **({GPU: str(gpus)} if gpus is not None else {})},
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def container(requests: dict[str, str] | None = None, limits: dict[str, str] | None = None,
              **extra: Any) -> dict[str, Any]:
    return {"name": "c", "resources": {"requests": requests or {}, "limits": limits or {}},
            **extra}


def pod(node_name: str | None, containers: list[dict[str, Any]],
        init: list[dict[str, Any]] | None = None, phase: str = "Running") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers, "initContainers": init or []}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": {"name": "p"}, "spec": spec, "status": {"phase": phase}}


def gpu_pod(node_name: str | None, count: int, **kwargs: Any) -> dict[str, Any]:
    return pod(node_name, [container(limits={GPU: str(count)})], **kwargs)


# ----------------------------------------------------------------------------- tolerations


@pytest.mark.parametrize(("toleration", "ok"), [
    ({"key": GPU, "operator": "Exists", "effect": "NoSchedule"}, True),
    ({"key": GPU, "operator": "Exists"}, True),  # empty effect: every effect
    ({"key": GPU, "operator": "Equal", "value": "present", "effect": "NoSchedule"}, True),
    ({"key": GPU, "value": "present"}, True),  # Equal is the default operator
    ({"key": GPU, "operator": "Equal", "value": "other", "effect": "NoSchedule"}, False),
    ({"key": GPU, "operator": "Equal", "effect": "NoSchedule"}, False),  # value "" != "present"
    ({"key": GPU, "operator": "Exists", "effect": "NoExecute"}, False),
    ({"key": "other", "operator": "Exists"}, False),
    ({"operator": "Exists"}, True),  # empty key with Exists: every taint
    ({"operator": "Exists", "effect": "NoExecute"}, False),
    ({"key": GPU, "operator": "Bogus"}, False),
])
def test_toleration_matching_is_kubernetes(toleration: dict[str, Any], ok: bool) -> None:
    assert tolerates([toleration], TAINT) is ok


def test_tainted_node_needs_a_toleration_for_each_filtering_taint() -> None:
    taints = [TAINT, {"key": "dedicated", "value": "ml", "effect": "NoExecute"},
              {"key": "soft", "effect": "PreferNoSchedule"}]
    n = node("g", taints=taints)
    assert not node_accepts(n, GpuProfile("p", tolerations=TOLERATE_GPU))
    both = [*TOLERATE_GPU, {"key": "dedicated", "operator": "Equal", "value": "ml"}]
    assert node_accepts(n, GpuProfile("p", tolerations=both))  # PreferNoSchedule ignored


def test_not_ready_and_unschedulable_nodes_take_nothing() -> None:
    profile = GpuProfile("p")
    assert node_accepts(node("a"), profile)
    assert not node_accepts(node("a", ready=False), profile)
    assert not node_accepts(node("a", unschedulable=True), profile)
    no_conditions = node("a")
    no_conditions["status"]["conditions"] = []
    assert not node_accepts(no_conditions, profile)


def test_node_selector_and_required_affinity() -> None:
    a100 = node("a", labels={"nvidia.com/gpu.product": "A100", "zone": "z1", "tier": "3"})
    t4 = node("b", labels={"nvidia.com/gpu.product": "T4", "zone": "z2"})
    by_selector = GpuProfile("p", node_selector={"nvidia.com/gpu.product": "A100"})
    assert node_accepts(a100, by_selector) and not node_accepts(t4, by_selector)

    def affinity(*expressions: dict[str, Any], fields: list[Any] | None = None) -> GpuProfile:
        term: dict[str, Any] = {"matchExpressions": list(expressions)}
        if fields:
            term["matchFields"] = fields
        return GpuProfile("p", affinity={"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}})

    assert node_accepts(a100, affinity({"key": "zone", "operator": "In", "values": ["z1"]}))
    assert not node_accepts(t4, affinity({"key": "zone", "operator": "In", "values": ["z1"]}))
    assert node_accepts(t4, affinity({"key": "zone", "operator": "NotIn", "values": ["z1"]}))
    assert node_accepts(a100, affinity({"key": "tier", "operator": "Gt", "values": ["2"]}))
    assert not node_accepts(t4, affinity({"key": "tier", "operator": "Gt", "values": ["2"]}))
    assert node_accepts(t4, affinity({"key": "tier", "operator": "DoesNotExist"}))
    assert not node_accepts(t4, affinity(
        fields=[{"key": "metadata.name", "operator": "In", "values": ["a"]}]))


# ----------------------------------------------------------------------------- requests


def test_request_falls_back_to_the_limit_and_adds_up_containers() -> None:
    p = pod("n", [container(requests={GPU: "2"}, limits={GPU: "2"}),
                  container(limits={GPU: "1"}), container(requests={"cpu": "1"})])
    assert pod_request(p, GPU) == 3
    assert pod_request(p, "amd.com/gpu") == 0


def test_init_containers_take_the_max_and_sidecars_add_up() -> None:
    # A plain init container runs alone: max(init, containers).
    assert pod_request(pod("n", [container(limits={GPU: "1"})],
                           init=[container(limits={GPU: "4"})]), GPU) == 4
    assert pod_request(pod("n", [container(limits={GPU: "3"})],
                           init=[container(limits={GPU: "2"})]), GPU) == 3
    # A native sidecar (restartPolicy Always) runs beside everything after it.
    sidecar = container(limits={GPU: "1"}, restartPolicy="Always")
    assert pod_request(pod("n", [container(limits={GPU: "2"})], init=[sidecar]), GPU) == 3
    # An init container after the sidecar runs beside it: 1 + 4 > 1 + 2.
    assert pod_request(pod("n", [container(limits={GPU: "2"})],
                           init=[sidecar, container(limits={GPU: "4"})]), GPU) == 5
    # ... one before it does not.
    assert pod_request(pod("n", [container(limits={GPU: "2"})],
                           init=[container(limits={GPU: "4"}), sidecar]), GPU) == 4


# ----------------------------------------------------------------------------- capacity


def test_several_nodes_free_and_largest_free_on_one() -> None:
    nodes = [node("g0", 4, taints=[TAINT]), node("g1", 4, taints=[TAINT]),
             node("g2", 8, taints=[TAINT], ready=False), node("cpu", None)]
    pods = [gpu_pod("g0", 3), gpu_pod("g1", 1), gpu_pod("g1", 1),
            gpu_pod("g1", 2, phase="Succeeded"), gpu_pod("g2", 1), gpu_pod(None, 4),
            pod("cpu", [container(requests={"cpu": "1"})])]
    c = profile_capacity(GpuProfile("p", tolerations=TOLERATE_GPU, count=2), nodes, pods)
    assert (c.nodes, c.allocatable, c.requested, c.free, c.largest_free) == (2, 8, 5, 3, 2)
    assert c.count == 2 and c.resource == GPU
    # Without the toleration no node takes it.
    untolerated = profile_capacity(GpuProfile("p"), nodes, pods)
    assert (untolerated.nodes, untolerated.free, untolerated.largest_free) == (0, 0, 0)


def test_an_overcommitted_node_counts_zero_free() -> None:
    c = profile_capacity(GpuProfile("p"), [node("a", 2), node("b", 2)],
                         [gpu_pod("a", 3), gpu_pod("b", 1)])
    assert (c.allocatable, c.requested, c.free, c.largest_free) == (4, 4, 1, 1)


def test_gpu_type_from_the_nodes_or_the_selector() -> None:
    product = "nvidia.com/gpu.product"
    same = [node("a", labels={product: "A100"}), node("b", labels={product: "A100"})]
    assert profile_capacity(GpuProfile("p"), same, []).gpu_type == "A100"
    mixed = [node("a", labels={product: "A100"}), node("b", labels={product: "T4"})]
    assert profile_capacity(GpuProfile("p"), mixed, []).gpu_type is None
    gke = [node("a", labels={product: "A100", "cloud.google.com/gke-accelerator": "x"}),
           node("b", labels={product: "T4", "cloud.google.com/gke-accelerator": "x"})]
    assert profile_capacity(GpuProfile("p"), gke, []).gpu_type == "x"
    selector = GpuProfile("p", node_selector={product: "H100"})
    assert profile_capacity(selector, [], []).gpu_type == "H100"  # no node: the selector


def test_document_round_trip_same_content_and_staleness() -> None:
    now = dt.datetime(2026, 12, 4, 21, 0, tzinfo=dt.UTC)
    profiles = [GpuProfile("nvidia-1"), GpuProfile("nvidia-2", count=2)]
    doc = build_document(profiles, [node("a", 2)], [gpu_pod("a", 1)], now,
                         interval_seconds=30, refresh_seconds=300)
    assert doc["at"] == "2026-12-04T21:00:00Z" and doc["staleAfterSeconds"] == 390
    assert doc["profiles"]["nvidia-2"] == {
        "resource": GPU, "count": 2, "gpuType": None, "nodes": 1, "allocatable": 2,
        "requested": 1, "free": 1, "largestFree": 1}
    later = build_document(profiles, [node("a", 2)], [gpu_pod("a", 1)],
                           now + dt.timedelta(seconds=30), interval_seconds=30,
                           refresh_seconds=300)
    assert same_content(doc, later) and doc != later
    assert not same_content(doc, build_document(profiles, [node("a", 2)], [], now,
                                                interval_seconds=30, refresh_seconds=300))
    parsed = parse_document(json.dumps(doc))
    assert parsed.profiles["nvidia-1"]["free"] == 1
    assert not parsed.stale(now + dt.timedelta(seconds=390))
    assert parsed.stale(now + dt.timedelta(seconds=391))
    for bad in ("{", "[]", json.dumps({**doc, "version": 2}), json.dumps({**doc, "at": "x"}),
                json.dumps({**doc, "staleAfterSeconds": 0})):
        with pytest.raises(ValueError, match=r"capacity\.json"):
            parse_document(bad)
    assert split_configmap_ref("ns/cm") == ("ns", "cm")
    with pytest.raises(ValueError):
        split_configmap_ref("cm")
