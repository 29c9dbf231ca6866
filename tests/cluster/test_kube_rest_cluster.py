"""Every route of `gpushift_core.kube.rest` against the real kube-apiserver: the cluster
side's one client calls the API with plain JSON, not the official client's typed APIs,
so each path, query parameter and content type is checked here by the API server
itself (a wrong path answers 404, a wrong query parameter or content type 400/415)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from gpushift_core.kube import NOTEBOOK_API, KubeApi, KubeError
from gpushift_core.kube.rest import ADMISSION_V1, COORDINATION_V1, CORE_V1, CUSTOM_OBJECTS


@pytest.fixture
def api(control_plane: Any) -> Iterator[KubeApi]:
    kube = KubeApi.connect(str(control_plane.kubeconfig), component="gpushift-test")
    yield kube
    kube.close()


def _secret(namespace: str, value: str, resource_version: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "s", "namespace": namespace}
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta,
            "data": {"k": base64.b64encode(value.encode()).decode()}}


async def test_every_route_against_the_api_server(api: KubeApi, namespace: str,
                                                  admin: Any) -> None:
    called: set[str] = set()

    def route(group: Any, name: str) -> Any:
        called.add(name)
        return getattr(group, name)

    core = api.core_v1
    # Secrets: create, read, replace (guarded by the version read), delete.
    created = await api.write_json(route(core, "create_namespaced_secret"), namespace,
                                   _secret(namespace, "one"))
    read = await api.read_json(route(core, "read_namespaced_secret"), "s", namespace)
    assert read["metadata"]["uid"] == created["metadata"]["uid"]
    stale = read["metadata"]["resourceVersion"]
    await api.write_json(route(core, "replace_namespaced_secret"), "s", namespace,
                         _secret(namespace, "two", stale))
    with pytest.raises(KubeError) as conflict:  # the same version again: 409 Conflict
        await api.write_json(core.replace_namespaced_secret, "s", namespace,
                             _secret(namespace, "three", stale))
    assert conflict.value.conflict and conflict.value.reason == "Conflict"
    await api.call(route(core, "delete_namespaced_secret"), "s", namespace, write=True)
    with pytest.raises(KubeError) as missing:
        await api.read_json(core.read_namespaced_secret, "s", namespace)
    assert missing.value.not_found and missing.value.reason == "NotFound"

    # ConfigMaps through the capacity calls.
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": namespace}, "data": {"a": "1"}}
    called.update({"create_namespaced_config_map", "read_namespaced_config_map",
                   "replace_namespaced_config_map"})
    made = await api.create_config_map(namespace, body)
    made["data"] = {"a": "2"}
    await api.replace_config_map(namespace, "c", made)
    assert (await api.get_config_map(namespace, "c") or {})["data"] == {"a": "2"}
    assert await api.get_config_map(namespace, "nothing") is None

    # Pods: a dry-run create (a query parameter), a real one, read, delete by uid.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    dry = await api.read_json(route(core, "create_namespaced_pod"), namespace, pod,
                              dry_run="All")
    assert dry["metadata"]["name"] == "p" and await api.find_pod(namespace, "p") is None
    real = await api.write_json(core.create_namespaced_pod, namespace, pod)
    called.update({"read_namespaced_pod", "delete_namespaced_pod",
                   "list_pod_for_all_namespaces", "list_node"})
    assert (await api.get_pod(namespace, "p"))["metadata"]["uid"] == real["metadata"]["uid"]
    assert not await api.delete_pod(namespace, "p", uid=str(uuid.uuid4()))  # precondition
    # (a field selector on the phase: no pod that ended)
    assert all((p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
               for p in await api.list_bound_pods())
    assert all(n["metadata"]["name"] for n in await api.list_nodes())
    assert await api.delete_pod(namespace, "p", uid=real["metadata"]["uid"])

    # Namespaces by label selector, Events (create, list by field selector), quotas.
    called.update({"list_namespace", "create_namespaced_event", "list_namespaced_event",
                   "list_namespaced_resource_quota"})
    assert namespace in await api.list_namespaces("gpushift.io/test=true")
    assert namespace not in await api.list_namespaces("gpushift.io/test=no")
    notebook = {"apiVersion": "kubeflow.org/v1", "kind": "Notebook",
                "metadata": {"name": "nb", "namespace": namespace, "uid": "u-1"}}
    await api.create_event(namespace, notebook, "Tested", "a message")
    events = await api.list_events(namespace, "involvedObject.name=nb,reason=Tested")
    assert [e["message"] for e in events] == ["a message"]
    assert await api.list_events(namespace, "reason=Other") == []
    assert await api.list_resource_quotas(namespace) == []

    # Leases: create, read, replace guarded by the version read.
    called.update(COORDINATION_V1)
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "l", "namespace": namespace},
             "spec": {"holderIdentity": "a"}}
    made = await api.create_lease(namespace, lease)
    made["spec"]["holderIdentity"] = "b"
    await api.update_lease(namespace, "l", made)
    assert ((await api.get_lease(namespace, "l")) or {})["spec"]["holderIdentity"] == "b"
    assert await api.get_lease(namespace, "none") is None

    # Notebooks: list (pages, the watch cache), get, patch (a JSON Patch), watch.
    called.update(CUSTOM_OBJECTS)
    admin.custom.create_namespaced_custom_object(*NOTEBOOK_API, namespace, "notebooks", {
        "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
        "metadata": {"name": "nb", "namespace": namespace},
        "spec": {"template": {"spec": {"containers": [{"name": "nb", "image": "jupyter"}]}}}})
    listed = await api.list_notebooks()
    assert ("nb", namespace) in {(n["metadata"]["name"], n["metadata"]["namespace"])
                                 for n in listed}
    patched = await api.set_annotation(namespace, "nb", "notebooks.gpushift.io/t", "v")
    assert patched.changed
    assert (await api.get_notebook(namespace, "nb"))["metadata"]["annotations"][
        "notebooks.gpushift.io/t"] == "v"
    _, version = await api.list_notebooks_with_version()
    async for event in api.watch_notebooks(version, timeout_seconds=1):
        assert event["type"] in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK")

    # The MutatingWebhookConfiguration: read, patch (JSON Patch), delete.
    called.update(ADMISSION_V1)
    name = f"rest-test-{uuid.uuid4().hex[:6]}"
    client.AdmissionregistrationV1Api(admin.raw).create_mutating_webhook_configuration({
        "metadata": {"name": name}, "webhooks": [{
            "name": "t.gpushift.io", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "failurePolicy": "Ignore",
            "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
            "namespaceSelector": {"matchLabels": {"never": "matches"}}}]})
    mwc = await api.read_json(api.admission_v1.read_mutating_webhook_configuration, name)
    await api.call(api.admission_v1.patch_mutating_webhook_configuration, name, [
        {"op": "test", "path": "/metadata/resourceVersion",
         "value": mwc["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Y2E="}],
        write=True)
    again = await api.read_json(api.admission_v1.read_mutating_webhook_configuration, name)
    assert again["webhooks"][0]["clientConfig"]["caBundle"] == "Y2E="
    await api.call(api.admission_v1.delete_mutating_webhook_configuration, name, write=True)

    assert called == set(CORE_V1) | set(COORDINATION_V1) | set(ADMISSION_V1) | set(
        CUSTOM_OBJECTS)

