"""Background checkpoints: after the user's cells, while the kernel is idle, the
notebook's state is saved on its own, so that a Stop and Start, a pod restart or a
killed kernel can offer to resume it (`resume`). No browser is needed.

When (`due`, pure): a kernel kishu is attached to, idle (by its own status messages,
which jupyter_server follows) for `quiet` seconds, that ran a cell since its last
background checkpoint, at most once per `interval` seconds. How: the kernel forks and
the child commits (`kernel_state.background_agent`): the kernel is busy only for the
fork, so a cell the user runs meanwhile starts at once; the child's commit is checked
complete like any checkpoint, then the database is tidied (`storage`). A move's
checkpoint never waits on one: it kills the child first (`stop`), and the write cut
short is rolled back under the database's lock (`StorageKeeper.writing`). Skipped, and
said so (`report`), for a state larger than `max_state_mib` (each background
checkpoint hashes the whole state and stores what changed), for a kernel that uses
CUDA (fork cannot carry it), and when the volume is nearly full.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernel_state import KernelStateError, kernel_history
from gpushift_jupyter.kernel_state.database import read_commit
from gpushift_jupyter.kernel_state.driver import (
    BackgroundStep,
    background_outcome,
    background_start,
)
from gpushift_jupyter.kernels import KernelInUse, KernelRegistry
from gpushift_jupyter.storage import StorageKeeper

log = logging.getLogger("gpushift.jupyter")

POLL_S = 0.25
LOCK_WAIT_S = 0.1
HISTORY_WAIT_S = 2.0
"""How long the kernel may take to say what it ran (it holds the kernel meanwhile)."""
"""How long a background checkpoint waits for another kishu operation on the kernel."""
CHILD_DEADLINE_S = 600.0


@dataclass(frozen=True)
class BackgroundSettings:
    interval: float = 60.0
    """Seconds between two background checkpoints of one kernel (0: off)."""
    quiet: float = 3.0
    """Seconds the kernel must have been idle: not between two cells run in a row."""
    max_state_mib: int = 4096
    """Larger states are not checkpointed in the background (only on a move or on
    demand): each background checkpoint hashes the whole state."""


@dataclass
class KernelWatch:
    last_started: float = -1e9
    """When the last background checkpoint started (monotonic)."""
    cells_seen: tuple[int, int] = (0, 0)
    """(process, cells run) of the kernel when it was last checkpointed (or found
    unchanged)."""
    activity_seen: dt.datetime | None = None
    """The kernel's last activity when it was last looked at."""
    task: asyncio.Task[None] | None = None
    pid: int | None = None
    report: dict[str, Any] = field(default_factory=lambda: {"state": "none"})


def settings_from_runtime(document: Mapping[str, Any],
                          server: BackgroundSettings) -> BackgroundSettings:
    """The settings that apply (pure): the admin's (runtime-config.json's `checkpoints`,
    from the sidecar) bound the server's own (its config): either one at 0 turns
    background checkpoints off, the longer interval and the smaller state bound win.
    Without the admin's word (no sidecar), the server's."""
    given = document.get("checkpoints")
    given = given if isinstance(given, Mapping) else {}

    def admin(key: str) -> int | None:
        value = given.get(key)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return value if ok else None

    interval, max_state = server.interval, server.max_state_mib
    admin_interval = admin("background_interval_seconds")
    if admin_interval is not None:
        interval = 0.0 if 0 in (admin_interval, interval) else max(admin_interval, interval)
    admin_state = admin("background_max_state_mib")
    if admin_state is not None:
        max_state = min(admin_state, max_state)
    return BackgroundSettings(interval=interval, quiet=server.quiet, max_state_mib=max_state)


def with_user_interval(settings: BackgroundSettings,
                       user: float | None) -> BackgroundSettings:
    """The user's interval within the admin's and the server's (pure): off when any is
    0, else the longest."""
    if user is None:
        return settings
    interval = 0.0 if 0 in (user, settings.interval) else max(user, settings.interval)
    return BackgroundSettings(interval, settings.quiet, settings.max_state_mib)


def due(settings: BackgroundSettings, watch: KernelWatch, *, now: float,
        execution_state: str | None, last_activity: dt.datetime | None,
        wall_now: dt.datetime) -> bool:
    """Whether to look at a kernel for a background checkpoint now (pure)."""
    if settings.interval <= 0 or (watch.task is not None and not watch.task.done()):
        return False
    if execution_state != "idle" or last_activity is None:
        return False
    if (wall_now - last_activity).total_seconds() < settings.quiet:
        return False
    if now - watch.last_started < settings.interval:
        return False
    return last_activity != watch.activity_seen


class BackgroundCheckpoints:
    def __init__(self, kernels: KernelRegistry, storage: StorageKeeper,
                 defaults: BackgroundSettings, results_dir: Path,
                 runtime: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.kernels = kernels
        self.storage = storage
        self.defaults = defaults
        """The server's own settings (its config): what applies without a sidecar."""
        self.runtime = runtime
        """The runtime-config document: the admin's settings, which win."""
        self.results_dir = results_dir
        """Where the forked children write their answers (the server's runtime dir)."""
        self.watches: dict[str, KernelWatch] = {}
        self.user_interval: float | None = None
        """The user's own interval (JupyterLab's setting, `PUT /background`): 0 turns
        background checkpoints off for them, a longer one makes them rarer; it never
        makes them more frequent than the admin and the server allow."""

    @property
    def settings(self) -> BackgroundSettings:
        document = self.runtime() if self.runtime is not None else {}
        bounded = settings_from_runtime(document, self.defaults)
        return with_user_interval(bounded, self.user_interval)

    def report(self, kernel_id: str) -> dict[str, Any]:
        """The kernel's last background checkpoint, for people (`GET /background`)."""
        watch = self.watches.get(kernel_id)
        settings = self.settings
        base = {"interval_s": settings.interval, "max_state_mib": settings.max_state_mib,
                "user_interval_s": self.user_interval}
        if settings.interval <= 0:
            why = ("you turned background checkpoints off" if self.user_interval == 0
                   else "background checkpoints are off (the administrator's or the "
                        "server's setting)")
            return {**base, "state": "off", "why": why}
        return {**base, **(watch.report if watch else {"state": "none"})}

    async def run_forever(self, tick: float = 1.0) -> None:
        while True:
            await asyncio.sleep(tick)
            try:
                self.look()
            except Exception:  # a bug here must not end the loop (or the server)
                log.exception("gpushift: background checkpoints: the look failed")

    def look(self) -> None:
        """Start what is due (each in a task of its own)."""
        now, wall_now = time.monotonic(), dt.datetime.now(dt.UTC)
        settings = self.settings  # reads runtime-config.json: once per look
        attached = set(self.kernels.attached())
        for gone in set(self.watches) - attached:
            watch = self.watches.pop(gone)
            if watch.task is not None and not watch.task.done():
                self.watches[gone] = watch  # let it end; forgotten next time
                continue
            # The kernel is gone: nobody will read what its children left.
            for left in self.results_dir.glob(f"gpushift-background-{gone}-*"):
                left.unlink(missing_ok=True)
        for kernel_id in attached:
            watch = self.watches.setdefault(kernel_id, KernelWatch())
            manager = self.kernels.kernel_manager.get_kernel(kernel_id)
            if due(settings, watch, now=now,
                   execution_state=getattr(manager, "execution_state", None),
                   last_activity=getattr(manager, "last_activity", None),
                   wall_now=wall_now):
                watch.activity_seen = manager.last_activity
                watch.task = asyncio.get_running_loop().create_task(
                    self._checkpoint(kernel_id, watch))

    async def stop(self, kernel_id: str) -> None:
        """Cancel the kernel's background checkpoint (a move's checkpoint comes next):
        its child is killed at once; returns when its task has ended."""
        watch = self.watches.get(kernel_id)
        if watch is None or watch.task is None or watch.task.done():
            return
        if watch.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(watch.pid, signal.SIGKILL)
        watch.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch.task
        watch.report = {"state": "cancelled", "at": time.time(),
                        "why": "a move's checkpoint came first"}

    async def settled(self) -> None:
        """Until every background checkpoint running now has ended (tests, shutdown)."""
        tasks = [w.task for w in self.watches.values() if w.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _checkpoint(self, kernel_id: str, watch: KernelWatch) -> None:
        facts = self.kernels.facts(kernel_id)
        notebook = facts.notebook
        if notebook is None:
            return
        try:
            await self._run(kernel_id, watch, notebook)
        except (KernelStateError, ApiError) as exc:
            detail = exc.detail if isinstance(exc, ApiError) else str(exc)
            watch.report = {"state": "failed", "at": time.time(), "why": detail}
            log.warning("gpushift: background checkpoint of %s failed: %s", notebook, detail)
        finally:
            watch.pid = None

    async def _run(self, kernel_id: str, watch: KernelWatch, notebook: Path) -> None:
        # The kernel reads the child's answer too (to build on its commit), and
        # deletes it: one file per run.
        result = self.results_dir / f"gpushift-background-{kernel_id}-{time.time_ns()}.json"
        async with self.storage.writing(notebook, create=True):
            try:
                async with self.kernels.kernel(kernel_id, wait=LOCK_WAIT_S) as kernel:
                    try:
                        history = await kernel_history(kernel, timeout=HISTORY_WAIT_S)
                    except KernelStateError:  # starting, or busy again: later
                        watch.activity_seen = None
                        return
                    seen = (history.pid, history.cells_run)
                    if history.cells_run == 0 or seen == watch.cells_seen:
                        # Nothing of the user's since the last one (gpushift's own
                        # silent work), or a fresh kernel: its empty state must not
                        # become the newest checkpoint, which a resume offers.
                        return
                    await self.storage.check_room(notebook)
                    watch.last_started = time.monotonic()
                    step = await background_start(
                        kernel, notebook, workspace=self.storage.workspace(),
                        max_state_bytes=self.settings.max_state_mib * 2**20,
                        result_path=result)
            except KernelInUse:
                watch.activity_seen = None  # a move or a restore works in it: later
                return
            if step.state != "started":
                watch.cells_seen = seen
                watch.report = {"state": step.state, "at": time.time(), "why": step.why,
                                "state_bytes": step.state_bytes}
                return
            watch.pid = step.pid
            watch.report = {"state": "running", "at": time.time(), "pid": step.pid,
                            "fork_ms": step.fork_ms, "state_bytes": step.state_bytes}
            ended = await self._until_ended(result, step)
        if ended.state != "done" or ended.commit_id is None:
            watch.report = {"state": "failed", "at": time.time(), "why": ended.why}
            log.warning("gpushift: background checkpoint of %s failed: %s", notebook,
                        ended.why)
            return
        facts = read_commit(self.storage.database(notebook), ended.commit_id)
        watch.cells_seen = seen
        watch.report = {"state": "saved", "at": time.time(), "commit_id": ended.commit_id,
                        "variables": len(facts.saved), "fork_ms": step.fork_ms,
                        "commit_s": ended.commit_s, "state_bytes": step.state_bytes}
        self.storage.after_checkpoint(notebook, ended.commit_id)
        log.info("background checkpoint", extra={
            "notebook": str(notebook), "commit": ended.commit_id, "fork_ms": step.fork_ms,
            "commit_s": ended.commit_s})

    async def _until_ended(self, result: Path, step: BackgroundStep) -> BackgroundStep:
        assert step.pid is not None
        deadline = time.monotonic() + CHILD_DEADLINE_S
        while True:
            ended = background_outcome(result, step.pid)
            if ended.state != "running":
                return ended
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(step.pid, signal.SIGKILL)
                return BackgroundStep("failed", why=f"not done within {CHILD_DEADLINE_S:.0f} "
                                      "s: stopped")
            await asyncio.sleep(POLL_S)
