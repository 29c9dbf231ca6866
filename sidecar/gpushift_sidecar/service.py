"""The sidecar's parts wired together (`Sidecar`): runtime files and token, the migration
tracker and runner, the checkpoint watcher, the idle loop and the quota gate. The HTTP
adapter around it is `api`; `Sidecar.start_migration` is the one path that starts a
migration (`POST /migrations` and the idle move).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

from gpushift_core.kube import KubeError
from gpushift_core.notebook_stop import stop_refusal
from gpushift_sidecar import notebooks
from gpushift_sidecar.api_requests import ActivityReport, NamedCheckpoints, RestoreReport
from gpushift_sidecar.capacity_gate import CapacityGate, ConfigMapReader, NoFreeGpuRefused
from gpushift_sidecar.checkpoint_watcher import CheckpointInfo, CheckpointWatcher
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.idle_loop import IdleLoop, IdleLoopConfig, NotebookReader
from gpushift_sidecar.metrics import SidecarMetrics
from gpushift_sidecar.quota_gate import QuotaGate, QuotaReader, QuotaRefused
from gpushift_sidecar.runtime_config import RuntimeFiles
from gpushift_sidecar.startup_files import StartupFiles, checkpoint_json, make_startup_files
from gpushift_sidecar.state import Migration, Phase
from gpushift_sidecar.token import ApiToken
from gpushift_sidecar.tracker import MigrationInFlight, MigrationTracker, NotebookStopped

__all__ = ["MigrationRunner", "RunnerStartFailed", "Sidecar"]

log = logging.getLogger("gpushift.sidecar")


class MigrationRunner(Protocol):
    """Carries a migration through its phases (checkpoint, patch, restore)."""

    async def start(self, migration: Migration) -> None:
        """Take over `migration`, which is current and persisted. Called for a new one
        (phase `requested`) and, when the sidecar starts, for one that has not ended,
        in whatever phase it was left: carry on from there. Return promptly (run the
        steps in a task of your own) and record each step with `MigrationTracker`."""

    async def restored(self, migration: Migration, report: RestoreReport) -> Migration:
        """The server extension restored (or failed to restore) the state of `migration`,
        which is current and `restoring`: end it (done, or failed when not `report.ok`)
        and return it. Persist before the first await: concurrent reports race here."""

    async def checkpoints_named(self, migration: Migration, named: NamedCheckpoints
                                ) -> Migration:
        """The server extension names the checkpoints of `migration`, which is current,
        `checkpointing` and waits for them (`checkpoints_to_come`) — or says it could not
        save the notebooks (`named.error`: fail it). Return it, persisted."""


class RunnerStartFailed(Exception):
    """The runner did not take the migration; it was marked failed (`migration`)."""

    def __init__(self, migration: Migration) -> None:
        super().__init__(migration.error or "the migration could not start")
        self.migration = migration


@dataclass
class Sidecar:
    """Everything the API serves, wired together once by `Sidecar.create`."""

    env: SidecarEnv
    token: ApiToken
    files: RuntimeFiles
    tracker: MigrationTracker
    metrics: SidecarMetrics
    runner: MigrationRunner
    activity: dict[str, ActivityReport] = field(default_factory=dict)
    """The latest activity report of each kernel, by kernel id (for the idle timer)."""
    kube: NotebookReader | None = None
    """Reads this pod's Notebook before a move (None: no API access)."""
    watcher: CheckpointWatcher = field(init=False)
    """The kishu checkpoints of the registered notebooks (the runner verifies with it)."""
    idle: IdleLoop = field(init=False)
    """The idle timer and its loop (the loop runs on a GPU pod only)."""
    quotas: QuotaGate = field(init=False)
    """The ResourceQuota pre-check of a move to GPU."""
    capacity: CapacityGate = field(init=False)
    """The published GPU capacity (GET /profiles, the no_free_gpu pre-check)."""

    @classmethod
    def create(cls, env: SidecarEnv, runner: MigrationRunner,
               metrics: SidecarMetrics | None = None,
               tracker: MigrationTracker | None = None, *,
               kube: NotebookReader | None = None,
               idle_config: IdleLoopConfig | None = None,
               quotas: QuotaReader | None = None,
               capacity: ConfigMapReader | None = None,
               startup: StartupFiles | None = None) -> Sidecar:
        """`tracker`: the one the runner was built with (default: a new one on the state
        file of `env`). `kube`: reads the Notebook's idle annotations (None: the admin's
        default timeout applies). `quotas`: reads the namespace's ResourceQuotas before a
        move to GPU (None: no pre-check). `capacity`: reads the published GPU capacity
        (None: unknown). `startup`: the token, runtime files and tracker the sidecar
        made and wrote as it started (`write_startup_files`; None: made here, the files
        not written yet)."""
        metrics = metrics or SidecarMetrics()
        startup = startup or make_startup_files(env, tracker)
        token, files, tracker = startup.token, startup.files, startup.tracker
        files.report_writes_to(metrics.record_write)
        sidecar = cls(env, token, files, tracker, metrics, runner, kube=kube)
        sidecar.watcher = CheckpointWatcher(sidecar.checkpoint_changed,
                                            root=env.workspace_dir)
        sidecar.idle = IdleLoop(sidecar, kube, idle_config)
        sidecar.quotas = QuotaGate(env, quotas)
        sidecar.capacity = CapacityGate(env, capacity)
        tracker.on_change = sidecar.migration_changed
        if tracker.current is not None:
            metrics.show_phase(tracker.current)
        return sidecar

    def migration_changed(self, previous: Migration | None, migration: Migration) -> None:
        self.metrics.record_change(previous, migration)
        checkpoint = self.files.last_checkpoint
        if previous is None or previous.id != migration.id:  # a new migration
            checkpoint = checkpoint_json(migration) or checkpoint
        self.files.update(migration=migration.summary(), last_checkpoint=checkpoint)
        log.info("migration step", extra={
            "notebook": migration.notebook, "namespace": migration.namespace,
            "migration": migration.id, "phase": migration.phase.value,
            "target": migration.target.value, "error": migration.error})

    def checkpoint_changed(self, notebook_path: str, info: CheckpointInfo | None) -> None:
        """The watcher saw a notebook's latest complete commit change (on the loop)."""
        self.refresh_last_checkpoint()

    def refresh_last_checkpoint(self) -> None:
        """runtime-config.json's `lastCheckpoint`: the most recent watched commit."""
        newest = notebooks.latest(self.watcher)
        if newest is None:
            return
        document = notebooks.runtime_json(newest)
        known = self.files.last_checkpoint or {}
        if (known.get("notebookPath"), known.get("commitId")) != (
                document["notebookPath"], document["commitId"]):
            self.files.update_last_checkpoint(document)

    async def start_migration(self, migration: Migration) -> Migration:
        """Make `migration` (new, `requested`) current and hand it to the runner: the one
        path of `POST /migrations` and of the idle move. Raises MigrationInFlight (another
        is active), NotebookStopped (Kubeflow stopped the Notebook: no pod to move;
        nothing changed), QuotaRefused (a move to GPU over a ResourceQuota; nothing changed),
        NoFreeGpuRefused (fresh capacity says no node has the profile's GPUs free; nothing
        changed),
        OSError (the state could not be written; nothing changed) or RunnerStartFailed
        (the runner refused it; it is persisted as failed)."""
        if self.tracker.current is not None and self.tracker.current.active:
            raise MigrationInFlight(self.tracker.current)  # before the quota's await
        await self.refuse_when_stopped()
        refusal = await self.quotas.check(migration)
        if refusal is not None:
            raise QuotaRefused(refusal)
        no_gpu = await self.capacity.check(migration)
        if no_gpu is not None:
            raise NoFreeGpuRefused(no_gpu)
        # No await between the in-flight check in begin() and the write: of two
        # concurrent requests exactly one gets here first and the other sees its migration.
        self.tracker.begin(migration)
        try:
            await self.runner.start(migration)
        except Exception as exc:
            log.exception("the migration runner did not start",
                          extra={"migration": migration.id})
            failed = self.tracker.advance(migration.id, Phase.FAILED,
                                          error=f"the migration could not start: {exc}")
            raise RunnerStartFailed(failed) from exc
        return migration

    async def refuse_when_stopped(self) -> None:
        """Raise NotebookStopped when the Notebook carries Kubeflow's stop annotation. An
        unreadable Notebook does not refuse: the patching step reads it again and cancels
        a move on a stopped Notebook (`migration_steps.plan_patch`)."""
        if self.kube is None:
            return
        try:
            notebook = await self.kube.get_notebook(self.env.pod_namespace,
                                                    self.env.notebook_name)
        except KubeError as exc:
            log.warning("cannot read the Notebook before a move; the patch step checks it",
                        extra={"why": f"{exc.status} {exc.reason}"})
            return
        refusal = stop_refusal(notebook)
        if refusal is not None:
            raise NotebookStopped(refusal)

    async def close(self) -> None:
        """Stop the checkpoint watcher's threads (joined off the event loop)."""
        await asyncio.to_thread(self.watcher.stop)

    async def resume(self) -> None:
        """Hand an unfinished migration found on disk back to the runner."""
        current = self.tracker.current
        if current is not None and current.active:
            log.info("resuming migration", extra={"migration": current.id,
                                                  "phase": current.phase.value})
            await self.runner.start(current)


