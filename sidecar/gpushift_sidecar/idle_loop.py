"""The idle loop of a GPU pod: feeds the `IdleTimer`, and moves the notebook to CPU when
the GPU sat idle for the timeout — with or without a browser open.

Inputs, on a GPU pod only (the env's GPU facts; on a CPU pod the timer is inert):
* `POST /activity` reports of the server extension (`report`): a GPU cell running or
  finished in a kernel, and the GPU utilisation it measured in the notebook container
  (`gpu_utilization_percent`: the device plugin gives the GPU devices to the container
  that requests them, so NVML in the sidecar usually sees no GPU);
* an NVML sample taken here every tick (`gpu_utilization.sample`), used when not None;
* the Notebook's annotations, read at start and every `annotations_seconds`: the timeout
  override and the pin (see `gpushift_sidecar.idle`), within the admin's bounds, and
  Kubeflow's server type (`notebooks.kubeflow.org/server-type`): for a type the admin
  does not list in `server_types.inject` the optimizer is off (`optimizer_off`): no idle
  move, and `POST /migrations` is refused;
* the notebook side's registration (`notebook_side_seen`): the timer runs only once
  gpushift's server extension has reported from this pod (any authenticated write to
  the API: an activity report, a notebook registration, ...). Before that `GET /idle`
  says `inert`, "notebook side not registered": a pod without the extension (a plain
  Jupyter image, VSCode, RStudio) is never moved off its GPU on idle, since its GPU
  work cannot be seen.

Every `tick_seconds` the timer advances. The states the API shows (`GET /idle`, and
`idle` in runtime-config.json, written on each change of state, timeout or pin, not
every tick): `active`, `warning` (the last `warning_seconds` before the move; `POST
/idle/stay` starts the timeout over), `moving` (the move was decided or a migration
away from this pod is in flight), `inert` (not a GPU pod), `pinned`.

The move never comes without the full warning: when the timer runs out without one
(the timeout was lowered, the process was stopped for a while), the warning starts
then. The move itself is the path `POST /migrations` takes (`Sidecar.start_migration`):
target cpu, reason idle, the most recent complete kishu checkpoint of the registered
notebooks, no pending cell. While a migration is in flight (one arriving here, restoring
its state, included) the timer does not run: the timeout counts from the migration's
end; an idle move that fails or is rolled back starts it over too, so a later timeout
tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gpushift_core.admin_settings import server_type_of
from gpushift_core.kube import KubeError
from gpushift_sidecar import gpu_utilization, notebooks
from gpushift_sidecar.api_requests import ActivityReport
from gpushift_sidecar.gpu_busy import GpuBusyMeter, gpu_work_now
from gpushift_sidecar.idle import IdleState, IdleTimer, IdleTransition
from gpushift_sidecar.idle_move import idle_migration
from gpushift_sidecar.idle_reporting import api_state, idle_annotations, moving_away
from gpushift_sidecar.tracker import MigrationInFlight, NotebookStopped

if TYPE_CHECKING:
    from gpushift_sidecar.service import Sidecar

log = logging.getLogger("gpushift.sidecar")

Sampler = Callable[[], "float | None"]



@dataclass(frozen=True)
class IdleLoopConfig:
    tick_seconds: float = 1.0
    """How often the timer advances (and NVML is sampled)."""
    annotations_seconds: float = 30.0
    """How often the Notebook's annotations (timeout override, pin) are read again."""
    report_ttl_seconds: float = 30.0
    """How long a report of a running GPU cell or a busy kernel counts unless confirmed
    again (the server extension confirms every few seconds, `activity_interval`): a tab
    closed mid-cell or a notebook side gone silent never holds the GPU for ever."""
    save_wait_seconds: float = 600.0
    """How long the idle move waits for a checkpoint kishu is still writing (the one the
    warning started, of a large state) so that it moves the latest state, not an older
    one; past it, no move: the timer starts over and the idle state says why."""
    save_recheck_seconds: float = 2.0
    """While it waits, how often it looks again."""


class NotebookReader(Protocol):
    """What the loop needs of `gpushift_core.kube.KubeApi`."""

    async def get_notebook(self, namespace: str, name: str) -> dict[str, Any]: ...


# -- the loop ------------------------------------------------------------------------


class IdleLoop:
    """One notebook's idle timer, its inputs and its move. `run()` is the loop."""

    def __init__(self, sidecar: Sidecar, kube: NotebookReader | None = None,
                 config: IdleLoopConfig | None = None, *,
                 sampler: Sampler = gpu_utilization.sample,
                 clock: Callable[[], float] = time.time) -> None:
        self.sidecar = sidecar
        self.kube = kube
        self.config = config or IdleLoopConfig()
        self.sampler = sampler
        self.clock = clock
        env = sidecar.env
        self.on_gpu = env.gpu is not None
        self.timer = IdleTimer(env.settings.idle, on_gpu=self.on_gpu, now=clock(),
                               registered=False,
                               report_ttl=self.config.report_ttl_seconds)
        self.server_type: str | None = None
        """The Notebook's server type once read ("" when it has none; None: not yet)."""
        self._warned_at: float | None = None
        """When the warning the coming move is due after began (None: none shown)."""
        self._move_id: str | None = None
        """The idle move this loop started, while it is current."""
        self._save_wait_since: float | None = None
        """Since when the idle move waits for a checkpoint being written."""
        self._utilization: dict[str, Any] | None = None
        self.gpu_busy = GpuBusyMeter()
        """The seconds of GPU work on this pod (`gpu_busy.GpuActivityPublisher`)."""
        self._published: tuple[Any, ...] | None = None
        self._annotation_problem: str | None = None

    # -- inputs ----------------------------------------------------------------------

    def report(self, report: ActivityReport) -> None:
        """A `POST /activity` report of the server extension."""
        self.timer.report_activity(report.kernel_id,
                                   gpu_cell_running=report.gpu_cell_running,
                                   gpu_cell_finished_at=report.gpu_cell_finished_at,
                                   now=report.received_at)
        if report.busy_kernels is not None and report.gpu_cells_running is not None:
            self.timer.observe_kernels(busy=report.busy_kernels,
                                       gpu_cells_running=report.gpu_cells_running,
                                       now=report.received_at)
        if report.gpu_utilization_percent is not None:
            self._observe(report.gpu_utilization_percent, "server-extension",
                          report.received_at)
        self._settle(report.received_at)

    def notebook_side_seen(self, now: float | None = None) -> None:
        """An authenticated write to the API: only a process holding this pod's token,
        gpushift's server extension, sends one. The idle timer starts (once)."""
        now = self.clock() if now is None else now
        if self.timer.register_notebook_side(now):
            log.info("the notebook side registered: the idle timer runs",
                     extra={"notebook": self.sidecar.env.notebook_name, "on_gpu": self.on_gpu})
            self._publish(now)

    @property
    def optimizer_off(self) -> str | None:
        """Why the optimizer is off for this notebook's server type (None: on, or the
        type is not known yet)."""
        return self.timer.server_type_off

    def apply_server_type(self, server_type: str, now: float) -> None:
        """The Notebook's server type, read: inert for a type the admin keeps off."""
        reason = self.sidecar.env.settings.server_types.inert_reason(server_type)
        if server_type != self.server_type:
            log.info("server type", extra={"server_type": server_type or "(none: jupyter)",
                                           "optimizer_off": reason})
        self.server_type = server_type
        self.timer.set_server_type_off(reason, now)
        self.sidecar.files.update_optimizer_off(reason)
        self._publish(now)

    def forget_kernel(self, kernel_id: str, now: float) -> None:
        self.timer.forget_kernel(kernel_id, now)
        self._settle(now)

    def apply_annotations(self, annotations: Mapping[str, str], now: float) -> None:
        """The Notebook's annotations, read again: timeout override and pin."""
        was_pinned, before = self.timer.pinned, self.timer.timeout
        self.timer.configure(annotations)
        if was_pinned and not self.timer.pinned:
            self._restart(now, "no longer pinned: the idle timer starts over")
        if self.timer.timeout != before or was_pinned != self.timer.pinned:
            log.info("idle timer configured", extra={
                "timeout": self.timer.timeout.seconds, "source": self.timer.timeout.source,
                "pinned": self.timer.pinned, "why": self.timer.timeout.reason})
        self._publish(now)

    def set_user_timeout(self, seconds: int | None, now: float | None = None) -> None:
        """The user's idle timeout from JupyterLab's settings (None: the default)."""
        now = self.clock() if now is None else now
        before = self.timer.timeout
        self.timer.set_user_timeout(seconds)
        if self.timer.timeout != before:
            log.info("idle timer configured", extra={
                "timeout": self.timer.timeout.seconds, "source": self.timer.timeout.source,
                "why": self.timer.timeout.reason})
        self._publish(now)

    def stay(self, now: float | None = None) -> bool:
        """The user's "stay on GPU": a fresh timeout. False when there is no warning."""
        now = self.clock() if now is None else now
        if self.state(now) != "warning":
            return False
        self.timer.stay(now)
        self._warned_at = None
        log.info("the user stays on the GPU", extra={"notebook": self.sidecar.env.notebook_name})
        self._publish(now)
        return True

    # -- outputs ---------------------------------------------------------------------

    def state(self, now: float) -> str:
        return api_state(self.timer.state(now), moving_away(self.sidecar.tracker.current)
                         and self.on_gpu)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """`GET /idle` (and runtime-config.json's `idle`, when it changes)."""
        now = self.clock() if now is None else now
        snap = self.timer.snapshot(now)
        snap["state"] = self.state(now)
        snap["gpu_utilization"] = self._utilization
        current = self.sidecar.tracker.current
        snap["migration"] = (current.id if current is not None and self.on_gpu
                             and moving_away(current) else None)
        snap["at"] = now
        return snap

    def current(self, now: float | None = None) -> dict[str, Any]:
        """`snapshot`, with runtime-config.json brought up to date first: what the API
        shows, the file says (the tick may not have run since the state changed)."""
        now = self.clock() if now is None else now
        self._publish(now)
        return self.snapshot(now)

    # -- the loop --------------------------------------------------------------------

    def step(self, now: float, sample: float | None) -> IdleTransition | None:
        """One tick: the local NVML sample, the timer, the warning-first rule; publishes
        a change of state. Returns the warning or the move when they happen."""
        if sample is not None:
            self._observe(sample, "sidecar", now)
        self._move_ended(now)
        self._wait_for_move(now)
        transition = self.timer.tick(now)
        warning = self.timer.settings.warning_seconds
        if (transition is not None and transition.action == "move"
                and self._warned_at is None and warning > 0):
            # Never a move without the full warning: it starts now.
            self.timer.reset(now - max(0, transition.timeout - warning),
                             "the warning comes first")
            transition = self.timer.tick(now)
        if transition is not None and transition.action == "warn":
            self._warned_at = now
            log.info("idle warning", extra={
                "notebook": self.sidecar.env.notebook_name, "timeout": transition.timeout,
                "move_at": transition.warning_until})
        self._settle(now)
        self.gpu_busy.observe(gpu_work_now(
            self.timer.gpu_cells_running(now), self._utilization,
            self.timer.settings.utilization_threshold_percent,
            self.config.report_ttl_seconds, now), now)
        return transition

    async def advance(self, now: float, sample: float | None) -> IdleTransition | None:
        """One tick (`step`), and the move when the timer ran out."""
        transition = self.step(now, sample)
        if transition is not None and transition.action == "move":
            await self._move(transition)
        return transition

    async def run(self) -> None:
        """Tick until cancelled; on a CPU pod only the server type is read (it decides
        whether moves are accepted), until it is known."""
        if not self.on_gpu:
            while self.kube is not None and self.server_type is None:
                await self.read_annotations()
                if self.server_type is None:
                    await asyncio.sleep(self.config.annotations_seconds)
            return
        watcher = asyncio.create_task(self._watch_annotations())
        self._publish(self.clock())
        try:
            while True:
                try:
                    sample = await asyncio.to_thread(self.sampler)
                    await self.advance(self.clock(), sample)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the loop must outlive one bad tick
                    log.exception("idle tick failed")
                await asyncio.sleep(self.config.tick_seconds)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def read_annotations(self) -> None:
        """Read the Notebook once and apply its idle annotations (best effort)."""
        if self.kube is None:
            return
        env = self.sidecar.env
        try:
            notebook = await self.kube.get_notebook(env.pod_namespace, env.notebook_name)
        except KubeError as exc:
            problem = f"{exc.status} {exc.reason}: {exc.message}"
            if problem != self._annotation_problem:
                log.warning("cannot read the Notebook's idle annotations; keeping the "
                            "timeout as it is", extra={"why": problem})
            self._annotation_problem = problem
            return
        self._annotation_problem = None
        self.apply_server_type(server_type_of(notebook), self.clock())
        self.apply_annotations(idle_annotations(notebook), self.clock())

    async def _watch_annotations(self) -> None:
        if self.kube is None:
            log.info("no Kubernetes API: the idle timeout is the admin's default",
                     extra={"timeout": self.timer.timeout.seconds})
            return
        while True:
            try:
                await self.read_annotations()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the Notebook's idle annotations failed")
            await asyncio.sleep(self.config.annotations_seconds)

    async def _move(self, transition: IdleTransition) -> None:
        """The timer ran out: move to CPU, unless a migration is in flight."""
        sidecar = self.sidecar
        current = sidecar.tracker.current
        if current is not None and current.active:
            self._restart(self.clock(), f"migration {current.id} is {current.phase}: the "
                                        "idle timer starts over")
            return
        writing = await asyncio.to_thread(notebooks.being_written, sidecar.watcher)
        if writing and self._wait_for_save(transition, writing):
            return
        self._save_wait_since = None
        migration = await idle_migration(sidecar, transition.timeout,
                                         self.timer.settings.when_not_saved)
        if isinstance(migration, str):
            log.warning("idle move skipped", extra={"why": migration})
            self._restart(self.clock(), migration)
            return
        if self.timer.work_seen(self.clock()):  # reported while the above was read
            self._restart(self.clock(), "a cell started as the idle timeout ran out: no "
                                        "idle move; the idle timer starts over")
            return
        try:
            await sidecar.start_migration(migration)
        except MigrationInFlight as exc:
            self._restart(self.clock(), f"migration {exc.current.id} is "
                                        f"{exc.current.phase}: the idle timer starts over")
            return
        except NotebookStopped as exc:  # its pod goes away; Start brings a new one
            self._restart(self.clock(), f"{exc}: no idle move; the idle timer starts over")
            return
        except Exception as exc:  # state unwritable, the runner refused: try again later
            log.error("the idle move did not start", extra={"why": str(exc)})
            self._restart(self.clock(), f"the idle move did not start ({exc}): the idle "
                                        "timer starts over")
            return
        self._move_id = migration.id
        log.info("idle move started", extra={
            "notebook": sidecar.env.notebook_name, "migration": migration.id,
            "timeout": transition.timeout,
            "checkpoint": (None if migration.checkpoint is None
                           else migration.checkpoint.commit_id)})
        self._publish(self.clock())

    def _wait_for_save(self, transition: IdleTransition, writing: list[str]) -> bool:
        """kishu is writing a checkpoint (`writing`: its notebooks): the move waits for
        it, asking again in `save_recheck_seconds` (the timer is set back that far).
        Past `save_wait_seconds`, no move at all: the timer starts over, and the idle
        state's `reason` (and the log) says why. True: the move waits (or was given
        up)."""
        now = self.clock()
        if self._save_wait_since is None:
            self._save_wait_since = now
            log.info("the idle move waits for a checkpoint being written",
                     extra={"notebooks": writing})
        if now - self._save_wait_since >= self.config.save_wait_seconds:
            self._save_wait_since = None
            why = (f"a checkpoint of {', '.join(writing)} was still being written after "
                   f"{self.config.save_wait_seconds:g}s: no idle move, so no state is "
                   "lost; the idle timer starts over")
            log.warning("idle move skipped", extra={"why": why})
            self._restart(now, why)  # the idle snapshot's `reason`: the page shows it
            return True
        self.timer.reset(now - max(0.0, transition.timeout - self.config.save_recheck_seconds),
                         "waiting for a checkpoint being written")
        self._publish(now)
        return True

    # -- inside ----------------------------------------------------------------------

    def _observe(self, percent: float, source: str, at: float) -> None:
        self.timer.observe_utilization(percent, at)
        self._utilization = {"percent": percent, "source": source, "at": at}

    def _move_ended(self, now: float) -> None:
        """The idle move this loop started ended here (failed, rolled back): start over."""
        move_id = self._move_id
        if move_id is None:
            return
        current = self.sidecar.tracker.current
        if current is not None and current.id == move_id and current.active:
            return
        self._move_id = None
        if current is None or current.id != move_id:
            why = "was replaced by another migration"
        else:
            why = f"ended {current.phase}" + (f": {current.error}" if current.error else "")
        self._restart(now, f"the idle move {why}; the idle timer starts over")

    def _wait_for_move(self, now: float) -> None:
        """A move in flight other than this loop's own idle move — one arriving here and
        restoring its state, one the user started — is not idleness: the timeout counts
        from its end. (Counting the restore made a slow restore end in an idle move the
        moment the user's move to GPU was done.)"""
        current = self.sidecar.tracker.current
        if current is not None and current.active and current.id != self._move_id:
            self.timer.reset(now, f"migration {current.id} is {current.phase}: the idle "
                                  "timer waits for it to end")
            self._warned_at = None

    def _restart(self, now: float, why: str) -> None:
        self.timer.reset(now, why)
        self._warned_at = None
        self._publish(now)

    def _settle(self, now: float) -> None:
        """After any input: forget a warning that activity took back; publish."""
        if self.timer.state(now) is IdleState.ACTIVE:
            self._warned_at = None
        self._publish(now)

    def _publish(self, now: float) -> None:
        """runtime-config.json's `idle` and the state gauge, when they change (state,
        timeout, pin, the warning's end): not on every tick."""
        if not self.on_gpu:
            return
        snap = self.snapshot(now)
        key = (snap["state"], snap["timeout"], snap["timeout_source"], snap["pinned"],
               snap["warning_until"], snap["migration"])
        if key == self._published:
            return
        self._published = key
        self.sidecar.metrics.show_idle_state(snap["state"])
        self.sidecar.files.update_idle(snap)

