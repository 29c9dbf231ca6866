"""What is free per GPU profile, end to end on the real control plane: the real
`gpushift-webhook serve --guard --capacity` process (the chart's webhook RBAC only, a
token of its ServiceAccount) publishes ConfigMap `<fullname>-gpu-capacity`; the real
`gpushift-sidecar serve` process of a CPU notebook pod (Kubeflow's default-editor token,
which reads that ConfigMap through the chart's reader RoleBinding for
system:serviceaccounts) serves `GET /profiles` and refuses `POST /migrations` to the full
profile with 409 `no_free_gpu`, nothing patched.

Two pools of kwok GPU nodes of this test's own, each behind a taint only its profile
tolerates (no other test's pod lands there): pool A, one node with 2 GPUs free; pool B,
one node with 1 GPU, taken by a pod that requests it. The session's own GPU node matches
neither profile's node selector.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_sidecar_migration as mig
from gpushift_testing.controlplane import GPU_RESOURCE, ControlPlane
from gpushift_testing.kishu_files import kishu_db
from gpushift_testing.kube import wait_for
from gpushift_testing.nodes import NodeSpec, node_body, nodes_ready
from gpushift_testing.sidecar_process import PodFacts, SidecarProcess
from gpushift_testing.workloads import wait_running
from guard_processes import Guards, running_guards

from gpushift_core.admin_settings import GpuProfile
from gpushift_webhook.config import WebhookConfig

notebook = mig.notebook

RELEASE = "capacitytest"  # its own cluster-scoped RBAC
POOL_LABEL = "gpushift.io/test-capacity-pool"
PRODUCT = "nvidia.com/gpu.product"
RUN = uuid.uuid4().hex[:6]
POOL_TAINT = f"gpushift.io/capacity-test-{RUN}"


def profile(pool: str) -> GpuProfile:
    return GpuProfile(
        name=f"pool-{pool}", resource=GPU_RESOURCE, count=1,
        node_selector={POOL_LABEL: f"{pool}-{RUN}"},
        tolerations=[{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
                     {"key": POOL_TAINT, "operator": "Exists"}])


PROFILES = [profile("a"), profile("b")]


def pool_node(pool: str, gpus: int) -> dict[str, Any]:
    body = node_body(NodeSpec(f"kwok-capacity-{pool}-{RUN}", "gpu", gpus=gpus))
    # Not "gpu": helpers of other tests that take every GPU node must not see these.
    body["metadata"]["labels"].update({POOL_LABEL: f"{pool}-{RUN}", PRODUCT: f"TEST-{pool}",
                                       "gpushift.io/node-kind": "gpu-capacity-test"})
    body["spec"]["taints"].append({"key": POOL_TAINT, "value": "x", "effect": "NoSchedule"})
    return body


@pytest.fixture
def pools(admin: Any) -> Iterator[dict[str, str]]:
    """Pool A (2 GPUs) and pool B (1 GPU), Ready; deleted afterwards."""
    nodes = {"a": pool_node("a", 2), "b": pool_node("b", 1)}
    for body in nodes.values():
        admin.core.create_node(body)
    names = {pool: body["metadata"]["name"] for pool, body in nodes.items()}
    try:
        wait_for("the pool nodes Ready", lambda: nodes_ready(
            admin.core, [NodeSpec(n, "gpu") for n in names.values()]), 60)
        yield names
    finally:
        for name in names.values():
            try:
                admin.core.delete_node(name)
            except Exception as exc:
                assert getattr(exc, "status", None) == 404, exc


@pytest.fixture
def publisher(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Guards]:
    """The webhook process with the guard and the capacity publisher (every second)."""
    with running_guards(control_plane, tmp_path / "webhook", ("webhook-0",), release=RELEASE,
                        lease=f"{RELEASE}-gpushift-guard",
                        namespace_prefix="gpushift-capacity", ready_timeout=300,
                        image_map=[{"cpu": mig.CPU_IMAGE, "cuda": mig.CUDA_IMAGE}],
                        lease_duration=6, renew=2,
                        config_extra={"profiles": [p.to_json() for p in PROFILES],
                                      "default_profile": "pool-a"},
                        capacity_interval=1) as guards:
        yield guards


@pytest.fixture
def sidecar_settings(publisher: Guards) -> WebhookConfig:
    """The settings the webhook hands the sidecar: the profiles, and where the capacity is."""
    return WebhookConfig(profiles=PROFILES, default_profile="pool-a",
                         image_map=mig.patching.IMAGE_MAP,
                         capacity_configmap=publisher.capacity_configmap)


def published(admin: Any, ref: str) -> dict[str, Any] | None:
    namespace, name = ref.split("/")
    try:
        cm = admin.core.read_namespaced_config_map(name, namespace)
    except Exception as exc:
        assert getattr(exc, "status", None) == 404, exc
        return None
    return {"resourceVersion": cm.metadata.resource_version,
            **json.loads((cm.data or {}).get("capacity.json") or "{}")}


def occupy(admin: Any, namespace: str, node: str, gpus: int) -> str:
    name = f"blocker-{node}"
    admin.core.create_namespaced_pod(namespace, {
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                 "tolerations": PROFILES[0].tolerations,
                 "containers": [{"name": "train", "image": "busybox", "resources": {
                     "requests": {GPU_RESOURCE: str(gpus)},
                     "limits": {GPU_RESOURCE: str(gpus)}}}]}})
    wait_running(admin.core, namespace, name, timeout=60)
    return name


async def test_published_capacity_profiles_and_no_free_gpu(
        admin: Any, namespace: str, notebook: Any, tmp_path: Path, pools: dict[str, str],
        publisher: Guards, start_sidecar: Callable[..., SidecarProcess]) -> None:
    blocker = occupy(admin, namespace, pools["b"], 1)
    admin.core.create_namespaced_resource_quota(namespace, {
        "metadata": {"name": "gpu-quota"}, "spec": {"hard": {f"requests.{GPU_RESOURCE}": "3"}}})
    wait_for("the quota counted", lambda: (admin.core.read_namespaced_resource_quota(
        "gpu-quota", namespace).status.used or {}).get(f"requests.{GPU_RESOURCE}") == "1", 30)
    proc = publisher.procs["webhook-0"]
    ref = publisher.capacity_configmap

    def as_expected() -> dict[str, Any] | None:
        doc = published(admin, ref)
        ok = doc and doc["profiles"]["pool-b"]["free"] == 0 and \
            doc["profiles"]["pool-a"]["free"] == 2
        return doc if ok else None

    t0 = time.monotonic()
    doc = wait_for("the capacity published", as_expected, 60, interval=0.2,
                   describe=lambda: (published(admin, ref), proc.log.read_text()[-3000:]))
    print(f"\npublished within {time.monotonic() - t0:.1f} s of the pools being full")
    assert doc["version"] == 1 and doc["intervalSeconds"] == 1
    assert doc["profiles"]["pool-a"] == {
        "resource": GPU_RESOURCE, "count": 1, "gpuType": "TEST-a", "nodes": 1,
        "allocatable": 2, "requested": 0, "free": 2, "largestFree": 2}
    assert doc["profiles"]["pool-b"] == {
        "resource": GPU_RESOURCE, "count": 1, "gpuType": "TEST-b", "nodes": 1,
        "allocatable": 1, "requested": 1, "free": 0, "largestFree": 0}

    # Written only when it changes: three more passes, the same object.
    time.sleep(3.5)
    assert published(admin, ref)["resourceVersion"] == doc["resourceVersion"]

    created = notebook("nb")
    workspace = tmp_path / "nb-workspace"
    train = workspace / "work" / "train.ipynb"
    kishu_db(train, "c-1", workspace=workspace)
    cpu_pod = wait_running(admin.core, namespace, "nb-0")
    sidecar = start_sidecar(PodFacts.of(cpu_pod), workspace, "run-1")

    status, answer = sidecar.request("GET", "/profiles")
    assert status == 200, answer
    assert answer["default"] == "pool-a" and answer["current"] is None
    assert answer["capacityNote"] is None and answer["capacityAt"] == doc["at"]
    a, b = answer["profiles"]
    # The quota: 3, less the blocker's GPU (it runs in this namespace).
    assert a == {"name": "pool-a", "resource": GPU_RESOURCE, "count": 1, "gpuType": "TEST-a",
                 "free": 2, "largestFree": 2, "nodes": 1, "quotaLeft": 2, "current": False,
                 "available": True, "why": None}
    assert (b["name"], b["free"], b["largestFree"], b["nodes"], b["quotaLeft"]) == (
        "pool-b", 0, 0, 1, 2)
    assert b["available"] is False and b["why"] == "None of its nodes has 1 free now."

    before = mig.read_notebook(admin, namespace)
    t0 = time.monotonic()
    status, body = sidecar.request("POST", "/migrations", {
        "target": "gpu", "reason": "manual", "profile": "pool-b",
        "checkpoint": {"notebook_path": str(train), "commit_id": "c-1"}})
    answered_s = time.monotonic() - t0
    assert status == 409, body
    assert body["error"] == "no_free_gpu", body
    assert body["detail"].startswith("No GPU is free for profile pool-b: it needs 1 "), body
    assert body["capacity"]["profile"] == "pool-b" and body["capacity"]["largestFree"] == 0
    print(f"refused in {answered_s * 1000:.0f} ms")  # at once: no move was recorded
    assert sidecar.request("GET", "/migrations/current")[0] == 404
    time.sleep(1)  # a patch, had one been sent, would show now
    after = mig.read_notebook(admin, namespace)
    assert after["spec"] == created["spec"] == before["spec"]
    assert after["metadata"]["annotations"] == created["metadata"]["annotations"]
    assert admin.core.read_namespaced_pod("nb-0", namespace).metadata.uid == cpu_pod.metadata.uid

    # The blocker ends: pool B's GPU is free again, published and served.
    admin.core.delete_namespaced_pod(blocker, namespace, grace_period_seconds=0)
    wait_for("pool B free again", lambda: (d := published(admin, ref)) and
             d["profiles"]["pool-b"]["free"] == 1, 60, interval=0.2)
    b = sidecar.request("GET", "/profiles")[1]["profiles"][1]
    assert (b["free"], b["largestFree"], b["available"], b["why"]) == (1, 1, True, None)
    mig.no_traceback(sidecar)
    assert "Traceback" not in proc.log.read_text()
    assert any(line.get("msg") == "GPU capacity published" for line in proc.lines())
