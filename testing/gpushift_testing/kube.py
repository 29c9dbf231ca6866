"""Small helpers for tests that talk to a (local) Kubernetes API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes.client.exceptions import ApiException


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = 60,
    interval: float = 0.25,
    describe: Callable[[], Any] | None = None,
) -> Any:
    """Poll `check` until it returns something truthy and return that.

    Exceptions from `check` (an object that does not exist yet) count as "not yet". On
    timeout raise AssertionError naming `what`, the last result and `describe()`.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except Exception as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    state = ""
    if describe is not None:
        try:
            state = f"\nstate: {describe()}"
        except Exception as e:
            state = f"\nstate: <{e!r}>"
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}{state}")


def wait_for_pod(core: Any, namespace: str, name: str, what: str,
                 check: Callable[[Any], Any], timeout: float = 60,
                 interval: float = 0.25) -> Any:
    """Read pod `name` until `check(pod)` returns something truthy, and return that; on
    timeout the failure names `what` and shows the pod's state."""
    return wait_for(f"pod {namespace}/{name} {what}",
                    lambda: check(core.read_namespaced_pod(name, namespace)), timeout,
                    interval=interval,
                    describe=lambda: pod_summary(core.read_namespaced_pod(name, namespace)))


def pod_summary(pod: Any) -> dict[str, Any]:
    """The parts of a V1Pod worth printing when a test fails."""
    st = pod.status
    return {
        "name": pod.metadata.name,
        "uid": pod.metadata.uid,
        "node": pod.spec.node_name,
        "phase": st.phase if st else None,
        "conditions": [
            (c.type, c.status, c.reason, c.message) for c in ((st.conditions if st else None) or [])
        ],
        "images": [c.image for c in pod.spec.containers],
        # Which StatefulSet revision made it, when, and what lets it onto a tainted node:
        # what tells a pod made from a stale template apart from a misplaced one.
        "revision": (pod.metadata.labels or {}).get("controller-revision-hash"),
        "created": str(pod.metadata.creation_timestamp),
        "tolerations": [(t.key, t.effect) for t in pod.spec.tolerations or []],
    }


def workload_story(core: Any, apps: Any, namespace: str) -> dict[str, Any]:
    """What made the pods of `namespace` what they are, for a failed test's message: each
    StatefulSet's revisions and status, the pods, and every Event in time order (the
    StatefulSet controller's create/delete Events name each pod it made or removed)."""
    story: dict[str, Any] = {"pods": [pod_summary(p) for p in
                                      core.list_namespaced_pod(namespace).items]}
    for s in apps.list_namespaced_stateful_set(namespace).items:
        story[f"statefulset {s.metadata.name}"] = {
            "generation": s.metadata.generation,
            "observed": s.status.observed_generation,
            "current": s.status.current_revision, "update": s.status.update_revision}
    story["revisions"] = sorted(
        (r.revision, r.metadata.name, str(r.metadata.creation_timestamp))
        for r in apps.list_namespaced_controller_revision(namespace).items)
    events = core.list_namespaced_event(namespace).items
    story["events"] = [
        (str(e.last_timestamp or e.event_time), e.involved_object.kind,
         e.involved_object.name, e.reason, e.count, e.message)
        for e in sorted(events, key=lambda e: str(e.last_timestamp or e.event_time))]
    return story


def delete_namespaces(core: Any, names: Iterable[str]) -> None:
    """Delete each namespace; one already gone is fine."""
    for name in names:
        try:
            core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise
