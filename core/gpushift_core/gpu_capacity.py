"""What is free now for each GPU profile, as the scheduler would see it (pure).

The webhook's capacity publisher (`gpushift_webhook.capacity_publisher`) lists the nodes
and the non-terminated pods on them and asks `profile_capacity` for each of the admin's
profiles; the sidecar serves the result to JupyterLab's "Move to GPU…" picker and refuses a
move to a profile whose nodes have no room (`409 no_free_gpu`).

A node can take a profile's pod when the scheduler's filters would let it, as far as the
profile decides them: the node is Ready and not `spec.unschedulable`; its labels match the
profile's `node_selector` and the required node affinity of the profile's `affinity`;
every NoSchedule and NoExecute taint is tolerated by the profile's tolerations
(Kubernetes' `ToleratesTaint`; PreferNoSchedule never filters). Its free amount is its
`status.allocatable` of the profile's resource less what the pods bound to it request
(`pod_request`: the scheduler's rule, init containers and native sidecars included).
A pod needs `count` on ONE node, hence `largest_free` besides the total.

What this cannot see, and the scheduler still judges: CPU and memory, pod (anti-)
affinity, volume zones, the notebook's own node selector. So "free" means "a GPU is free
on a node the profile allows", not a promise that the pod will fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpushift_core.admin_settings import GpuProfile
from gpushift_core.quantity import QuantityError, parse_quantity

__all__ = [
    "GPU_TYPE_LABELS",
    "ProfileCapacity",
    "node_accepts",
    "pod_request",
    "profile_capacity",
    "tolerates",
]

# Node labels that name the GPU model, by who writes them, tried in this order:
# NVIDIA's GPU feature discovery (GPU operator), AMD's node labeller, GKE, EKS.
GPU_TYPE_LABELS = (
    "nvidia.com/gpu.product",
    "amd.com/gpu.product-name",
    "cloud.google.com/gke-accelerator",
    "k8s.amazonaws.com/accelerator",
)
# Taint effects that keep a pod off a node at scheduling time.
_FILTERING_EFFECTS = ("NoSchedule", "NoExecute")


@dataclass(frozen=True)
class ProfileCapacity:
    """One profile's room on the nodes that could take it."""

    resource: str
    """The profile's extended resource, e.g. "nvidia.com/gpu"."""
    count: int
    """How many the profile's pod needs, all on one node."""
    gpu_type: str | None
    """The GPU model the nodes show (`GPU_TYPE_LABELS`), else the profile's node
    selector value for such a label; None when neither says."""
    nodes: int
    """Nodes that could take the pod and have some of the resource allocatable."""
    allocatable: int
    """Their allocatable of the resource, in total."""
    requested: int
    """What the pods bound to them request of it, in total."""
    free: int
    """Allocatable less requested, per node (never below 0), in total."""
    largest_free: int
    """The most free on one node: the profile's pod fits now only if >= count."""

    def to_json(self) -> dict[str, Any]:
        """The profile's entry of the published capacity.json (camelCase)."""
        return {"resource": self.resource, "count": self.count, "gpuType": self.gpu_type,
                "nodes": self.nodes, "allocatable": self.allocatable,
                "requested": self.requested, "free": self.free,
                "largestFree": self.largest_free}


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """Whether any toleration tolerates the taint (Kubernetes' `Toleration.ToleratesTaint`):
    an effect given must equal the taint's (empty matches every effect); a key given must
    equal the taint's (empty matches every key, with operator Exists); Exists then
    matches any value, Equal (the default) only the same value."""
    for t in tolerations:
        effect, key = str(t.get("effect") or ""), str(t.get("key") or "")
        if effect and effect != str(taint.get("effect") or ""):
            continue
        if key and key != str(taint.get("key") or ""):
            continue
        operator = str(t.get("operator") or "Equal")
        if operator == "Exists":
            return True
        if operator == "Equal" and str(t.get("value") or "") == str(taint.get("value") or ""):
            return True
    return False


def node_accepts(node: Mapping[str, Any], profile: GpuProfile) -> bool:
    """Whether the scheduler could put the profile's pod on this node, as far as the
    node's state and the profile's scheduling fields decide."""
    spec, status = node.get("spec") or {}, node.get("status") or {}
    if spec.get("unschedulable"):
        return False
    if not any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or []):
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in profile.node_selector.items()):
        return False
    if not _required_affinity_matches(node, profile.affinity):
        return False
    return all(tolerates(profile.tolerations, taint) for taint in spec.get("taints") or []
               if taint.get("effect") in _FILTERING_EFFECTS)


def pod_request(pod: Mapping[str, Any], resource: str) -> int:
    """What the pod requests of `resource`, as the scheduler counts it: each container's
    request (its limit when it has no request, as the API server defaults extended
    resources); the regular containers and native sidecars (init containers with
    restartPolicy Always) add up; a plain init container runs alone, beside the sidecars
    started before it, so the pod needs the most of those moments and of the steady
    state."""
    spec = pod.get("spec") or {}
    sidecars = 0
    init_peak = 0
    for container in spec.get("initContainers") or []:
        amount = _container_request(container, resource)
        if container.get("restartPolicy") == "Always":
            sidecars += amount
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, sidecars + amount)
    steady = sum(_container_request(c, resource) for c in spec.get("containers") or [])
    return max(steady + sidecars, init_peak)


def profile_capacity(profile: GpuProfile, nodes: Sequence[Mapping[str, Any]],
                     pods: Iterable[Mapping[str, Any]]) -> ProfileCapacity:
    """The profile's room: `nodes` as listed, `pods` the non-terminated pods (any node;
    those bound to other nodes, or to none, are ignored)."""
    resource = profile.resource
    allocatable: dict[str, int] = {}
    takers: list[Mapping[str, Any]] = []
    for node in nodes:
        amount = _whole(((node.get("status") or {}).get("allocatable") or {}).get(resource))
        name = str((node.get("metadata") or {}).get("name") or "")
        if amount > 0 and name and node_accepts(node, profile):
            allocatable[name] = amount
            takers.append(node)
    requested = dict.fromkeys(allocatable, 0)
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name in requested and (pod.get("status") or {}).get("phase") not in (
                "Succeeded", "Failed"):
            requested[node_name] += pod_request(pod, resource)
    free = {name: max(0, allocatable[name] - requested[name]) for name in allocatable}
    return ProfileCapacity(
        resource=resource, count=profile.count, gpu_type=_gpu_type(takers, profile),
        nodes=len(allocatable), allocatable=sum(allocatable.values()),
        requested=sum(requested.values()), free=sum(free.values()),
        largest_free=max(free.values(), default=0))


def _container_request(container: Mapping[str, Any], resource: str) -> int:
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    return _whole(requests[resource] if resource in requests else limits.get(resource))


def _whole(value: object) -> int:
    """A quantity of an extended resource (the API admits whole numbers only); 0 when
    absent or unreadable."""
    if value is None:
        return 0
    try:
        number = parse_quantity(value)
    except QuantityError:
        return 0
    return max(0, int(number))


def _gpu_type(nodes: Sequence[Mapping[str, Any]], profile: GpuProfile) -> str | None:
    for label in GPU_TYPE_LABELS:
        values = {((n.get("metadata") or {}).get("labels") or {}).get(label) for n in nodes}
        if nodes and len(values) == 1 and None not in values and "" not in values:
            return str(values.pop())
    return next((profile.node_selector[label] for label in GPU_TYPE_LABELS
                 if profile.node_selector.get(label)), None)


def _required_affinity_matches(node: Mapping[str, Any], affinity: Mapping[str, Any]) -> bool:
    """The profile's requiredDuringSchedulingIgnoredDuringExecution node affinity: any
    term matches (terms are ORed; within a term every expression must hold)."""
    required = ((affinity.get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    fields = {"metadata.name": meta.get("name")}
    return any(
        (term.get("matchExpressions") or term.get("matchFields"))
        and all(_expression_holds(labels, e) for e in term.get("matchExpressions") or [])
        and all(_expression_holds(fields, e) for e in term.get("matchFields") or [])
        for term in terms)


def _expression_holds(labels: Mapping[str, Any], expression: Mapping[str, Any]) -> bool:
    key, op = str(expression.get("key") or ""), str(expression.get("operator") or "")
    values = [str(v) for v in expression.get("values") or []]
    present, value = key in labels, labels.get(key)
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            mine, theirs = int(str(value)), int(values[0])
        except ValueError:
            return False
        return mine > theirs if op == "Gt" else mine < theirs
    return False
