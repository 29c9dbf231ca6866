"""The migration runner: carries a migration through its phases, one verified step at a time.

    requested -> checkpointing -> checkpointed -> patching -> recreating -> restoring -> done

* checkpointing: a move whose checkpoints are still being made (`checkpoints_to_come`)
  waits for the server extension to name them (`checkpoints_named`, called by
  `POST /migrations/current/checkpoints`) up to `save_timeout`, from the persisted
  history; then every kishu commit the migration names (one per notebook) is verified
  complete on the workspace volume (`checkpoint_wait`: its id in the database, no
  `-journal` file), waiting up to `checkpoint_timeout` for kishu to finish writing it;
  not verified, not named in time, or not saved -> failed with the reason, and the
  Notebook is not touched. A migration that names no checkpoint goes on and notes that
  the state will not be restored.
* patching: one JSON Patch against a fresh read of the Notebook (`migration_steps.plan_patch`):
  the move, the migration mirror in `recreating` and the previous-profile record, together.
  The previous profile is recorded in the state file too. A Notebook already as the
  target wants -> done, with a note. A stopped Notebook (Kubeflow's Stop or culler) ->
  cancelled: nothing is patched.
* recreating: the StatefulSet controller replaces this pod. The new pod's sidecar starts
  with the state file on the same volume and goes on to `restoring` (or `rolled_back` /
  `failed` / `cancelled`, when the cluster-side guard marked the mirror so).
* restoring -> done (or failed) when the server extension reports the restore
  (`restored`, called by `POST /migrations/current/restore`); -> failed when none was
  reported within `restore_timeout` of entering `restoring` (`restore_deadline`, from the
  persisted history: a tab closed during the move never leaves the move, and the GPU,
  held; the checkpoint stays for the notebook's next opening).

Each change is persisted by the `MigrationTracker` before the next step starts, mirrored
in the Notebook annotation and told as an Event on the Notebook (`notebook_reporter`).
The mirror and the Events are best effort (logged when the API refuses them); the patch
is not: an API error that the client's retries did not overcome fails the migration with
the API's Status message.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from dataclasses import dataclass
from typing import Any

from gpushift_core.kube import KubeError
from gpushift_core.move_plan import PlanError
from gpushift_core.timestamps import iso_utc
from gpushift_sidecar.api_requests import NamedCheckpoints, RestoreReport
from gpushift_sidecar.checkpoint_wait import (
    Verify,
    await_complete,
    await_named,
    verify_checkpoint,
)
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.migration_mirror import read_mirror
from gpushift_sidecar.migration_steps import (
    NO_CHECKPOINT_NOTE,
    OldPodAction,
    PatchDecision,
    PatchKind,
    ResumeAction,
    new_pod_outcome,
    old_pod_outcome,
    plan_patch,
    restore_deadline,
    restore_timeout_error,
    resume_action,
    runs_on_target,
    save_deadline,
    save_timeout_error,
    spec_on_target,
)
from gpushift_sidecar.notebook_reporter import (
    NotebookApi,
    NotebookReporter,
    checkpoints_text,
    migration_name,
    requested_message,
    restore_summary,
    status_text,
)
from gpushift_sidecar.state import Migration, Phase, Target
from gpushift_sidecar.tracker import MigrationTracker

__all__ = ["RunnerConfig", "StepRunner", "verify_checkpoint"]

log = logging.getLogger("gpushift.sidecar")

@dataclass(frozen=True)
class RunnerConfig:
    checkpoint_timeout: float = 60.0
    """Seconds to wait for the named kishu commit to be complete."""
    checkpoint_poll: float = 0.1
    """Seconds between looks at the kishu database while waiting."""
    save_timeout: float = 600.0
    """Seconds a move that waits for the server extension to name its checkpoints
    (`checkpoints_to_come`) stays `checkpointing`, counted from entering it (a
    restarted sidecar keeps the deadline); then it fails, nothing changed."""
    restore_timeout: float = 600.0
    """Seconds a migration stays `restoring` without a restore report before it ends
    failed (the checkpoint kept)."""
    stop_grace: float = 5.0
    """On SIGTERM, how long a patch in flight may take to be persisted."""
    event_grace: float = 2.0
    """On SIGTERM, how long queued Events may take to be sent."""


class StepRunner:
    """The `api.MigrationRunner` of the sidecar. `kube` None: no API access (`kube_problem`
    says why); a migration then fails when it gets to the patch."""

    def __init__(self, env: SidecarEnv, tracker: MigrationTracker, kube: NotebookApi | None,
                 *, config: RunnerConfig | None = None, verify: Verify | None = None,
                 kube_problem: str = "no Kubernetes API configuration") -> None:
        self.env = env
        self.tracker = tracker
        self.kube = kube
        self.config = config or RunnerConfig()
        self.verify: Verify = verify or functools.partial(verify_checkpoint,
                                                          workspace=env.workspace_dir)
        self.kube_problem = kube_problem
        self.report = NotebookReporter(env, tracker, kube)
        self._task: asyncio.Task[None] | None = None
        self._patched_here: str | None = None
        """The migration this process patched: it runs in the pod that goes away."""
        self._restore_deadline: asyncio.Task[None] | None = None
        """Ends the `restoring` migration at its deadline (cancelled when it ends)."""
        self._named = asyncio.Event()
        """Set when the server extension names a move's checkpoints (or its failure)."""

    # -- api.MigrationRunner ------------------------------------------------------------

    async def start(self, migration: Migration) -> None:
        # The driver of the previous migration may still be writing its last mirror
        # (its migration ended, e.g. by `restored`): the new one starts after it.
        previous = self._task if self._task is not None and not self._task.done() else None
        self._disarm_restore_deadline()
        self._task = asyncio.create_task(self._drive(migration.id, after=previous),
                                         name=f"migration-{migration.id}")

    async def restored(self, migration: Migration, report: RestoreReport) -> Migration:
        """The server extension's restore report: `restoring` -> done / failed. Persisted
        before this coroutine first waits, so of two concurrent reports one wins."""
        error = None
        if not report.ok:
            error = (f"the state was not restored: {report.detail or 'no detail given'} "
                     "(the checkpoint is still on the workspace volume)")
        done = self.tracker.finish_restore(migration.id, {
            **report.to_json(), "at": iso_utc(dt.datetime.now(dt.UTC))}, error=error)
        self._disarm_restore_deadline()
        if error:
            self.report.event("MigrationFailed", f"{migration_name(done)}: {error}", "Warning")
        else:
            self.report.event("MigrationDone", f"{migration_name(done)}: {restore_summary(report)}")
        self.report.mirror_later()
        return done

    async def checkpoints_named(self, migration: Migration, named: NamedCheckpoints
                                ) -> Migration:
        """The server extension saved the notebooks of the move that waits for them
        (persisted, then the runner goes on to verify them) — or could not: the move
        fails before anything was changed."""
        if named.error is not None:
            await self._fail(migration, f"the notebooks were not saved, nothing was "
                                        f"changed: {named.error}")
            failed = self.tracker.current
            assert failed is not None
            self._named.set()
            return failed
        updated = self.tracker.name_checkpoints(migration.id, named.checkpoint,
                                                named.other_checkpoints)
        self._named.set()
        return updated

    async def stop(self) -> None:
        """On SIGTERM: let a patch in flight be persisted, then stop; send queued Events."""
        self._disarm_restore_deadline()
        task = self._task
        if task is not None and not task.done():
            current = self.tracker.current
            if current is not None and current.phase is Phase.PATCHING:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(task), self.config.stop_grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.report.stop(self.config.event_grace)

    # -- the steps ------------------------------------------------------------------------

    async def _drive(self, migration_id: str, after: asyncio.Task[None] | None = None,
                     ) -> None:
        """Run the steps of the migration until it ends or waits for someone else."""
        if after is not None:
            await asyncio.gather(after, return_exceptions=True)
        try:
            while True:
                m = self.tracker.current
                if m is None or m.id != migration_id or not m.active:
                    return
                if not await self._step(m):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: the user still gets an answer
            log.exception("migration step crashed", extra={"migration": migration_id})
            m = self.tracker.current
            if m is not None and m.id == migration_id and m.active:
                try:
                    await self._fail(m, f"internal error in the sidecar: {exc}")
                except Exception:
                    log.exception("the migration could not be marked failed",
                                  extra={"migration": migration_id})

    async def _step(self, m: Migration) -> bool:
        """One step; True when the phase advanced and the next step may run."""
        if m.phase is Phase.RECREATING:
            if self._patched_here == m.id:
                return False  # this pod is about to be replaced: wait for SIGTERM
            uid = await self.report.pod_uid()
            action = resume_action(m, uid, runs_on_target(m, self.env.gpu,
                                                          self.env.settings))
        else:
            action = resume_action(m, "", False)
        log.debug("migration step", extra={"migration": m.id, "action": action.value})
        match action:
            case ResumeAction.REQUEST:
                self.report.event("MigrationRequested", requested_message(m))
                await self._advance(m, Phase.CHECKPOINTING)
                return True
            case ResumeAction.VERIFY:
                return await self._checkpoint(m)
            case ResumeAction.PATCH:
                if m.phase is Phase.CHECKPOINTED:
                    await self._advance(m, Phase.PATCHING)
                    return True
                return await self._patch(m)
            case ResumeAction.NEW_POD:
                return await self._arrived(m)
            case ResumeAction.OLD_POD:
                return await self._still_old_pod(m)
            case ResumeAction.AWAIT_RESTORE:
                self._arm_restore_deadline(m)
                return False
            case ResumeAction.NOTHING:
                return False

    async def _await_named(self, m: Migration) -> bool:
        """Until the server extension names the checkpoints (True: go on) or the save
        deadline passes (the move fails; False)."""
        current = await await_named(self.tracker, self._named, m.id,
                                    save_deadline(m, self.config.save_timeout))
        if current is not None and current.checkpoints_to_come:
            await self._fail(current, save_timeout_error(self.config.save_timeout))
            return False
        return current is not None

    async def _checkpoint(self, m: Migration) -> bool:
        """Verify every checkpoint of the move (one per notebook); one not verified in
        its deadline fails the move before anything is patched. A move whose checkpoints
        are still being made waits for them first (`_await_named`)."""
        if m.checkpoints_to_come:
            return await self._await_named(m)
        refs = m.checkpoints
        if not refs:
            if NO_CHECKPOINT_NOTE not in m.notes:  # not again when resumed
                self.tracker.add_note(m.id, NO_CHECKPOINT_NOTE)
            self.report.event("CheckpointSkipped", f"{migration_name(m)}: {NO_CHECKPOINT_NOTE}")
            await self._advance(m, Phase.CHECKPOINTED)
            return True
        verdicts = await asyncio.gather(*(
            await_complete(self.verify, m.id, ref, timeout=self.config.checkpoint_timeout,
                           poll=self.config.checkpoint_poll) for ref in refs))
        for ref, verdict in zip(refs, verdicts, strict=True):
            if not verdict.complete:
                await self._fail(m, f"checkpoint {ref.commit_id} of {ref.notebook_path} not "
                                    f"verified within {self.config.checkpoint_timeout:g}s "
                                    f"({verdict.status.value}): {verdict.reason}")
                return False
        for ref, verdict in zip(refs, verdicts, strict=True):
            self.report.event("CheckpointVerified", f"{migration_name(m)}: kishu commit "
                              f"{ref.commit_id} is complete in {verdict.db_path}")
        await self._advance(m, Phase.CHECKPOINTED)
        return True

    async def _patch(self, m: Migration, *, again: bool = False) -> bool:
        """The patching step (`again`: a restarted old pod patching in `recreating`)."""
        if self.kube is None:
            await self._fail(m, f"cannot patch the Notebook: {self.kube_problem}")
            return False
        now = dt.datetime.now(dt.UTC)
        decisions: list[PatchDecision] = []

        def build(notebook: dict[str, Any]) -> list[dict[str, Any]]:
            decision = plan_patch(notebook, m, self.env.settings, now=now,
                                  container=self.env.notebook_container or None,
                                  held=self.env.gpu, trust_mirror=not again)
            decisions.append(decision)
            return decision.operations

        try:
            result = await self.kube.patch_notebook(self.env.pod_namespace,
                                                    self.env.notebook_name, build)
        except PlanError as exc:
            await self._fail(m, f"the move cannot be planned: {exc}")
            return False
        except KubeError as exc:
            await self._fail(m, f"patching Notebook {self.env.pod_namespace}/"
                                f"{self.env.notebook_name} failed: {status_text(exc)}")
            return False
        self.report.notebook = result.notebook
        decision = decisions[-1]
        if decision.kind is PatchKind.CANCELLED:
            await self._ended_elsewhere(m, Phase.CANCELLED,
                                        decision.reason or "the migration was cancelled")
            return False
        if decision.previous_profile is not None and (
                decision.kind is PatchKind.PATCH or m.previous_profile is None):
            self.tracker.record_previous_profile(m.id, decision.previous_profile)
        if decision.kind is PatchKind.NOTHING:
            if again:  # the spec shows the target after all
                self._patched_here = m.id
                return False
            note = (f"the Notebook already was as the move to {m.target.value.upper()} "
                    "wants it: nothing patched, no pod recreated")
            self.tracker.add_note(m.id, note)
            current = self.tracker.current
            assert current is not None
            done = await self._advance(current, Phase.DONE)
            self.report.event("MigrationDone", f"{migration_name(done)}: {note}")
            return False
        if decision.kind is PatchKind.PATCH:
            assert decision.plan is not None
            self._patched_here = m.id  # this pod is the one the patch replaces
            self.report.event("NotebookPatched", f"{migration_name(m)}: "
                              + ("patched again: " if again else "") + decision.plan.summary)
        else:
            log.info("the patch had landed already", extra={"migration": m.id})
        if again:
            return False
        # The mirror went with the patch (same time stamp): no second write.
        await self._advance(m, Phase.RECREATING, now=now, mirror=False)
        return True

    async def _arrived(self, m: Migration) -> bool:
        """In the pod that replaced the source pod: restore, or the move was undone."""
        notebook = await self.report.read_notebook()
        on_target = runs_on_target(m, self.env.gpu, self.env.settings)
        phase, error = new_pod_outcome(m, read_mirror(notebook), on_target,
                                       self.env.pod_name)
        if phase is not Phase.RESTORING:
            assert error is not None
            await self._ended_elsewhere(m, phase, error)
            return False
        restoring = await self._advance(m, Phase.RESTORING,
                                        drop_previous=m.target is Target.CPU)
        what = (f"restoring the kernel state from {checkpoints_text(m)}" if m.checkpoints
                else NO_CHECKPOINT_NOTE)
        self.report.event("MigrationRestoring", f"{migration_name(restoring)}: pod "
                          f"{self.env.pod_name} runs on {m.target.value.upper()}; {what}")
        return True

    async def _still_old_pod(self, m: Migration) -> bool:
        """A sidecar restarted in the source pod while the migration is `recreating`."""
        notebook = await self.report.read_notebook()
        if notebook is None:
            return False  # nothing to decide on; the pod goes away or the guard acts
        try:
            shows_target = spec_on_target(notebook, m, self.env.settings,
                                          container=self.env.notebook_container or None,
                                          held=self.env.gpu)
        except PlanError as exc:
            log.warning("cannot compare the Notebook with the target", extra={
                "migration": m.id, "why": str(exc)})
            return False
        action, verdict = old_pod_outcome(m, read_mirror(notebook), shows_target)
        if action is OldPodAction.GUARD:
            assert verdict is not None
            await self._ended_elsewhere(m, *verdict)
            return False
        if action is OldPodAction.WAIT:
            self._patched_here = m.id
            log.info("the Notebook shows the target; waiting for this pod to be replaced",
                     extra={"migration": m.id})
            return False
        log.warning("the Notebook no longer shows the target; patching again",
                    extra={"migration": m.id})
        return await self._patch(m, again=True)

    # -- the restore deadline -------------------------------------------------------------

    def _arm_restore_deadline(self, m: Migration) -> None:
        self._disarm_restore_deadline()
        deadline = restore_deadline(m, self.config.restore_timeout)
        if deadline is not None:
            self._restore_deadline = asyncio.create_task(
                self._expire_restore(m.id, deadline), name=f"restore-deadline-{m.id}")

    def _disarm_restore_deadline(self) -> None:
        task, self._restore_deadline = self._restore_deadline, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _expire_restore(self, migration_id: str, deadline: dt.datetime) -> None:
        wait = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
        await asyncio.sleep(max(0.0, wait))
        # Disarming cancels the wait only: an ending that began is written out whole
        # (state file, mirror, Event).
        await asyncio.shield(self._end_at_restore_deadline(migration_id))

    async def _end_at_restore_deadline(self, migration_id: str) -> None:
        m = self.tracker.current
        if m is None or m.id != migration_id or m.phase is not Phase.RESTORING:
            return  # the restore was reported meanwhile
        error = restore_timeout_error(m, self.config.restore_timeout)
        log.warning("no restore reported in time; the move ends", extra={
            "migration": m.id, "timeout_s": self.config.restore_timeout})
        await self._fail(m, error)

    # -- persisting, mirroring, telling ---------------------------------------------------

    async def _advance(self, m: Migration, phase: Phase, *, error: str | None = None,
                       now: dt.datetime | None = None, mirror: bool = True,
                       drop_previous: bool = False) -> Migration:
        new = self.tracker.advance(m.id, phase, error=error, now=now)
        if mirror:
            await self.report.mirror(drop_previous=new.id if drop_previous else None)
        return new

    async def _ended_elsewhere(self, m: Migration, phase: Phase, error: str) -> None:
        """Rolled back, failed or cancelled by the guard, the Notebook was changed back,
        or it was stopped (cancelled: a Normal Event; the checkpoint stays)."""
        ended = await self._advance(m, phase, error=error)
        reason, kind = {Phase.ROLLED_BACK: ("MigrationRolledBack", "Warning"),
                        Phase.CANCELLED: ("MigrationCancelled", "Normal")}.get(
                            phase, ("MigrationFailed", "Warning"))
        self.report.event(reason, f"{migration_name(ended)}: {error}", kind)

    async def _fail(self, m: Migration, error: str) -> None:
        failed = await self._advance(m, Phase.FAILED, error=error)
        self.report.event("MigrationFailed", f"{migration_name(failed)}: {error}", "Warning")
