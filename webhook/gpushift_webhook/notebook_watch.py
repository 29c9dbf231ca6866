"""Follow the Notebooks with a watch, for the migration guard and the server-type cache.

The guard looks at every Notebook every few seconds, and every replica keeps the
Notebooks' server types; listing them all for each look costs the API server a LIST per
look and replica. Instead one loop per replica follows them (client-go's reflector,
reduced) into a `NotebookStore`, and both read the store (`WatchedApi.list_notebooks`):

* list once (from the API server's watch cache, in pages): the store holds every
  Notebook and the list's resourceVersion;
* watch from that version, with bookmarks; every event updates the store. The API
  server ends each watch after `watch_timeout_seconds` and the next one starts from the
  last version seen, without a list;
* a version too old for the API server (410 Gone, as the watch's ERROR event or as the
  answer to the request): list again, then watch;
* the watch forbidden (403; a chart whose RBAC grants `list` but not `watch` on
  Notebooks): list every `poll_seconds` instead, into the same store;
* any other failure: the store is marked unsynced -- readers then list for themselves,
  so the guard never decides on a store that stopped following -- and, after
  `retry_seconds`, list again.

The guard only ever writes after reading the Notebook again (`KubeApi.patch_notebook`),
so a store a moment behind delays a decision by that moment and never makes a wrong
write. A completed pass, for the loop's supervisor: a list, an event, or a watch that
ran to its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gpushift_core.kube import KubeApi, KubeError

__all__ = ["NotebookStore", "WatchSettings", "WatchedApi", "follow"]

log = logging.getLogger("gpushift.notebooks")

GONE = "gone"
"""`NotebookStore.apply`: the watch's version is too old; list again."""


@dataclass(frozen=True)
class WatchSettings:
    """How the Notebooks are followed."""

    watch_timeout_seconds: float = 60.0
    """The API server ends each watch after this long; the next one starts from the last
    version seen (a pass each time, so a quiet cluster still shows the loop alive)."""
    poll_seconds: float = 5.0
    """Seconds between lists when the watch is forbidden (RBAC without `watch`)."""
    retry_seconds: float = 1.0
    """Pause after a failed list or watch."""


class StoreObserver(Protocol):
    """Told of every change the store takes (the GPU-hours, `gpu_hours.GpuHours`)."""

    def replace(self, notebooks: Mapping[tuple[str, str], Mapping[str, Any]],
                now: float) -> None: ...

    def observe(self, key: tuple[str, str], notebook: Mapping[str, Any] | None,
                now: float) -> None: ...


class NotebookStore:
    """Every Notebook as the last list and the watch events since left it."""

    def __init__(self, observer: StoreObserver | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.observer = observer
        self.clock = clock
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.resource_version = ""
        """The version the next watch starts from."""
        self.synced = False
        """True while the store follows the API (listed, and the watch not failed)."""

    def replace(self, items: list[dict[str, Any]], resource_version: str) -> None:
        self.items = {key: nb for nb in items if (key := _key(nb)) is not None}
        self.resource_version = resource_version
        self.synced = True
        if self.observer is not None:
            self.observer.replace(self.items, self.clock())

    def apply(self, event: Mapping[str, Any]) -> str:
        """Apply one watch event; returns its type, or GONE. An ERROR other than 410
        raises its Status as a KubeError."""
        kind = str(event.get("type") or "")
        obj = event.get("object")
        obj = obj if isinstance(obj, dict) else {}
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            if code == 410:
                return GONE
            raise KubeError(code, str(obj.get("reason") or "WatchError"),
                            str(obj.get("message") or obj))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        key = _key(obj)
        if kind in ("ADDED", "MODIFIED") and key is not None:
            self.items[key] = obj
        elif kind == "DELETED" and key is not None:
            self.items.pop(key, None)
        if self.observer is not None and key is not None and kind in (
                "ADDED", "MODIFIED", "DELETED"):
            self.observer.observe(key, obj if kind != "DELETED" else None, self.clock())
        if version:
            self.resource_version = str(version)
        return kind

    def snapshot(self) -> list[dict[str, Any]]:
        """Copies of the Notebooks: a reader may change what it got."""
        return list(orjson.loads(orjson.dumps(list(self.items.values()))))


def _key(nb: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = nb.get("metadata") or {}
    namespace, name = meta.get("namespace"), meta.get("name")
    if isinstance(namespace, str) and isinstance(name, str):
        return namespace, name
    return None


class NotebookSource(Protocol):
    async def list_notebooks_with_version(self) -> tuple[list[dict[str, Any]], str]: ...

    def watch_notebooks(self, resource_version: str, timeout_seconds: float = 60
                        ) -> AsyncGenerator[dict[str, Any], None]: ...


async def follow(api: NotebookSource, store: NotebookStore,
                 settings: WatchSettings = WatchSettings(),
                 on_pass: Callable[[], None] | None = None) -> None:
    """Keep `store` following the Notebooks until cancelled (see the module's doc)."""
    passed = on_pass or (lambda: None)
    polling = False
    while True:
        try:
            if polling or not store.synced:
                items, version = await api.list_notebooks_with_version()
                store.replace(items, version)
                passed()
            if polling:
                await asyncio.sleep(settings.poll_seconds)
                continue
            await _watch(api, store, settings, passed)
        except KubeError as exc:
            if exc.status == 410:
                log.info("Notebook watch: version %s too old; listing again",
                         store.resource_version)
                store.synced = False
                continue
            if exc.status == 403 and store.synced:
                log.warning("Notebook watch forbidden (the RBAC grants list only); listing "
                            "every %g s instead", settings.poll_seconds,
                            extra={"why": exc.message})
                polling = True
                continue
            store.synced = False
            log.warning("Notebooks not followed: %s; listing again in %g s", exc,
                        settings.retry_seconds, extra={"status": exc.status})
            await asyncio.sleep(settings.retry_seconds)


async def _watch(api: NotebookSource, store: NotebookStore, settings: WatchSettings,
                 passed: Callable[[], None]) -> None:
    """One watch, to its end; GONE marks the store for a list."""
    events = api.watch_notebooks(store.resource_version, settings.watch_timeout_seconds)
    async with contextlib.aclosing(events):
        async for event in events:
            if store.apply(event) == GONE:
                log.info("Notebook watch: expired at version %s; listing again",
                         store.resource_version)
                store.synced = False
                return
            passed()
    passed()  # ran to its timeout


class WatchedApi(KubeApi):
    """The webhook's Kubernetes client whose `list_notebooks` answers from the store
    while it follows the API (no request), else lists as `KubeApi` does."""

    def __init__(self, api: KubeApi, store: NotebookStore) -> None:
        super().__init__(api.connection, retry=api.retry, component=api.component,
                         instance=api.instance, host=api.host,
                         list_from_cache=api.list_from_cache, page_size=api.page_size)
        self.store = store

    async def list_notebooks(self) -> list[dict[str, Any]]:
        if self.store.synced:
            return self.store.snapshot()
        return await super().list_notebooks()
