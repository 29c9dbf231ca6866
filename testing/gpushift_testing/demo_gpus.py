"""The demo's two kinds of GPU, so that "Move to GPU…" has a choice: the control
plane's GPU node `kwok-gpu-0` is labelled as an A100, and a second node `kwok-gpu-t4-0`
plays a T4 pool behind a taint only the demo's second profile, `nvidia-t4`, tolerates
(so the default profile's pods never land there, and a pod that takes the A100 leaves
the default profile with nothing free, as the rollback test wants). The admin's default
profile stays the chart's `nvidia-1`.
"""

from __future__ import annotations

from typing import Any

from gpushift_testing.common import GPU_RESOURCE
from gpushift_testing.nodes import NodeSpec, node_body, nodes_ready

PRODUCT_LABEL = "nvidia.com/gpu.product"  # what NVIDIA's GPU feature discovery sets
A100_NODE, A100 = "kwok-gpu-0", "NVIDIA-A100-SXM4-40GB"
T4_NODE, T4 = "kwok-gpu-t4-0", "Tesla-T4"
T4_TAINT = {"key": "gpushift.io/gpu-pool", "value": "t4", "effect": "NoSchedule"}
T4_PROFILE: dict[str, Any] = {
    "name": "nvidia-t4", "resource": GPU_RESOURCE, "count": 1,
    "node_selector": {PRODUCT_LABEL: T4},
    "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
                    {"key": T4_TAINT["key"], "operator": "Equal", "value": T4_TAINT["value"],
                     "effect": "NoSchedule"}],
}


def add_gpu_pools(core: Any) -> None:
    """Label the A100 node and create the T4 node (`gpu_pools_ready`: it is Ready)."""
    core.patch_node(A100_NODE, {"metadata": {"labels": {PRODUCT_LABEL: A100}}})
    body = node_body(NodeSpec(T4_NODE, "gpu", gpus=1))
    body["metadata"]["labels"][PRODUCT_LABEL] = T4
    body["spec"]["taints"].append(dict(T4_TAINT))
    core.create_node(body)


def gpu_pools_ready(core: Any) -> bool:
    return bool(nodes_ready(core, [NodeSpec(T4_NODE, "gpu")]))


def with_t4_profile(config: dict[str, Any]) -> dict[str, Any]:
    """The chart's `config` with the demo's T4 profile after its own profiles."""
    profiles = [p for p in config.get("profiles") or [] if p.get("name") != T4_PROFILE["name"]]
    return {**config, "profiles": [*profiles, T4_PROFILE]}
