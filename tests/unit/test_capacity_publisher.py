"""The GPU capacity publisher's writes (gpushift_webhook.capacity_publisher), with the
API's objects in memory and its clock set by the test: created once, not written while
nothing changes, written when a pod comes or goes, written again when its `at` is older
than the refresh period; a new leader finds its predecessor's current document and does
not write it again; a stale resourceVersion loses (409); standing by forgets what it
wrote."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import pytest

from gpushift_core.admin_settings import GpuProfile
from gpushift_core.kube import KubeError
from gpushift_webhook.capacity_publisher import CapacityPublisher, CapacitySettings, passes
from gpushift_webhook.metrics import WebhookMetrics
from gpushift_webhook.supervisor import LoopHealth, LoopSettings

GPU = "nvidia.com/gpu"
T0 = dt.datetime(2026, 12, 4, 21, 0, tzinfo=dt.UTC)
SETTINGS = CapacitySettings(namespace="gpushift-system", name="gpushift-gpu-capacity",
                            interval_seconds=30, refresh_seconds=300)


class ClusterInMemory:
    def __init__(self) -> None:
        self.nodes = [{"metadata": {"name": "g0"}, "spec": {},
                       "status": {"allocatable": {GPU: "2"},
                                  "conditions": [{"type": "Ready", "status": "True"}]}},
                      {"metadata": {"name": "cpu"}, "spec": {},
                       "status": {"allocatable": {"cpu": "4"},
                                  "conditions": [{"type": "Ready", "status": "True"}]}}]
        self.pods: list[dict[str, Any]] = []
        self.config_map: dict[str, Any] | None = None
        self.writes = 0
        self.version = 0
        self.read_override: dict[str, Any] | None = None

    async def list_nodes(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.nodes)

    async def list_bound_pods(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods)

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.read_override or self.config_map)

    async def create_config_map(self, namespace: str,
                                body: Mapping[str, Any]) -> dict[str, Any]:
        if self.config_map is not None:
            raise KubeError(409, "AlreadyExists", "configmaps exists")
        return self._store(body)

    async def replace_config_map(self, namespace: str, name: str,
                                 body: Mapping[str, Any]) -> dict[str, Any]:
        assert self.config_map is not None
        if body["metadata"].get("resourceVersion") != self.config_map["metadata"][
                "resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        return self._store(body)

    def _store(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.writes += 1
        self.config_map = copy.deepcopy(dict(body))
        self.config_map["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.config_map)

    def document(self) -> dict[str, Any]:
        assert self.config_map is not None
        return dict(json.loads(self.config_map["data"]["capacity.json"]))


def gpu_pod(gpus: int) -> dict[str, Any]:
    return {"spec": {"nodeName": "g0", "containers": [
        {"resources": {"limits": {GPU: str(gpus)}}}]}, "status": {"phase": "Running"}}


async def test_written_when_it_changes_and_refreshed_every_five_minutes() -> None:
    cluster = ClusterInMemory()
    now = [T0]
    metrics = WebhookMetrics()
    publisher = CapacityPublisher(cluster, [GpuProfile("nvidia-1")], SETTINGS, metrics,
                                  now=lambda: now[0])
    assert await publisher.publish_once() is True
    assert cluster.document()["profiles"]["nvidia-1"]["free"] == 2
    assert cluster.document()["at"] == "2026-12-04T21:00:00Z"
    for seconds in (30, 60, 299):
        now[0] = T0 + dt.timedelta(seconds=seconds)
        assert await publisher.publish_once() is False
    assert cluster.writes == 1
    cluster.pods.append(gpu_pod(1))
    assert await publisher.publish_once() is True
    assert cluster.document()["profiles"]["nvidia-1"]["free"] == 1
    written = now[0]
    now[0] = written + dt.timedelta(seconds=300)
    assert await publisher.publish_once() is True  # the same, but `at` refreshed
    assert cluster.document()["at"] == now[0].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cluster.writes == 3
    sample = metrics.registry.get_sample_value
    assert sample("gpushift_webhook_capacity_writes_total") == 3
    assert sample("gpushift_webhook_capacity_free_gpus", {"profile": "nvidia-1"}) == 1


async def test_a_new_leader_adopts_a_current_document_and_a_stale_write_loses() -> None:
    cluster = ClusterInMemory()
    first = CapacityPublisher(cluster, [GpuProfile("nvidia-1")], SETTINGS, now=lambda: T0)
    assert await first.publish_once() is True
    later = T0 + dt.timedelta(seconds=60)
    second = CapacityPublisher(cluster, [GpuProfile("nvidia-1")], SETTINGS,
                               now=lambda: later)
    assert await second.publish_once() is False and cluster.writes == 1
    # A former leader that read the ConfigMap before the new one wrote: its replace
    # carries the old resourceVersion and loses.
    before = copy.deepcopy(cluster.config_map)
    cluster.pods.append(gpu_pod(2))
    assert await second.publish_once() is True
    cluster.read_override = before
    cluster.pods.append(gpu_pod(1))
    with pytest.raises(KubeError) as raised:
        await first.publish_once()
    assert raised.value.conflict and cluster.writes == 2


async def test_a_standby_passes_and_forgets_what_it_wrote() -> None:
    cluster = ClusterInMemory()
    publisher = CapacityPublisher(cluster, [GpuProfile("nvidia-1")],
                                  CapacitySettings("ns", "cm", interval_seconds=0.01,
                                                   refresh_seconds=300))
    publisher.published = {"stale": True}
    health = LoopHealth(LoopSettings("capacity", 10), clock=lambda: 0.0, metrics=None)
    task = asyncio.create_task(passes(publisher, lambda: False, health))
    async with asyncio.timeout(10):  # a pass, however busy the machine
        while health.passes < 2:
            await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert health.passes >= 1 and publisher.published is None and cluster.writes == 0
