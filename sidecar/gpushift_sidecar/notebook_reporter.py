"""What a migration tells the cluster: the Notebook's migration mirror and its Events.

Both are best effort: the state file on the volume (`MigrationTracker`) is the record,
the mirror (a Notebook annotation) lets the guard and a restarted pod see where a move
is, and the Events tell the story in `kubectl describe notebook`. A refusal is logged,
never raised: a mirror or an Event that cannot be written must not stop a move. The
patch that moves the Notebook is not written here (`runner.StepRunner._patch`): its
failure fails the migration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

from gpushift_core.kube import KubeError, PatchResult
from gpushift_sidecar.api_requests import RestoreReport
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.migration_mirror import mirror_ops
from gpushift_sidecar.state import Migration
from gpushift_sidecar.tracker import MigrationTracker

__all__ = ["NotebookApi", "NotebookReporter", "migration_name", "requested_message",
           "restore_summary", "status_text"]

log = logging.getLogger("gpushift.sidecar")

BuildOps = Callable[[dict[str, Any]], "list[dict[str, Any]] | Awaitable[list[dict[str, Any]]]"]


class NotebookApi(Protocol):
    """What a migration needs of `gpushift_core.kube.KubeApi`."""

    async def get_notebook(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def patch_notebook(self, namespace: str, name: str, build_ops: BuildOps,
                             attempts: int = 5) -> PatchResult: ...

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def create_event(self, namespace: str, notebook: Mapping[str, Any], reason: str,
                           message: str, type: str = "Normal") -> dict[str, Any]: ...


class NotebookReporter:
    """The mirror, the Events and the reads of this pod's Notebook; `kube` None: no API
    access, and then nothing is written."""

    def __init__(self, env: SidecarEnv, tracker: MigrationTracker,
                 kube: NotebookApi | None) -> None:
        self.env = env
        self.tracker = tracker
        self.kube = kube
        self.notebook: dict[str, Any] | None = None
        """The Notebook as last read or patched (Events name it)."""
        self._events: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._event_worker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._mirror_lock = asyncio.Lock()

    async def mirror(self, *, drop_previous: str | None = None) -> None:
        """Make the Notebook's mirror show the current migration as it is when the
        Notebook is read (a late writer never puts back an older state), one write at a
        time. `drop_previous`: the id of the migration on whose behalf the previous-
        profile record goes (only while that migration is still the current one)."""
        if self.kube is None:
            return

        def build(notebook: dict[str, Any]) -> list[dict[str, Any]]:
            current = self.tracker.current
            if current is None:
                return []
            return mirror_ops(notebook, current,
                              drop_previous=drop_previous == current.id)

        async with self._mirror_lock:
            try:
                result = await self.kube.patch_notebook(self.env.pod_namespace,
                                                        self.env.notebook_name, build)
            except KubeError as exc:
                log.warning("migration mirror not written", extra={"why": status_text(exc)})
                return
        self.notebook = result.notebook

    def mirror_later(self) -> None:
        """`mirror()` in the background (drained on `stop`)."""
        self._spawn(self.mirror())

    async def read_notebook(self) -> dict[str, Any] | None:
        """The Notebook now, or None (logged) when it cannot be read."""
        if self.kube is None:
            return None
        try:
            self.notebook = await self.kube.get_notebook(self.env.pod_namespace,
                                                         self.env.notebook_name)
        except KubeError as exc:
            log.warning("cannot read the Notebook", extra={"why": status_text(exc)})
            return None
        return self.notebook

    async def pod_uid(self) -> str:
        """This pod's UID: from the webhook's env, else from the API ("" if unknown)."""
        if self.env.pod_uid or self.kube is None:
            return self.env.pod_uid
        try:
            pod = await self.kube.get_pod(self.env.pod_namespace, self.env.pod_name)
        except KubeError as exc:
            log.warning("cannot read this pod's UID", extra={"why": status_text(exc)})
            return ""
        return str((pod.get("metadata") or {}).get("uid") or "")

    def event(self, reason: str, message: str, type: str = "Normal") -> None:
        """Queue an Event on the Notebook; one worker sends them in order."""
        if self.kube is None:
            return
        self._events.put_nowait((reason, message, type))
        if self._event_worker is None or self._event_worker.done():
            self._event_worker = asyncio.create_task(self._send_events())

    async def stop(self, grace: float) -> None:
        """Send what is queued (mirrors, Events) for up to `grace` seconds, then stop."""
        workers = [t for t in (*self._background, self._event_worker)
                   if t is not None and not t.done()]
        if not workers:
            return

        async def drain() -> None:
            await asyncio.gather(*self._background, return_exceptions=True)
            await self._events.join()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drain(), grace)
        for t in workers:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _send_events(self) -> None:
        assert self.kube is not None
        while True:
            reason, message, type = await self._events.get()
            try:
                notebook = self.notebook or await self.kube.get_notebook(
                    self.env.pod_namespace, self.env.notebook_name)
                self.notebook = notebook
                await self.kube.create_event(self.env.pod_namespace, notebook, reason,
                                             message, type)
            except KubeError as exc:
                log.warning("Event not created", extra={"reason": reason,
                                                        "why": status_text(exc)})
            except Exception:  # the worker must outlive one bad Event
                log.exception("Event not created", extra={"reason": reason})
            finally:
                self._events.task_done()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def migration_name(m: Migration) -> str:
    profile = f" (profile {m.profile})" if m.profile else ""
    return f"migration {m.id} to {m.target.value.upper()}{profile}"


def checkpoints_text(m: Migration) -> str:
    """The move's checkpoints for Events: "checkpoint <commit>", "3 checkpoints
    (<commit>, ...)" or "no checkpoint"."""
    commits = [ref.commit_id for ref in m.checkpoints]
    if not commits:
        return "no checkpoint"
    if len(commits) == 1:
        return f"checkpoint {commits[0]}"
    return f"{len(commits)} checkpoints ({', '.join(commits)})"


def requested_message(m: Migration) -> str:
    return (f"{migration_name(m)}: requested ({m.reason.value}) from pod {m.source_pod}; "
            f"{checkpoints_text(m)}")


def restore_summary(report: RestoreReport) -> str:
    text = f"state restored ({len(report.restored)} variable(s))"
    if report.not_restored:
        text += "; not restored: " + ", ".join(f"{n} ({r})" for n, r in report.not_restored)
    if report.detail:
        text += f"; {report.detail}"
    return text


def status_text(exc: KubeError) -> str:
    return f"{exc.status} {exc.reason}: {exc.message}" if exc.status else exc.message
