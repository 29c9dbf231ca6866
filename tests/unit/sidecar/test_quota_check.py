"""The ResourceQuota pre-check of a move to GPU: the decision table (quota_check, pure),
and the sidecar's API with it (quota_gate): a move over a quota is 409 at once with the
quota's numbers and nothing is recorded; a move to CPU, an unreadable quota or one that
does not answer in time do not block."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from sidecar_environ import environ_factory
from test_sidecar_api_app import RecordingRunner, move

from gpushift_core.kube import KubeError
from gpushift_sidecar.api import make_app
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.quota_check import applies_to_gpu_pod, check_quotas, parse_quantity
from gpushift_sidecar.service import Sidecar
from gpushift_sidecar.token import TOKEN_FILE

GPU = "nvidia.com/gpu"


def quota(name: str, hard: dict[str, str], used: dict[str, str] | None = None,
          scopes: list[str] | None = None,
          selector: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"hard": hard}
    if scopes is not None:
        spec["scopes"] = scopes
    if selector is not None:
        spec["scopeSelector"] = {"matchExpressions": selector}
    status = {} if used is None else {"hard": hard, "used": used}
    return {"metadata": {"name": name, "namespace": "kubeflow-user"}, "spec": spec,
            "status": status}


# ----------------------------------------------------------------------------- the table


@pytest.mark.parametrize(("quotas", "count", "held", "refused"), [
    ([], 1, 0, None),
    ([quota("gpu-quota", {f"requests.{GPU}": "0"}, {f"requests.{GPU}": "0"})], 1, 0,
     "ResourceQuota gpu-quota: requests.nvidia.com/gpu used 0 of 0, the move needs 1"),
    ([quota("gpu-quota", {f"requests.{GPU}": "0"})], 1, 0,  # not counted yet: used 0
     "ResourceQuota gpu-quota: requests.nvidia.com/gpu used 0 of 0, the move needs 1"),
    ([quota("q", {f"requests.{GPU}": "2"}, {f"requests.{GPU}": "1"})], 1, 0, None),
    ([quota("q", {f"requests.{GPU}": "2"}, {f"requests.{GPU}": "1"})], 2, 0,
     "ResourceQuota q: requests.nvidia.com/gpu used 1 of 2, the move needs 2"),
    ([quota("q", {f"limits.{GPU}": "4"}, {f"limits.{GPU}": "4"})], 1, 0,
     "ResourceQuota q: limits.nvidia.com/gpu used 4 of 4, the move needs 1"),
    ([quota("q", {GPU: "1"}, {GPU: "1"})], 1, 0,
     "ResourceQuota q: nvidia.com/gpu used 1 of 1, the move needs 1"),
    # 1 -> 2 GPUs: the pod's own GPU is freed by the move, only one more is needed
    ([quota("q", {f"requests.{GPU}": "2"}, {f"requests.{GPU}": "1"})], 2, 1, None),
    ([quota("q", {f"requests.{GPU}": "2"}, {f"requests.{GPU}": "2"})], 2, 2, None),
    # what the pre-check does not judge: other resources, another GPU resource
    ([quota("mem", {"limits.memory": "1Gi", "count/pods": "0"},
            {"limits.memory": "1Gi", "count/pods": "0"})], 1, 0, None),
    ([quota("amd", {"requests.amd.com/gpu": "0"})], 1, 0, None),
    # an unreadable number is the apiserver's to judge
    ([quota("odd", {f"requests.{GPU}": "lots"})], 1, 0, None),
    # the first over the limit, by name
    ([quota("b", {f"requests.{GPU}": "0"}), quota("a", {f"requests.{GPU}": "1k"}),
      quota("c", {f"requests.{GPU}": "0"})], 1, 0,
     "ResourceQuota b: requests.nvidia.com/gpu used 0 of 0, the move needs 1"),
])
def test_the_quota_decision_table(quotas, count, held, refused):
    found = check_quotas(quotas, GPU, count, held=held)
    assert (None if found is None else found.message) == refused


@pytest.mark.parametrize(("scopes", "selector", "applies"), [
    (None, None, True),
    (["NotTerminating"], None, True),
    (["NotBestEffort", "NotTerminating"], None, True),
    (["Terminating"], None, False),
    (["BestEffort"], None, False),
    (None, [{"scopeName": "NotBestEffort", "operator": "Exists"}], True),
    (None, [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}], False),
    (None, [{"scopeName": "CrossNamespacePodAffinity", "operator": "Exists"}], False),
])
def test_only_quotas_whose_scopes_match_a_gpu_notebook_pod_apply(scopes, selector, applies):
    q = quota("q", {f"requests.{GPU}": "0"}, scopes=scopes, selector=selector)
    assert applies_to_gpu_pod(q) is applies
    assert (check_quotas([q], GPU, 1) is not None) is applies


@pytest.mark.parametrize(("text", "value"), [
    ("1", Decimal(1)), ("0", Decimal(0)), ("500m", Decimal("0.5")), ("2Gi", Decimal(2**31)),
    ("1k", Decimal(1000)), ("1e3", Decimal(1000)), ("1.5", Decimal("1.5")),
])
def test_quantities(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "x", "1Q", "inf", "NaN"])
def test_not_quantities(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_the_refusal_as_json():
    found = check_quotas([quota("gpu-quota", {f"requests.{GPU}": "0"})], GPU, 1)
    assert found is not None
    assert found.to_json() == {"name": "gpu-quota", "key": "requests.nvidia.com/gpu",
                               "used": "0", "hard": "0", "needs": 1}


# ----------------------------------------------------------------------------- the API


class QuotasInMemory:
    """The namespace's ResourceQuotas as the API lists them; or its refusal, or silence."""

    def __init__(self, quotas: list[dict[str, Any]], error: KubeError | None = None,
                 hang: bool = False) -> None:
        self.quotas, self.error, self.hang = quotas, error, hang
        self.listed: list[str] = []

    async def list_resource_quotas(self, namespace: str) -> list[dict[str, Any]]:
        self.listed.append(namespace)
        if self.hang:
            await asyncio.sleep(3600)
        if self.error is not None:
            raise self.error
        return self.quotas


@pytest.fixture
async def make_client(aiohttp_client, tmp_path):
    environ = environ_factory(tmp_path)
    made: list[Sidecar] = []

    async def make(reader, timeout=5.0, **env_kwargs):
        env = SidecarEnv.from_environ(environ(**env_kwargs))
        sidecar = Sidecar.create(env, RecordingRunner(), quotas=reader)
        made.append(sidecar)
        sidecar.quotas.timeout_seconds = timeout
        assert sidecar.files.write_now()
        client = await aiohttp_client(make_app(sidecar))
        token = (env.runtime_dir / TOKEN_FILE).read_text().strip()
        client.session.headers["Authorization"] = f"Bearer {token}"
        return client, sidecar

    yield make
    for sidecar in made:  # as the served sidecar ends
        await sidecar.close()


async def test_a_move_over_the_quota_is_409_at_once_and_nothing_is_recorded(make_client):
    reader = QuotasInMemory([quota("gpu-quota", {f"requests.{GPU}": "0"},
                                   {f"requests.{GPU}": "0"})])
    client, sidecar = await make_client(reader)
    r = await client.post("/migrations", json=move(sidecar.env))
    assert r.status == 409
    body = await r.json()
    assert body["error"] == "quota_exceeded"
    assert body["detail"] == ("ResourceQuota gpu-quota: requests.nvidia.com/gpu used 0 of "
                              "0, the move needs 1")
    assert body["quota"] == {"name": "gpu-quota", "key": "requests.nvidia.com/gpu",
                             "used": "0", "hard": "0", "needs": 1}
    assert reader.listed == ["kubeflow-user"]
    assert sidecar.runner.started == [] and sidecar.tracker.current is None
    assert not sidecar.tracker.store.path.exists()
    assert (await client.get("/migrations/current")).status == 404


async def test_the_second_profile_is_checked_with_its_own_count(make_client):
    reader = QuotasInMemory([quota("gpu-quota", {f"requests.{GPU}": "1"})])
    client, sidecar = await make_client(reader)
    r = await client.post("/migrations", json=move(sidecar.env, profile="nvidia-2"))
    assert r.status == 409 and (await r.json())["quota"]["needs"] == 2
    r = await client.post("/migrations", json=move(sidecar.env, profile="nvidia-1"))
    assert r.status == 202, await r.text()


async def test_a_move_to_cpu_is_not_checked(make_client):
    reader = QuotasInMemory([quota("gpu-quota", {f"requests.{GPU}": "0"})])
    client, sidecar = await make_client(reader, gpu=(GPU, 1))
    r = await client.post("/migrations", json=move(sidecar.env, target="cpu"))
    assert r.status == 202, await r.text()
    assert reader.listed == []


@pytest.mark.parametrize("reader", [
    QuotasInMemory([], error=KubeError(403, "Forbidden", "resourcequotas is forbidden")),
    QuotasInMemory([], error=KubeError(0, "Unreachable", "the API did not answer")),
    QuotasInMemory([], hang=True),
], ids=["forbidden", "unreachable", "no-answer"])
async def test_quotas_that_cannot_be_read_do_not_block_the_move(make_client, reader, caplog):
    client, sidecar = await make_client(reader, timeout=0.2)
    r = await client.post("/migrations", json=move(sidecar.env))
    assert r.status == 202, await r.text()
    assert [m.id for m in sidecar.runner.started] == [(await r.json())["id"]]
    assert "ResourceQuotas not read" in caplog.text


async def test_a_migration_in_flight_is_reported_before_any_quota(make_client):
    reader = QuotasInMemory([])
    client, sidecar = await make_client(reader)
    assert (await client.post("/migrations", json=move(sidecar.env))).status == 202
    reader.quotas = [quota("gpu-quota", {f"requests.{GPU}": "0"})]
    r = await client.post("/migrations", json=move(sidecar.env))
    assert r.status == 409 and (await r.json())["error"] == "migration_in_flight"
    assert json.loads(sidecar.tracker.store.path.read_text())["phase"] == "requested"
