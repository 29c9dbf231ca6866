"""Publishes what is free for each GPU profile (`serve --capacity`, with `--guard`).

Every `interval_seconds` the replica that holds the guard's Lease lists the nodes and the
pods that have not ended, computes each profile's room (`gpushift_core.gpu_capacity`) and
writes it into ConfigMap key `capacity.json` (`gpushift_core.capacity_document`) of the
ConfigMap the config's `capacity_configmap` names, which every sidecar reads for
JupyterLab's "Move to GPU…" picker and the `no_free_gpu` pre-check of a move.

Only the leader writes, so replicas never fight over the ConfigMap; a standby completes
its pass by standing by (its Lease loop says whether it reaches the API). The ConfigMap is
written only when its content changed (`at` aside) or its `at` is older than
`refresh_seconds` (5 min): a quiet cluster costs one write per 5 minutes, and readers can
still tell a live publisher from a dead one. Writes are replaces with the resourceVersion
read, so a former leader that still writes loses with 409.

The loop runs under the supervisor (`capacity`): a crash restarts it with backoff, an API
failure (`KubeError`) is logged and counted (`gpushift_webhook_capacity_errors_total`)
and retried at the next pass, and a leader without a completed pass for
`deadline_seconds` makes `/healthz` fail.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gpushift_core.admin_settings import GpuProfile
from gpushift_core.capacity_document import (
    CAPACITY_KEY,
    build_document,
    same_content,
    split_configmap_ref,
)
from gpushift_core.kube import KubeError
from gpushift_core.timestamps import parse_utc
from gpushift_webhook.metrics import WebhookMetrics
from gpushift_webhook.supervisor import LoopHealth, LoopSettings, Supervisor

__all__ = ["CapacityApi", "CapacityPublisher", "CapacitySettings", "add_arguments",
           "start"]

log = logging.getLogger("gpushift.capacity")


class CapacityApi(Protocol):
    async def list_nodes(self) -> list[dict[str, Any]]: ...

    async def list_bound_pods(self) -> list[dict[str, Any]]: ...

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_config_map(self, namespace: str,
                                body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_config_map(self, namespace: str, name: str,
                                 body: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CapacitySettings:
    namespace: str
    """Namespace of the ConfigMap (the webhook's own)."""
    name: str
    """Name of the ConfigMap (the chart's `<fullname>-gpu-capacity`, which its RBAC names)."""
    interval_seconds: float = 30.0
    """Seconds between looks at the nodes and pods."""
    refresh_seconds: float = 300.0
    """Longest time between writes when nothing changed (readers judge staleness by it)."""
    deadline_seconds: float = 300.0
    """The capacity loop is stalled (`/healthz` fails) after this long without a
    completed pass of the leader."""

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0 or self.refresh_seconds < self.interval_seconds:
            raise ValueError("need 0 < interval_seconds <= refresh_seconds")


class CapacityPublisher:
    def __init__(self, api: CapacityApi, profiles: Sequence[GpuProfile],
                 settings: CapacitySettings, metrics: WebhookMetrics | None = None, *,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.api = api
        self.profiles = list(profiles)
        self.settings = settings
        self.metrics = metrics
        self._now = now
        self.published: dict[str, Any] | None = None
        """The document last written or found current (None: not known yet)."""

    async def publish_once(self) -> bool:
        """One look and, when needed, one write; True when it wrote. KubeError when a
        call failed."""
        now = self._now()
        nodes = await self.api.list_nodes()
        resources = {p.resource for p in self.profiles}
        gpu_nodes = {str((n.get("metadata") or {}).get("name")) for n in nodes
                     if any(r in ((n.get("status") or {}).get("allocatable") or {})
                            for r in resources)}
        # Only the pods on nodes that offer a profile's resource matter.
        pods = [p for p in await self.api.list_bound_pods()
                if (p.get("spec") or {}).get("nodeName") in gpu_nodes] if gpu_nodes else []
        document = build_document(self.profiles, nodes, pods, now,
                                  interval_seconds=self.settings.interval_seconds,
                                  refresh_seconds=self.settings.refresh_seconds)
        self._show(document)
        if self._current(self.published, document, now):
            return False
        s = self.settings
        existing = await self.api.get_config_map(s.namespace, s.name)
        on_record = _document_of(existing)
        if self._current(on_record, document, now):
            self.published = on_record  # a new leader finds its predecessor's
            return False
        metadata: dict[str, Any] = {"name": s.name, "namespace": s.namespace, "labels": {
            "app.kubernetes.io/name": "gpushift",
            "app.kubernetes.io/component": "gpu-capacity"}}
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                                "data": {CAPACITY_KEY: json.dumps(document, sort_keys=True)}}
        if existing is None:
            await self.api.create_config_map(s.namespace, body)
        else:
            # The resourceVersion read: a former leader still writing loses with 409.
            metadata["resourceVersion"] = (existing.get("metadata") or {}).get(
                "resourceVersion")
            await self.api.replace_config_map(s.namespace, s.name, body)
        self.published = document
        if self.metrics is not None:
            self.metrics.capacity_writes.inc()
        log.info("GPU capacity published", extra={
            "configmap": f"{s.namespace}/{s.name}",
            "free": {name: p["free"] for name, p in document["profiles"].items()}})
        return True

    def _current(self, known: Mapping[str, Any] | None, document: Mapping[str, Any],
                 now: dt.datetime) -> bool:
        """Whether `known` says what `document` says and its `at` is recent enough."""
        if known is None or not same_content(known, document):
            return False
        at = parse_utc(known.get("at"))
        return at is not None and (now - at).total_seconds() < self.settings.refresh_seconds

    def _show(self, document: Mapping[str, Any]) -> None:
        if self.metrics is not None:
            for name, entry in document["profiles"].items():
                self.metrics.capacity_free.labels(name).set(entry["free"])


def _document_of(config_map: Mapping[str, Any] | None) -> dict[str, Any] | None:
    text = ((config_map or {}).get("data") or {}).get(CAPACITY_KEY)
    try:
        document = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


async def passes(publisher: CapacityPublisher, is_leader: Callable[[], bool],
                 health: LoopHealth) -> None:
    """The capacity loop: one look every interval while leading."""
    while True:
        if is_leader():
            try:
                await publisher.publish_once()
                health.passed()
            except KubeError as exc:
                log.warning("GPU capacity not published: %s", exc,
                            extra={"status": exc.status})
                if publisher.metrics is not None:
                    publisher.metrics.capacity_errors.inc()
        else:
            # Another replica may write while this one stands by: as leader again, it
            # compares with the ConfigMap, not with what it wrote before.
            publisher.published = None
            health.passed()
        await asyncio.sleep(publisher.settings.interval_seconds)


def start(api: CapacityApi, profiles: Sequence[GpuProfile], settings: CapacitySettings,
          supervisor: Supervisor, is_leader: Callable[[], bool]) -> asyncio.Task[None]:
    """The capacity loop under `supervisor` (cancel the task to stop it)."""
    publisher = CapacityPublisher(api, profiles, settings, supervisor.metrics)
    log.info("GPU capacity publisher started", extra={
        "configmap": f"{settings.namespace}/{settings.name}",
        "interval_seconds": settings.interval_seconds})
    return supervisor.start(LoopSettings("capacity", settings.deadline_seconds),
                            lambda health: passes(publisher, is_leader, health))


def add_arguments(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group(
        "GPU capacity",
        "with --guard: the Lease holder publishes what is free per GPU profile into the "
        "ConfigMap the config's capacity_configmap names")
    group.add_argument("--capacity", action="store_true",
                       help="publish the GPU capacity (needs --guard and capacity_configmap)")
    group.add_argument("--capacity-interval", type=float, default=30.0,
                       help="seconds between looks at the nodes and pods")
    group.add_argument("--capacity-refresh", type=float, default=300.0,
                       help="seconds after which an unchanged capacity is written again")
    group.add_argument("--capacity-deadline", type=float, default=300.0,
                       help="seconds without a completed capacity pass (by the leader) "
                            "after which /healthz fails")


def settings_from(args: argparse.Namespace, configmap: str) -> CapacitySettings:
    """The settings of `--capacity`; ValueError saying what is wrong."""
    if not getattr(args, "guard", False):
        raise ValueError("--capacity needs --guard (the guard's Lease decides who writes)")
    if not configmap:
        raise ValueError("--capacity needs capacity_configmap in the config file")
    namespace, name = split_configmap_ref(configmap)
    return CapacitySettings(namespace=namespace, name=name,
                            interval_seconds=args.capacity_interval,
                            refresh_seconds=args.capacity_refresh,
                            deadline_seconds=args.capacity_deadline)
