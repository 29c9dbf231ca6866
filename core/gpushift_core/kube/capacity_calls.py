"""The calls of the GPU capacity feature, part of `KubeApi` (a mixin, so the one client
stays one class while its file stays short): list the nodes and the pods bound to them
(the webhook's capacity publisher), and read and write the capacity ConfigMap (the
publisher writes it, every sidecar reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpushift_core.kube.errors import KubeError

__all__ = ["NOT_TERMINATED", "CapacityCalls"]

# The scheduler counts every pod bound to a node that has not ended (Pending with a
# nodeName, Running, Unknown); Succeeded and Failed pods hold nothing.
NOT_TERMINATED = "status.phase!=Succeeded,status.phase!=Failed"


class CapacityCalls:
    """Mixed into `KubeApi`, which provides `core_v1`, `read_json`, `write_json` and
    `page_size`."""

    core_v1: Any
    page_size: int

    async def read_json(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def write_json(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def list_nodes(self) -> list[dict[str, Any]]:
        """Every Node, as plain JSON, in pages of `page_size`."""
        return await self._paged(self.core_v1.list_node)

    async def list_bound_pods(self) -> list[dict[str, Any]]:
        """Every pod of every namespace that has not ended (`NOT_TERMINATED`), as plain
        JSON, in pages of `page_size`. One list for the cluster, not one per node: a
        pass then costs one request (a few pages) however many GPU nodes there are, and
        pods not bound yet are cheap to skip here."""
        return await self._paged(self.core_v1.list_pod_for_all_namespaces,
                                 field_selector=NOT_TERMINATED)

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap, or None when there is none."""
        try:
            return await self.read_json(self.core_v1.read_namespaced_config_map, name,
                                        namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def create_config_map(self, namespace: str,
                                body: Mapping[str, Any]) -> dict[str, Any]:
        """Create the ConfigMap; 409 (KubeError.conflict) when it exists already."""
        return await self.write_json(self.core_v1.create_namespaced_config_map, namespace,
                                     dict(body))

    async def replace_config_map(self, namespace: str, name: str,
                                 body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the ConfigMap; `body` carries the resourceVersion read (409 when
        another writer came first)."""
        return await self.write_json(self.core_v1.replace_namespaced_config_map, name,
                                     namespace, dict(body))

    async def _paged(self, fn: Any, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            page = await self.read_json(fn, limit=self.page_size, **kwargs,
                                        **({"_continue": token} if token else {}))
            items.extend(dict(i) for i in page.get("items") or [] if isinstance(i, dict))
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return items
