"""Which of the admin's GPU profiles a pod runs on, read from its spec (pure).

Two profiles may ask for the same GPU resource and count and differ only in where they
schedule (an A100 node pool and a T4 one, by node selector and tolerations). The GPU a
pod holds does not tell them apart; the scheduling fields a move put on its spec do. The
webhook reads them at admission and passes the name to the sidecar
(`GPUSHIFT_GPU_PROFILE`), which then knows "already on this profile" exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gpushift_core.admin_settings import GpuFacts, GpuProfile
from gpushift_core.quantity import QuantityError, parse_quantity
from gpushift_core.spec_editor import same_toleration

__all__ = ["profile_of_pod"]


def profile_of_pod(pod_spec: Mapping[str, Any], gpu: GpuFacts | None,
                   profiles: Sequence[GpuProfile]) -> str:
    """The name of the profile whose GPU the pod holds and whose node selector entries,
    tolerations, runtime class, affinity and CPU/memory its spec carries — the most
    specific one when several fit; "" when none does (a notebook created on a GPU by
    hand, or a profile changed since)."""
    if gpu is None:
        return ""
    selector = pod_spec.get("nodeSelector")
    selector = selector if isinstance(selector, Mapping) else {}
    tolerations = pod_spec.get("tolerations")
    tolerations = tolerations if isinstance(tolerations, list) else []
    runtime_class = pod_spec.get("runtimeClassName")
    resources = _gpu_container_resources(pod_spec, gpu)
    fitting = [
        p for p in profiles
        if (p.resource, p.count) == (gpu.resource, gpu.count)
        and all(selector.get(k) == v for k, v in p.node_selector.items())
        and all(any(same_toleration(t, wanted) for t in tolerations)
                for wanted in p.tolerations)
        and (not p.runtime_class_name or p.runtime_class_name == runtime_class)
        and (not p.affinity or p.affinity == pod_spec.get("affinity"))
        and all(_same_quantity(resources.get(section), name, value)
                for section, values in p.resources.items()
                for name, value in values.items())
    ]
    if not fitting:
        return ""
    best = max(fitting, key=_specificity)
    return best.name


def _gpu_container_resources(pod_spec: Mapping[str, Any], gpu: GpuFacts,
                             ) -> Mapping[str, Any]:
    """`resources` of the container that holds the GPU ({} when none does)."""
    containers = pod_spec.get("containers")
    for c in containers if isinstance(containers, list) else []:
        resources = c.get("resources") if isinstance(c, Mapping) else None
        limits = resources.get("limits") if isinstance(resources, Mapping) else None
        if isinstance(limits, Mapping) and gpu.resource in limits:
            return resources  # type: ignore[return-value]
    return {}


def _same_quantity(section: Any, name: str, wanted: str) -> bool:
    """Whether the section holds `wanted` of `name` ("0.5" and "500m" are the same)."""
    if not isinstance(section, Mapping) or name not in section:
        return False
    try:
        return parse_quantity(section[name]) == parse_quantity(wanted)
    except QuantityError:
        return False


def _specificity(profile: GpuProfile) -> int:
    return (len(profile.node_selector) + len(profile.tolerations)
            + (1 if profile.runtime_class_name else 0) + (1 if profile.affinity else 0)
            + sum(len(values) for values in profile.resources.values()))
