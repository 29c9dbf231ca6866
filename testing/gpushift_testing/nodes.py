"""The fake nodes that kwok plays: CPU nodes, and GPU nodes offering nvidia.com/gpu."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gpushift_testing.common import GPU_RESOURCE, GPU_TAINT, KWOK_NODE_ANNOTATION


@dataclass
class NodeSpec:
    name: str
    kind: str  # "cpu" or "gpu"
    cpu: str = "8"
    memory: str = "32Gi"
    gpus: int = 0


def default_nodes(cpu_nodes: int, gpu_nodes: int, gpus_per_node: int) -> list[NodeSpec]:
    nodes = [NodeSpec(f"kwok-cpu-{i}", "cpu", cpu="4", memory="16Gi") for i in range(cpu_nodes)]
    nodes += [NodeSpec(f"kwok-gpu-{i}", "gpu", gpus=gpus_per_node) for i in range(gpu_nodes)]
    return nodes


def node_body(n: NodeSpec) -> dict[str, Any]:
    """A Node object kwok will manage (selected by its annotation)."""
    key, value = KWOK_NODE_ANNOTATION
    labels = {
        "kubernetes.io/hostname": n.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        "gpushift.io/node-kind": n.kind,
    }
    capacity = {"cpu": n.cpu, "memory": n.memory, "pods": "110", "ephemeral-storage": "100Gi"}
    taints = []
    if n.gpus:
        labels["nvidia.com/gpu.present"] = "true"
        labels["nvidia.com/gpu.count"] = str(n.gpus)
        capacity[GPU_RESOURCE] = str(n.gpus)
        taints.append(dict(GPU_TAINT))
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": n.name,
            "labels": labels,
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def create_nodes(core: Any, nodes: Iterable[NodeSpec]) -> None:
    for n in nodes:
        core.create_node(node_body(n))


def nodes_ready(core: Any, nodes: Iterable[NodeSpec]) -> bool:
    """All `nodes` exist, are Ready and carry no node.kubernetes.io/* taint any more."""
    names = {n.name for n in nodes}
    ready = set()
    for node in core.list_node().items:
        conds = {c.type: c.status for c in (node.status.conditions or [])}
        taints = {t.key for t in (node.spec.taints or [])}
        if conds.get("Ready") == "True" and not any(
            t.startswith("node.kubernetes.io/") for t in taints
        ):
            ready.add(node.metadata.name)
    return names <= ready
