"""Following the Notebooks with the real API server's watch (gpushift_webhook.notebook_watch
on gpushift_core.kube): the store sees Notebooks created, changed and deleted; a watch
from a version the API server no longer has (410 Gone) lists again; and the guard's
requests on Notebooks over 20 s, counted by the API server's own
`apiserver_request_total`: with the chart's RBAC (which grants the watch) against the
same RBAC with `watch` taken out (the guard then lists once per interval for itself and
the server types)."""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

from gpushift_testing.controlplane import ControlPlane
from guard_processes import running_guards

from gpushift_core.kube import KubeApi, KubeError, Retry
from gpushift_webhook.notebook_watch import NotebookStore, WatchSettings, follow

NB = ("kubeflow.org", "v1")
QUICK = Retry(deadline_seconds=0, connect_timeout_seconds=5, read_timeout_seconds=10)


def create(admin: Any, namespace: str, name: str) -> None:
    admin.custom.create_namespaced_custom_object(*NB, namespace, "notebooks", {
        "apiVersion": "kubeflow.org/v1", "kind": "Notebook",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"spec": {"containers": [{
            "name": name, "image": "kubeflownotebookswg/jupyter-scipy:v1.9.2",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}})


async def until(what: str, predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_the_store_follows_the_real_watch_and_lists_again_on_410(
        control_plane: ControlPlane, admin: Any, namespace: str) -> None:
    api = KubeApi.connect(str(control_plane.kubeconfig), retry=QUICK, list_from_cache=True)
    store = NotebookStore()
    passes: list[float] = []
    task = asyncio.create_task(follow(api, store, WatchSettings(watch_timeout_seconds=2),
                                      on_pass=lambda: passes.append(time.monotonic())))
    try:
        await until("the first list", lambda: store.synced)
        create(admin, namespace, "w1")
        await until("w1 in the store", lambda: (namespace, "w1") in store.items)
        admin.custom.patch_namespaced_custom_object(*NB, namespace, "notebooks", "w1", {
            "metadata": {"annotations": {"gpushift.io/test": "changed"}}})
        await until("the change in the store", lambda: (
            store.items[(namespace, "w1")]["metadata"].get("annotations") or {}).get(
            "gpushift.io/test") == "changed")
        admin.custom.delete_namespaced_custom_object(*NB, namespace, "notebooks", "w1")
        await until("w1 gone from the store", lambda: (namespace, "w1") not in store.items)
        # Watches end after 2 s and resume: passes keep coming without any change.
        count = len(passes)
        await asyncio.sleep(4.5)
        assert len(passes) >= count + 2
    finally:
        task.cancel()

    # A version long compacted away: the API server answers 410 (an ERROR event).
    try:
        first = [e async for e in api.watch_notebooks("1", timeout_seconds=5)][:1]
        assert first and first[0]["type"] == "ERROR" and first[0]["object"]["code"] == 410
    except KubeError as exc:
        assert exc.status == 410
    create(admin, namespace, "w2")
    stale = NotebookStore()
    stale.replace([], "1")  # "synced", but at a version the API server no longer has
    task = asyncio.create_task(follow(api, stale, WatchSettings(watch_timeout_seconds=5)))
    try:
        await until("w2 listed after the 410", lambda: (namespace, "w2") in stale.items)
        assert stale.synced and int(stale.resource_version) > 1
    finally:
        task.cancel()
        api.close()


def notebook_requests(plane: ControlPlane) -> dict[str, float]:
    """apiserver_request_total for notebooks, by verb (summed over codes and scopes)."""
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    request = urllib.request.Request(f"{plane.server}/metrics",
                                     headers={"Authorization": f"Bearer {plane.token}"})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="notebooks"' in line:
            verb = line.split('verb="', 1)[1].split('"', 1)[0]
            out[verb] = out.get(verb, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {verb: int(after[verb] - before.get(verb, 0)) for verb in after
            if after[verb] != before.get(verb, 0)}


def test_guard_requests_on_notebooks_with_and_without_the_watch(
        control_plane: ControlPlane, tmp_path: Path) -> None:
    window = 20
    # The chart's RBAC (watch granted): one list, then the watch.
    with running_guards(control_plane, tmp_path / "watching", ["watching"],
                        release="watchreq", lease="watchreq-gpushift-guard",
                        namespace_prefix="watch-requests", ready_timeout=10, image_map=[],
                        lease_duration=6, renew=1) as guards:
        time.sleep(8)  # started, listed once, watching; earlier tests' cleanup done
        before = notebook_requests(control_plane)
        time.sleep(window)
        with_watch = delta(notebook_requests(control_plane), before)
        assert "Notebook watch forbidden" not in guards.procs["watching"].log.read_text()
    # The same RBAC without `watch`: the guard falls back to one list per interval.
    with running_guards(control_plane, tmp_path / "polling", ["polling"], release="listreq",
                        lease="listreq-gpushift-guard", namespace_prefix="list-requests",
                        ready_timeout=10, image_map=[], lease_duration=6, renew=1,
                        without_watch=True) as guards:
        time.sleep(5)
        before = notebook_requests(control_plane)
        time.sleep(window)
        polling = delta(notebook_requests(control_plane), before)
        log = guards.procs["polling"].log.read_text()
    print(f"\nNotebook requests in {window} s, guard interval 1 s: with the watch "
          f"{with_watch}, without (list only) {polling}")
    # The API server's counters are not per client: the namespace controller may still
    # be deleting an earlier test's namespace, listing every resource type, Notebooks too.
    assert with_watch.get("LIST", 0) <= 3, with_watch
    assert "Notebook watch forbidden" in log
    # One list per interval for the guard and the server types together (before this
    # change: one each).
    assert window * 0.7 <= polling.get("LIST", 0) <= window * 1.3, polling
