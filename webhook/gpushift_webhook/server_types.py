"""The webhook's cache of Notebook server types, for admission.

Kubeflow's spawner sets `notebooks.kubeflow.org/server-type` on the Notebook (`jupyter`,
`group-one` = VSCode, `group-two` = RStudio), and the notebook-controller does not copy
it into the pod (it copies only annotations whose key contains neither "notebook" nor
"kubectl"). Admission must stay fast and never wait on the API, so every webhook replica
keeps (namespace, name) -> server type of all Notebooks, read again every `interval`
seconds from the lister it is given (in the webhook, the store that
`gpushift_webhook.notebook_watch` keeps with a watch: no API call per refresh), and
`review()` reads that dict (`gpushift_webhook.injection.plan_injection`).

A miss (a Notebook created since the last list: usually its very first pod) injects,
and the sidecar reads its Notebook and goes inert for a type the admin keeps off; its
idle timer also runs only once gpushift's server extension has reported, which a VSCode
or RStudio server never does. So the cache saves those pods the sidecar, and a miss
costs nothing but the sidecar's small footprint. Needs list (and watch) on Notebooks
cluster-wide (the chart grants them with `rbac.migrationGuard`; the CLI runs the cache
with `--guard`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from gpushift_core.admin_settings import server_type_of
from gpushift_core.kube import KubeError

log = logging.getLogger("gpushift.webhook")


class NotebookLister(Protocol):
    async def list_notebooks(self) -> list[dict[str, Any]]: ...


def server_types(notebooks: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """(namespace, name) -> server type ("" when the Notebook has none) (pure)."""
    found: dict[tuple[str, str], str] = {}
    for nb in notebooks:
        meta = nb.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if isinstance(namespace, str) and isinstance(name, str):
            found[(namespace, name)] = server_type_of(nb)
    return found


class ServerTypeCache(dict[tuple[str, str], str]):
    """The dict `review()` reads; replaced whole on each list, on the event loop, so a
    review never sees half a refresh."""

    async def refresh(self, api: NotebookLister) -> None:
        fresh = server_types(await api.list_notebooks())
        self.clear()
        self.update(fresh)

    async def run(self, api: NotebookLister, interval: float) -> None:
        """Refresh every `interval` seconds until cancelled; a failed list keeps the
        last one (logged once per distinct problem)."""
        problem: str | None = None
        while True:
            try:
                await self.refresh(api)
                problem = None
            except KubeError as exc:
                now = f"{exc.status} {exc.reason}: {exc.message}"
                if now != problem:
                    log.warning("Notebook server types not listed; keeping the last list",
                                extra={"why": now, "known": len(self)})
                problem = now
            await asyncio.sleep(interval)
