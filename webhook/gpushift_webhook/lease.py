"""Leader election with a coordination.k8s.io/v1 Lease, so one webhook replica acts.

The migration guard runs in every webhook replica; only the one that holds the Lease
`<fullname>-guard` in the webhook's namespace acts, the others stand by. The scheme is
client-go's leader election, reduced to what the guard needs:

* every `renew_seconds` (5 s) each replica reads the Lease;
* no Lease: create it, holding it (a second replica creating at once gets 409 and stands
  by);
* it holds the Lease: write a new `renewTime`;
* another holds it: stand by, unless the Lease has not changed for `leaseDurationSeconds`
  (15 s) as *this* replica's clock measures it from the moment it first saw the current
  version (so clocks that disagree between nodes do not matter), or has no holder (a
  leader that stopped cleanly released it): then take it over, counting the transition.

Every write is an update with the resourceVersion read (optimistic concurrency): when two
replicas try to take over at once, one update wins and the other gets 409.

A leader counts itself leader only while its last successful renewal is younger than
`renew_deadline_seconds` (2/3 of the duration, 10 s): it stops acting before any other
replica can see the Lease expire and take over. On a clean stop it releases the Lease
(empty holder), so a standby takes over at its next read instead of after 15 s.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gpushift_core.kube import KubeError
from gpushift_core.timestamps import iso_utc

log = logging.getLogger("gpushift.guard.lease")


class LeaseApi(Protocol):
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, namespace: str,
                           body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def update_lease(self, namespace: str, name: str,
                           body: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    """Namespace of the Lease (the webhook's own)."""
    name: str
    """Name of the Lease (the chart's `<fullname>-guard`, which its RBAC names)."""
    identity: str
    """This replica's holderIdentity (pod name, or hostname and pid)."""
    duration_seconds: float = 15.0
    """A Lease not renewed for this long may be taken over."""
    renew_seconds: float = 5.0
    """How often the Lease is read and, by its holder, renewed."""
    renew_deadline_seconds: float = 0.0
    """A leader that could not renew for this long stops acting (0: 2/3 of the
    duration)."""

    def __post_init__(self) -> None:
        if not self.namespace or not self.name or not self.identity:
            raise ValueError("the Lease needs a namespace, a name and an identity")
        if not 0 < self.renew_seconds < self.deadline < self.duration_seconds:
            raise ValueError("need 0 < renew_seconds < renew deadline < duration_seconds")

    @property
    def deadline(self) -> float:
        return self.renew_deadline_seconds or self.duration_seconds * 2 / 3


class LeaderElector:
    def __init__(self, api: LeaseApi, settings: LeaseSettings, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.api = api
        self.settings = settings
        self._clock = clock
        self._wall = wall
        self._on_change = on_change
        self._leader = False
        self._renewed_at = float("-inf")
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._announced: tuple[bool, str] | None = None
        self.holder = ""
        """The holder of the Lease as last read ("" when none or unknown)."""
        self.reached = False
        """Whether the last tick read the Lease and did what the rules say (a pass, for
        the loop's supervisor); False after an API error."""

    @property
    def is_leader(self) -> bool:
        """Whether this replica may act now: it holds the Lease, renewed within the
        renew deadline."""
        return self._leader and self._clock() - self._renewed_at < self.settings.deadline

    async def tick(self) -> bool:
        """Read the Lease once and create, renew or take it over as the rules say.
        Returns is_leader. API errors are logged; leadership then lapses at the renew
        deadline."""
        started = self._clock()
        self.reached = False
        try:
            await self._tick(started)
            self.reached = True
        except KubeError as exc:
            log.warning("guard lease: %s", exc,
                        extra={"lease": self.settings.name, "status": exc.status})
        self._announce()
        return self.is_leader

    async def _tick(self, started: float) -> None:
        s = self.settings
        lease = await self.api.get_lease(s.namespace, s.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": s.name, "namespace": s.namespace,
                             "labels": {"app.kubernetes.io/name": "gpushift",
                                        "app.kubernetes.io/component": "migration-guard"}},
                "spec": self._held_spec({}, acquired=True),
            }
            try:
                created = await self.api.create_lease(s.namespace, body)
            except KubeError as exc:
                if not exc.conflict:
                    raise
                self._standby("")  # another replica created it first
                return
            self._won(created, started)
            return
        meta = lease.get("metadata") or {}
        spec = lease.get("spec") or {}
        version = str(meta.get("resourceVersion") or "")
        if version != self._observed_version:
            self._observed_version, self._observed_at = version, started
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or s.duration_seconds)
        if holder == s.identity:
            acquired = False
        elif holder and started - self._observed_at < duration:
            self._standby(holder)
            return
        else:
            acquired = True
            log.info("guard lease: taking over", extra={
                "lease": s.name, "previous_holder": holder or None,
                "unchanged_seconds": round(started - self._observed_at, 1)})
        body = dict(lease)
        body["spec"] = self._held_spec(spec, acquired=acquired)
        try:
            updated = await self.api.update_lease(s.namespace, s.name, body)
        except KubeError as exc:
            if not exc.conflict:
                raise
            self._standby(holder)  # someone else wrote it in between
            return
        self._won(updated, started)

    def _held_spec(self, spec: Mapping[str, Any], *, acquired: bool) -> dict[str, Any]:
        now = iso_utc(self._wall())
        out = dict(spec)
        out["holderIdentity"] = self.settings.identity
        out["leaseDurationSeconds"] = max(1, round(self.settings.duration_seconds))
        out["renewTime"] = now
        if acquired:
            out["acquireTime"] = now
            if spec:
                out["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            else:
                out["leaseTransitions"] = 0
        return out

    def _won(self, lease: Mapping[str, Any], started: float) -> None:
        self._leader = True
        self._renewed_at = started
        self.holder = self.settings.identity
        self._observed_version = str((lease.get("metadata") or {}).get("resourceVersion"))
        self._observed_at = started

    def _standby(self, holder: str) -> None:
        self._leader = False
        self.holder = holder

    def _announce(self) -> None:
        state = (self.is_leader, self.holder)
        if state == self._announced:
            return
        was_leader = self._announced[0] if self._announced else False
        self._announced = state
        extra = {"lease": self.settings.name, "identity": self.settings.identity,
                 "holder": self.holder or None}
        if state[0]:
            log.info("guard leader: this replica acts", extra=extra)
        else:
            log.info("guard standby: %s", f"the Lease is held by {self.holder}"
                     if self.holder else "no holder known", extra=extra)
        if state[0] != was_leader and self._on_change is not None:
            self._on_change(state[0])

    async def run(self, *, tick_first: bool = True,
                  on_pass: Callable[[], None] | None = None) -> None:
        """Keep electing until cancelled (`tick_first=False`: wait before the first read,
        for a caller that just ticked). `on_pass` is called after each tick that reached
        the API server (`gpushift_webhook.supervisor.LoopHealth.passed`)."""
        if tick_first:
            await self._tick_and_report(on_pass)
        while True:
            delay = self.settings.renew_seconds
            if not self._leader:
                delay *= random.uniform(1.0, 1.2)  # noqa: S311 (spread standbys apart)
            await asyncio.sleep(delay)
            await self._tick_and_report(on_pass)

    async def _tick_and_report(self, on_pass: Callable[[], None] | None) -> None:
        await self.tick()
        if self.reached and on_pass is not None:
            on_pass()

    async def release(self) -> bool:
        """Give the Lease up (empty holder), so a standby takes over at its next read.
        True when released; False when this replica did not hold it."""
        if not self._leader:
            return False
        s = self.settings
        self._leader = False
        lease = await self.api.get_lease(s.namespace, s.name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != s.identity:
            return False
        body = dict(lease)
        body["spec"] = {**(lease.get("spec") or {}), "holderIdentity": "",
                        "leaseDurationSeconds": 1, "renewTime": iso_utc(self._wall())}
        try:
            await self.api.update_lease(s.namespace, s.name, body)
        except KubeError as exc:
            log.warning("guard lease: release failed: %s", exc, extra={"lease": s.name})
            return False
        self.holder = ""
        self._announce()
        log.info("guard lease released", extra={"lease": s.name, "identity": s.identity})
        return True
