"""An in-memory Kubernetes API for the migration guard's unit tests (test_guard_*.py)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch

from gpushift_core.kube import KubeError, PatchResult
from gpushift_core.labels import ENABLED_LABEL


class FakeApi:
    """Notebooks, pods, Events and Leases in memory, with the API's concurrency rules:
    JSON patches (with their `test`), delete preconditions, Lease resourceVersions."""

    def __init__(self) -> None:
        self.notebooks: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.object_events: list[dict[str, Any]] = []
        """core/v1 Events as the API lists them (list_events), e.g. a FailedCreate."""
        self.events_error: KubeError | None = None
        self.event_lists: list[tuple[str, str]] = []
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        # Namespace name -> labels. A Notebook's namespace is added, opted in, with the
        # Notebook (add_notebook); a test relabels it to see the guard leave it alone.
        self.namespaces: dict[str, dict[str, str]] = {}
        self.namespace_selectors: list[str] = []
        self.patches: list[list[dict[str, Any]]] = []
        self.deletes: list[tuple[str, str | None]] = []
        self.before_patch: Any = None
        self.after_get_pod: Any = None
        self._rv = 1000

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add_notebook(self, nb: dict[str, Any]) -> None:
        self.notebooks[(nb["metadata"]["namespace"], nb["metadata"]["name"])] = nb
        self.namespaces.setdefault(nb["metadata"]["namespace"], {ENABLED_LABEL: "true"})

    async def list_namespaces(self, label_selector: str = "") -> dict[str, dict[str, str]]:
        """As the API: only `key=value` / `key!=value` requirements, comma-separated."""
        self.namespace_selectors.append(label_selector)

        def matches(labels: Mapping[str, str]) -> bool:
            for req in filter(None, label_selector.split(",")):
                if "!=" in req:
                    key, value = req.split("!=", 1)
                    if labels.get(key) == value:
                        return False
                else:
                    key, value = req.split("=", 1)
                    if labels.get(key) != value:
                        return False
            return True

        return {name: dict(labels) for name, labels in self.namespaces.items()
                if matches(labels)}

    def add_pod(self, p: dict[str, Any]) -> None:
        self.pods[(p["metadata"]["namespace"], p["metadata"]["name"])] = p

    async def list_notebooks(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self.notebooks.values()))

    async def patch_notebook(self, namespace: str, name: str, build_ops: Any,
                             attempts: int = 5) -> PatchResult:
        for attempt in range(1, attempts + 1):
            nb = copy.deepcopy(self.notebooks[(namespace, name)])
            built = build_ops(nb)
            ops = list(await built) if hasattr(built, "__await__") else list(built)
            if not any(op["op"] != "test" for op in ops):
                return PatchResult(nb, [], attempt)
            if self.before_patch is not None:
                self.before_patch(attempt)
            try:
                patched = jsonpatch.apply_patch(self.notebooks[(namespace, name)], ops)
            except jsonpatch.JsonPatchTestFailed:
                continue
            patched["metadata"]["resourceVersion"] = self._next_rv()
            self.notebooks[(namespace, name)] = patched
            self.patches.append(ops)
            return PatchResult(copy.deepcopy(patched), ops, attempt)
        raise KubeError(422, "Invalid", "gave up")

    async def find_notebook(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.notebooks.get((namespace, name)))

    async def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        got = copy.deepcopy(self.pods.get((namespace, name)))
        if self.after_get_pod is not None:
            self.after_get_pod()
        return got

    async def delete_pod(self, namespace: str, name: str, uid: str,
                         resource_version: str | None = None) -> bool:
        self.deletes.append((uid, resource_version))
        current = self.pods.get((namespace, name))
        if current is None or current["metadata"]["uid"] != uid:
            return False
        if resource_version and current["metadata"]["resourceVersion"] != resource_version:
            return False
        del self.pods[(namespace, name)]
        return True

    async def create_event(self, namespace: str, notebook: Mapping[str, Any], reason: str,
                           message: str, type: str = "Normal") -> None:
        assert namespace == notebook["metadata"]["namespace"]
        self.events.append({"name": notebook["metadata"]["name"], "reason": reason,
                            "message": message, "type": type})

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        """The API's field selection: every `key=value` term must match."""
        self.event_lists.append((namespace, field_selector))
        if self.events_error is not None:
            raise self.events_error
        terms = [t.split("=", 1) for t in field_selector.split(",") if t]

        def field(event: dict[str, Any], key: str) -> Any:
            value: Any = event
            for part in key.split("."):
                value = (value or {}).get(part)
            return value

        return [copy.deepcopy(e) for e in self.object_events
                if e["metadata"]["namespace"] == namespace
                and all(field(e, k) == v for k, v in terms)]

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.leases.get((namespace, name)))

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        key = (namespace, body["metadata"]["name"])
        if key in self.leases:
            raise KubeError(409, "AlreadyExists", "exists")
        lease = copy.deepcopy(dict(body))
        lease["metadata"]["resourceVersion"] = self._next_rv()
        self.leases[key] = lease
        return copy.deepcopy(lease)

    async def update_lease(self, namespace: str, name: str,
                           body: Mapping[str, Any]) -> dict[str, Any]:
        current = self.leases[(namespace, name)]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        lease = copy.deepcopy(dict(body))
        lease["metadata"]["resourceVersion"] = self._next_rv()
        self.leases[(namespace, name)] = lease
        return copy.deepcopy(lease)
