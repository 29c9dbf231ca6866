"""The sidecar's `GET /profiles` and the `no_free_gpu` pre-check of `POST /migrations`
(capacity_gate, profiles_view), through its aiohttp app, with the capacity ConfigMap and
the ResourceQuotas served from memory as the API returns them: free/largestFree/nodes,
quotaLeft (what the pod holds is freed), current, available/why; unknown capacity (not
published, missing, unreadable, stale) never refuses; a full profile is 409 at once with
nothing recorded."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sidecar_environ import environ_factory
from test_quota_check import QuotasInMemory, quota
from test_sidecar_api_app import RecordingRunner, move

from gpushift_core.admin_settings import GpuProfile
from gpushift_core.kube import KubeError
from gpushift_sidecar.api import make_app
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.service import Sidecar
from gpushift_sidecar.token import TOKEN_FILE
from gpushift_webhook.config import WebhookConfig

GPU = "nvidia.com/gpu"
REF = "gpushift-system/gpushift-gpu-capacity"


def settings_json(capacity_configmap: str = REF) -> str:
    return WebhookConfig(
        profiles=[GpuProfile("nvidia-1", node_selector={"nvidia.com/gpu.product": "A100"}),
                  GpuProfile("nvidia-2", count=2)],
        default_profile="nvidia-1", capacity_configmap=capacity_configmap,
    ).sidecar_settings_json


def capacity(age_s: float = 0.0, **free: tuple[int, int]) -> dict[str, Any]:
    """A document published `age_s` ago (from the call: a module-level time went stale in
    a long suite): free=(total, largest) per profile."""
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
    profiles = {name: {"resource": GPU, "count": 2 if name == "nvidia-2" else 1,
                       "gpuType": "A100" if name == "nvidia-1" else None, "nodes": 2,
                       "allocatable": 8, "requested": 8 - total, "free": total,
                       "largestFree": largest}
                for name, (total, largest) in free.items()}
    return {"version": 1, "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "intervalSeconds": 30,
            "staleAfterSeconds": 390, "profiles": profiles}


class ConfigMapsInMemory:
    def __init__(self, document: dict[str, Any] | None = None,
                 error: KubeError | None = None) -> None:
        self.document, self.error = document, error
        self.read: list[tuple[str, str]] = []

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.read.append((namespace, name))
        if self.error is not None:
            raise self.error
        if self.document is None:
            return None
        return {"metadata": {"name": name}, "data": {"capacity.json": json.dumps(self.document)}}


@pytest.fixture
async def make_client(aiohttp_client, tmp_path):
    environ = environ_factory(tmp_path)
    made: list[Sidecar] = []

    async def make(config_maps, quotas=None, configmap_ref=REF, **env_kwargs):
        env = SidecarEnv.from_environ(environ(
            GPUSHIFT_SETTINGS=settings_json(configmap_ref), **env_kwargs))
        sidecar = Sidecar.create(env, RecordingRunner(), quotas=quotas or QuotasInMemory([]),
                                 capacity=config_maps)
        made.append(sidecar)
        assert sidecar.files.write_now()
        client = await aiohttp_client(make_app(sidecar))
        token = (env.runtime_dir / TOKEN_FILE).read_text().strip()
        client.session.headers["Authorization"] = f"Bearer {token}"
        return client, sidecar

    yield make
    for sidecar in made:
        await sidecar.close()


async def profiles(client) -> dict[str, Any]:
    r = await client.get("/profiles")
    assert r.status == 200, await r.text()
    return dict(await r.json())


async def test_profiles_with_free_quota_and_why(make_client):
    config_maps = ConfigMapsInMemory(capacity(**{"nvidia-1": (5, 4), "nvidia-2": (2, 1)}))
    quotas = QuotasInMemory([quota("gpu", {f"requests.{GPU}": "4"}, {f"requests.{GPU}": "1"})])
    client, _ = await make_client(config_maps, quotas)
    doc = await profiles(client)
    assert config_maps.read == [tuple(REF.split("/"))]
    assert doc["default"] == "nvidia-1" and doc["current"] is None
    assert doc["capacityNote"] is None and doc["capacityAt"].endswith("Z")
    one, two = doc["profiles"]
    assert one == {"name": "nvidia-1", "resource": GPU, "count": 1, "gpuType": "A100",
                   "free": 5, "largestFree": 4, "nodes": 2, "quotaLeft": 3,
                   "current": False, "available": True, "why": None}
    assert two["available"] is False and two["free"] == 2 and two["largestFree"] == 1
    assert two["why"] == "None of its nodes has 2 free now."


async def test_the_quota_refuses_and_the_current_profile_is_not_available(make_client):
    config_maps = ConfigMapsInMemory(capacity(**{"nvidia-1": (5, 4), "nvidia-2": (4, 4)}))
    quotas = QuotasInMemory([quota("gpu", {f"requests.{GPU}": "2"}, {f"requests.{GPU}": "1"})])
    client, _ = await make_client(config_maps, quotas, gpu=(GPU, 1))
    doc = await profiles(client)
    assert doc["current"] == "nvidia-1"
    one, two = doc["profiles"]
    assert one["current"] is True and one["available"] is False
    assert one["why"] == "This notebook runs on nvidia-1 already."
    # 2 hard, 1 used -- by this pod, which the move frees: 2 left, and nvidia-2 needs 2.
    assert two["quotaLeft"] == 2 and two["available"] is True
    quotas.quotas = [quota("gpu", {f"requests.{GPU}": "2"}, {f"requests.{GPU}": "2"})]
    two = (await profiles(client))["profiles"][1]
    assert two["quotaLeft"] == 1 and two["available"] is False
    assert two["why"].startswith("Your namespace's GPU quota does not allow it: "
                                 "ResourceQuota gpu: requests.nvidia.com/gpu used 2 of 2")


@pytest.mark.parametrize(("reader", "ref", "note"), [
    (ConfigMapsInMemory(), REF, "not published yet"),
    (ConfigMapsInMemory(error=KubeError(403, "Forbidden", "configmaps is forbidden")), REF,
     "could not be read (403 Forbidden"),
    (ConfigMapsInMemory(capacity(400, **{"nvidia-1": (0, 0)})),
     REF, "more than 390 s ago"),
    (ConfigMapsInMemory(capacity(**{"nvidia-1": (0, 0)})), "", "capacity.enabled is off"),
], ids=["missing", "forbidden", "stale", "not-published"])
async def test_unknown_capacity_is_null_says_why_and_refuses_nothing(make_client, reader, ref,
                                                                    note):
    client, sidecar = await make_client(reader, configmap_ref=ref)
    doc = await profiles(client)
    assert note in doc["capacityNote"]
    one = doc["profiles"][0]
    assert (one["free"], one["largestFree"], one["nodes"]) == (None, None, None)
    assert one["available"] is True and one["why"] is None
    assert one["gpuType"] == "A100"  # from the profile's node selector
    r = await client.post("/migrations", json=move(sidecar.env))
    assert r.status == 202, await r.text()


async def test_a_move_to_a_full_profile_is_409_no_free_gpu_and_nothing_is_recorded(
        make_client):
    client, sidecar = await make_client(ConfigMapsInMemory(
        capacity(**{"nvidia-1": (0, 0), "nvidia-2": (3, 2)})))
    r = await client.post("/migrations", json=move(sidecar.env, profile="nvidia-1"))
    assert r.status == 409
    body = await r.json()
    assert body["error"] == "no_free_gpu"
    assert body["detail"].startswith("No GPU is free for profile nvidia-1: it needs 1 "
                                     "nvidia.com/gpu on one node")
    assert body["capacity"]["largestFree"] == 0 and body["capacity"]["profile"] == "nvidia-1"
    assert sidecar.runner.started == [] and sidecar.tracker.current is None
    assert not sidecar.tracker.store.path.exists()
    r = await client.post("/migrations", json=move(sidecar.env, profile="nvidia-2"))
    assert r.status == 202, await r.text()


async def test_a_pod_holding_the_resource_is_never_refused_for_capacity(make_client):
    client, sidecar = await make_client(ConfigMapsInMemory(
        capacity(**{"nvidia-1": (0, 0), "nvidia-2": (0, 0)})), gpu=(GPU, 1))
    r = await client.post("/migrations", json=move(sidecar.env, profile="nvidia-2"))
    assert r.status == 202, await r.text()
