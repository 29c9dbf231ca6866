"""The idle loop's wiring, with a fake clock: annotations, warning, stay, the move."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sidecar_environ import make_environ
from test_checkpoint_database import add_commit, make_db

from gpushift_core.admin_settings import GpuFacts, GpuProfile, IdleSettings, ServerTypeSettings
from gpushift_core.kube import KubeError
from gpushift_sidecar import notebooks
from gpushift_sidecar.api_requests import ActivityReport
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.idle import IdleState
from gpushift_sidecar.idle_loop import IdleLoop, IdleLoopConfig
from gpushift_sidecar.idle_reporting import (
    api_state,
    idle_annotations,
    idle_note,
    reclaimed_gpu_seconds,
)
from gpushift_sidecar.metrics import SidecarMetrics
from gpushift_sidecar.service import Sidecar
from gpushift_sidecar.state import Migration, Phase, Reason, Target
from gpushift_webhook.config import WebhookConfig

T0 = 1_800_000_000.0
IDLE = IdleSettings(timeout_seconds=4, min_seconds=3, max_seconds=10, warning_seconds=2)
NB_TIMEOUT = "gpushift.io/notebook-idle-timeout"
POD_TIMEOUT = "gpushift.io/idle-timeout"
NB_PIN = "gpushift.io/notebook-pin-gpu"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class RecordingRunner:
    def __init__(self) -> None:
        self.started: list[Migration] = []

    async def start(self, migration: Migration) -> None:
        self.started.append(migration)

    async def restored(self, migration: Migration, report: Any) -> Migration:
        raise NotImplementedError


class FakeKube:
    """A stand-in for the API's Notebook read (the loop's I/O, not what is tested)."""

    def __init__(self, annotations: dict[str, str] | None = None) -> None:
        self.annotations = annotations or {}
        self.error: KubeError | None = None

    async def get_notebook(self, namespace: str, name: str) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return {"metadata": {"name": name, "annotations": dict(self.annotations)}}


def make(tmp_path: Path, idle: IdleSettings = IDLE, *, gpu: bool = True,
         kube: FakeKube | None = None, registered: bool = True,
         server_types: ServerTypeSettings | None = None) -> tuple[Sidecar, IdleLoop, Clock]:
    """`registered`: the notebook side has reported at T0 (as the server extension does)."""
    settings = WebhookConfig(profiles=[GpuProfile(name="nvidia-1"),
                                       GpuProfile(name="nvidia-2", count=2)],
                             default_profile="nvidia-1", idle=idle,
                             server_types=server_types or ServerTypeSettings())
    tmp_path.mkdir(parents=True, exist_ok=True)
    environ = make_environ(tmp_path, gpu=("nvidia.com/gpu", 1) if gpu else None,
                           GPUSHIFT_SETTINGS=settings.sidecar_settings_json)
    sidecar = Sidecar.create(SidecarEnv.from_environ(environ), RecordingRunner())
    assert sidecar.files.write_now()
    clock = Clock()
    sidecar.idle = IdleLoop(sidecar, kube, IdleLoopConfig(tick_seconds=0.01),
                            sampler=lambda: None, clock=clock)
    if registered:
        sidecar.idle.notebook_side_seen(clock())
    return sidecar, sidecar.idle, clock


async def run_until(loop: IdleLoop, clock: Clock, end: float, step: float = 0.1,
                    sample: float | None = None) -> list[tuple[float, str]]:
    """Advance the fake clock tick by tick; the transitions, at seconds after T0."""
    seen = []
    while clock.now < T0 + end - 1e-9:
        clock.now = round(clock.now + step, 6)
        t = await loop.advance(clock.now, sample)
        if t is not None:
            seen.append((round(clock.now - T0, 3), t.action))
    return seen


def on_disk(sidecar: Sidecar) -> dict[str, Any]:
    return dict(json.loads(sidecar.files.path.read_text()))


# -- pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "moving", "shown"), [
    (IdleState.INERT, True, "inert"), (IdleState.ACTIVE, False, "active"),
    (IdleState.WARNING, False, "warning"), (IdleState.MOVE, False, "moving"),
    (IdleState.ACTIVE, True, "moving"), (IdleState.PINNED, False, "pinned"),
    (IdleState.PINNED, True, "moving")])
def test_api_state(state: IdleState, moving: bool, shown: str) -> None:
    assert api_state(state, moving) == shown


def test_only_the_idle_annotations_are_taken() -> None:
    nb = {"metadata": {"annotations": {NB_TIMEOUT: "5m", POD_TIMEOUT: "90", NB_PIN: "true",
                                       "notebooks.kubeflow.org/server-type": "jupyter"}}}
    assert idle_annotations(nb) == {NB_TIMEOUT: "5m", POD_TIMEOUT: "90", NB_PIN: "true"}
    assert idle_annotations({"metadata": {}}) == {}


def test_the_idle_note_carries_the_estimate(tmp_path) -> None:
    note = idle_note(180, GpuFacts("nvidia.com/gpu", 2))
    assert note == "moved to CPU on idle: no GPU work for 180s on 2 GPU(s) (nvidia.com/gpu)"
    env = SidecarEnv.from_environ(make_environ(tmp_path))
    m = Migration.new(env, target=Target.CPU, reason=Reason.IDLE, profile=None,
                      checkpoint=None, pending_cell=None, now=dt.datetime.now(dt.UTC))
    assert reclaimed_gpu_seconds(m) == 0.0
    assert reclaimed_gpu_seconds(m.with_note(note, now=dt.datetime.now(dt.UTC))) == 360.0


# -- annotations --------------------------------------------------------------------------


@pytest.mark.parametrize(("annotations", "seconds", "source", "reason"), [
    ({NB_TIMEOUT: "1"}, 3, "annotation",
     f"{NB_TIMEOUT}: 1s is outside the admin's bounds [3s, 10s]; using 3s"),
    ({POD_TIMEOUT: "1m"}, 10, "annotation",
     f"{POD_TIMEOUT}: 60s is outside the admin's bounds [3s, 10s]; using 10s"),
    ({NB_TIMEOUT: "7", POD_TIMEOUT: "9"}, 7, "annotation", None),  # the notebook- key wins
    ({NB_TIMEOUT: "soon"}, 4, "default", f"{NB_TIMEOUT}: 'soon' is not seconds"),
    ({}, 4, "default", None),
])
def test_the_override_is_clamped_into_the_admin_bounds(tmp_path, annotations, seconds,
                                                       source, reason) -> None:
    _, loop, clock = make(tmp_path)
    loop.apply_annotations(annotations, clock())
    snap = loop.snapshot()
    assert (snap["timeout"], snap["timeout_source"]) == (seconds, source)
    if reason is None:  # only why the timer last started over
        assert snap["reason"] == "the notebook side registered: the idle timer starts"
    else:
        assert reason in snap["reason"]


async def test_annotations_are_read_from_the_notebook_and_a_failed_read_keeps_them(
        tmp_path, caplog) -> None:
    kube = FakeKube({NB_TIMEOUT: "1"})
    sidecar, loop, _ = make(tmp_path, kube=kube)
    await loop.read_annotations()
    assert loop.snapshot()["timeout"] == 3
    assert on_disk(sidecar)["idle"]["timeout"] == 3  # a new timeout is written at once
    kube.error = KubeError(403, "Forbidden", "notebooks is forbidden")
    await loop.read_annotations()
    await loop.read_annotations()
    assert loop.snapshot()["timeout"] == 3
    warnings = [r for r in caplog.records if "idle annotations" in r.getMessage()]
    assert len(warnings) == 1 and "403 Forbidden" in warnings[0].why
    kube.error = None
    kube.annotations = {}
    await loop.read_annotations()
    assert loop.snapshot()["timeout"] == 4


async def test_a_pin_holds_only_when_the_admin_allows_it(tmp_path) -> None:
    _, refused, clock = make(tmp_path / "a")
    refused.apply_annotations({NB_PIN: "true"}, clock())
    assert "does not allow" in refused.snapshot()["reason"]
    assert await run_until(refused, clock, 5) == [(2.0, "warn"), (4.0, "move")]

    sidecar, pinned, clock = make(tmp_path / "b", IdleSettings(
        timeout_seconds=4, min_seconds=3, max_seconds=10, warning_seconds=2, allow_pin=True))
    pinned.apply_annotations({NB_PIN: "true"}, clock())
    assert await run_until(pinned, clock, 60, step=1) == []
    assert pinned.snapshot()["state"] == "pinned"
    assert on_disk(sidecar)["idle"]["state"] == "pinned"
    assert sidecar.runner.started == []
    pinned.apply_annotations({}, clock())  # unpinned: the timeout counts from now
    assert pinned.snapshot()["state"] == "active" and pinned.snapshot()["idle_for"] == 0
    assert await run_until(pinned, clock, 65) == [(62.0, "warn"), (64.0, "move")]


# -- warning, stay, move ----------------------------------------------------------------


async def test_warning_then_the_move_with_every_notebooks_newest_checkpoint(tmp_path) -> None:
    sidecar, loop, clock = make(tmp_path)
    ws = sidecar.env.workspace_dir
    assert ws is not None
    older, newer = ws / "a" / "old.ipynb", ws / "b" / "new.ipynb"
    for path, commit, mtime in ((older, "old-1", T0 - 100), (newer, "new-1", T0 - 50)):
        db = make_db(path)
        add_commit(db, commit)
        os.utime(db, (mtime, mtime))
    sidecar.watcher.start()
    try:
        for path in (newer, older):
            await asyncio.to_thread(sidecar.watcher.watch_notebook, str(path))
        sidecar.refresh_last_checkpoint()
        assert on_disk(sidecar)["lastCheckpoint"]["commitId"] == "new-1"

        writes = sidecar.metrics.runtime_config_writes.labels("ok")._value.get()
        assert await run_until(loop, clock, 1.9) == []
        assert loop.snapshot()["state"] == "active"
        assert await run_until(loop, clock, 2.0) == [(2.0, "warn")]
        snap = loop.snapshot()
        assert snap["state"] == "warning" and snap["warning_until"] == T0 + 4
        assert on_disk(sidecar)["idle"]["state"] == "warning"
        # One write for the start state, one for the warning: not one per tick.
        after = sidecar.metrics.runtime_config_writes.labels("ok")._value.get()
        assert after - writes <= 2
        assert await run_until(loop, clock, 4.0) == [(4.0, "move")]
    finally:
        await sidecar.close()
    [moved] = sidecar.runner.started
    assert (moved.target, moved.reason, moved.profile, moved.pending_cell) == (
        Target.CPU, Reason.IDLE, None, None)
    assert moved.checkpoint is not None
    assert (moved.checkpoint.notebook_path, moved.checkpoint.commit_id) == (str(newer), "new-1")
    # The other notebook's too: the CPU pod restores every notebook of the pod.
    assert [(c.notebook_path, c.commit_id) for c in moved.other_checkpoints] == [
        (str(older), "old-1")]
    assert moved.notes == ("moved to CPU on idle: no GPU work for 4s on 1 GPU(s) "
                           "(nvidia.com/gpu)",)
    assert sidecar.tracker.current is not None and sidecar.tracker.current.id == moved.id
    snap = loop.snapshot()
    assert snap["state"] == "moving" and snap["migration"] == moved.id
    assert on_disk(sidecar)["idle"]["state"] == "moving"
    assert await run_until(loop, clock, 10) == []  # one move
    assert len(sidecar.runner.started) == 1
    assert not loop.stay()  # too late to stay


async def test_stay_and_activity_start_the_timeout_over(tmp_path) -> None:
    sidecar, loop, clock = make(tmp_path)
    assert not loop.stay()  # no warning yet
    assert await run_until(loop, clock, 2.5) == [(2.0, "warn")]
    assert loop.stay()
    assert loop.snapshot()["state"] == "active"
    assert on_disk(sidecar)["idle"]["state"] == "active"
    assert await run_until(loop, clock, 6.5) == [(4.5, "warn"), (6.5, "move")]

    sidecar, loop, clock = make(tmp_path / "again")
    loop.report(ActivityReport("k1", gpu_cell_running=True, gpu_cell_finished_at=None,
                               received_at=T0 + 1))
    assert await run_until(loop, clock, 30, step=1) == []  # a running GPU cell holds it
    loop.report(ActivityReport("k1", gpu_cell_running=False, gpu_cell_finished_at=T0 + 30,
                               received_at=T0 + 30))
    # The server extension's utilisation, then the sidecar's own NVML sample.
    loop.report(ActivityReport("k2", gpu_cell_running=False, gpu_cell_finished_at=None,
                               received_at=T0 + 31, gpu_utilization_percent=40))
    assert loop.snapshot()["gpu_utilization"] == {"percent": 40.0, "at": T0 + 31,
                                                  "source": "server-extension"}
    assert await run_until(loop, clock, 32, step=1, sample=70) == []
    assert loop.snapshot()["gpu_utilization"]["source"] == "sidecar"
    # Under the threshold (5 %) is idle: the move comes 4 s after the last work.
    assert await run_until(loop, clock, 40, step=0.5, sample=2) == [(34.0, "warn"),
                                                                    (36.0, "move")]


def train_db(sidecar: Sidecar, commit: str) -> tuple[Path, Path]:
    """The workspace's train.ipynb with a kishu database holding `commit`: (notebook, db)."""
    ws = sidecar.env.workspace_dir
    assert ws is not None
    notebook = ws / "train.ipynb"
    db = make_db(notebook, ws)
    add_commit(db, commit)
    return notebook, db


async def watched_until(sidecar: Sidecar, loop: IdleLoop, clock: Clock, notebook: Path,
                        end: float) -> dict[str, Any]:
    """Watch `notebook`, run the loop until `end` s after T0; the idle snapshot then."""
    sidecar.watcher.start()
    try:
        await asyncio.to_thread(sidecar.watcher.watch_notebook, str(notebook))
        await run_until(loop, clock, end)
        return loop.snapshot()
    finally:
        await sidecar.close()


async def test_the_move_waits_for_a_checkpoint_being_written_and_takes_it(tmp_path) -> None:
    sidecar, loop, clock = make(tmp_path)
    loop.config = IdleLoopConfig(tick_seconds=0.01, save_recheck_seconds=1.0)
    notebook, db = train_db(sidecar, "before-1")
    sidecar.watcher.start()
    try:
        await asyncio.to_thread(sidecar.watcher.watch_notebook, str(notebook))
        journal = db.with_name(db.name + "-journal")
        assert await run_until(loop, clock, 3.0) == [(2.0, "warn")]
        journal.write_bytes(b"")  # the warning's checkpoint: kishu is writing it
        # Due at 4 s: it waits, and looks again every second (the timer set back into
        # the warning's last second each time).
        seen = await run_until(loop, clock, 7.0)
        assert sidecar.runner.started == [] and [t for t, a in seen if a == "move"] == [
            4.0, 5.0, 6.0, 7.0]
        assert loop.snapshot()["state"] != "moving"
        journal.unlink()  # kishu is done: the latest state is complete
        add_commit(db, "latest-2")
        await run_until(loop, clock, 9.0)
    finally:
        await sidecar.close()
    [moved] = sidecar.runner.started
    assert moved.checkpoint is not None and moved.checkpoint.commit_id == "latest-2"


async def test_a_checkpoint_never_finished_means_no_idle_move(tmp_path) -> None:
    sidecar, loop, clock = make(tmp_path)
    loop.config = IdleLoopConfig(tick_seconds=0.01, save_wait_seconds=3.0,
                                 save_recheck_seconds=1.0)
    notebook, db = train_db(sidecar, "old-1")
    db.with_name(db.name + "-journal").write_bytes(b"")  # stuck mid-write
    snap = await watched_until(sidecar, loop, clock, notebook, 8.5)
    assert sidecar.runner.started == []  # never moved with the older state
    assert snap["state"] in ("active", "warning")
    assert "still being written" in snap["reason"], snap


async def test_a_cell_started_as_the_timeout_ran_out_holds_the_move(tmp_path,
                                                                    monkeypatch) -> None:
    """The server extension's report of a busy kernel lands while the move reads the
    checkpoints (after the timer decided): the move does not start, the timer runs on
    only once the kernel is idle again."""
    sidecar, loop, clock = make(tmp_path)
    read_checkpoints = notebooks.refresh_every

    async def a_report_lands_meanwhile(watcher: Any) -> Any:
        loop.report(ActivityReport("server", gpu_cell_running=False,
                                   gpu_cell_finished_at=None, received_at=clock.now,
                                   busy_kernels=frozenset({"k1"}),
                                   gpu_cells_running=frozenset()))
        return await read_checkpoints(watcher)

    monkeypatch.setattr(notebooks, "refresh_every", a_report_lands_meanwhile)
    assert await run_until(loop, clock, 4.5) == [(2.0, "warn"), (4.0, "move")]
    assert sidecar.runner.started == []
    snap = loop.snapshot()
    assert snap["state"] == "active" and snap["kernels_busy"] == 1
    assert "a cell started as the idle timeout ran out" in snap["reason"], snap
    monkeypatch.undo()
    loop.report(ActivityReport("server", gpu_cell_running=False, gpu_cell_finished_at=None,
                               received_at=clock.now, busy_kernels=frozenset(),
                               gpu_cells_running=frozenset()))
    assert await run_until(loop, clock, 9.0) == [(6.5, "warn"), (8.5, "move")]
    assert len(sidecar.runner.started) == 1


def with_unsaved(db: Path, commit: str, name: str) -> None:
    """What gpushift's kishu agent records for a variable the commit could not hold."""
    con = sqlite3.connect(db)
    with con:
        con.execute("create table if not exists gpushift_not_saved "
                    "(commit_id text, name text, reason text)")
        con.execute("insert into gpushift_not_saved values (?, ?, ?)",
                    (commit, name, "not saved: a builtins.generator cannot be pickled"))
    con.close()


@pytest.mark.parametrize("when", ["move", "stay"])
async def test_variables_the_checkpoint_lacks_move_and_say_so_or_stay(tmp_path,
                                                                      when) -> None:
    idle = IdleSettings(timeout_seconds=4, min_seconds=3, max_seconds=10,
                        warning_seconds=2, when_not_saved=when)
    sidecar, loop, clock = make(tmp_path, idle)
    notebook, db = train_db(sidecar, "c-1")
    with_unsaved(db, "c-1", "gen")
    snap = await watched_until(sidecar, loop, clock, notebook, 4.5)
    if when == "move":
        [moved] = sidecar.runner.started
        assert "not saved, so not restored on the CPU pod: gen (train.ipynb)" in moved.notes
    else:
        assert sidecar.runner.started == []
        assert "gen (train.ipynb)" in snap["reason"] and "when_not_saved: stay" in snap["reason"]


async def test_the_move_never_skips_the_warning(tmp_path) -> None:
    sidecar, loop, clock = make(tmp_path)
    loop.apply_annotations({NB_TIMEOUT: "10"}, clock())
    assert await run_until(loop, clock, 7) == []
    loop.apply_annotations({NB_TIMEOUT: "3"}, clock())  # 7 s idle already: past the move
    assert await run_until(loop, clock, 9.5) == [(7.1, "warn"), (9.1, "move")]
    assert len(sidecar.runner.started) == 1

    sidecar, loop, clock = make(tmp_path / "paused")
    clock.now = T0 + 100  # the process was stopped for a while
    assert await run_until(loop, clock, 103) == [(100.1, "warn"), (102.1, "move")]


async def test_no_move_while_a_migration_is_in_flight_and_a_failed_one_starts_over(
        tmp_path) -> None:
    sidecar, loop, clock = make(tmp_path)
    other = Migration.new(sidecar.env, target=Target.GPU, reason=Reason.MANUAL,
                          profile="nvidia-2", checkpoint=None, pending_cell=None,
                          now=dt.datetime.now(dt.UTC))
    await sidecar.start_migration(other)
    assert loop.snapshot()["state"] == "moving"
    # The timer waits for the migration: no warning, no move while it is in flight.
    assert await run_until(loop, clock, 4) == []
    assert [m.id for m in sidecar.runner.started] == [other.id]  # none started
    assert "is requested: the idle timer waits for it to end" in loop.snapshot()["reason"]
    sidecar.tracker.advance(other.id, Phase.FAILED, error="no GPU free")
    assert loop.snapshot()["state"] == "active"

    assert await run_until(loop, clock, 8) == [(6.0, "warn"), (8.0, "move")]
    idle_move = sidecar.runner.started[-1]
    assert idle_move.reason is Reason.IDLE and loop.snapshot()["state"] == "moving"
    sidecar.tracker.advance(idle_move.id, Phase.FAILED, error="patch refused")
    await run_until(loop, clock, 8.1)
    snap = loop.snapshot()
    assert snap["state"] == "active" and snap["migration"] is None
    assert "the idle move ended failed: patch refused" in snap["reason"]
    assert await run_until(loop, clock, 12.2) == [(10.1, "warn"), (12.1, "move")]
    assert len(sidecar.runner.started) == 3


async def test_a_move_arriving_here_counts_from_its_end_not_from_its_restore(
        tmp_path) -> None:
    """The move that brought the notebook to this GPU pod is restoring for longer than
    the timeout (a slow restore): no warning and no idle move meanwhile; the timeout
    counts from the moment it is done."""
    sidecar, loop, clock = make(tmp_path)
    arriving = Migration.new(sidecar.env, target=Target.GPU, reason=Reason.MANUAL,
                             profile="nvidia-1", checkpoint=None, pending_cell=None,
                             now=dt.datetime.now(dt.UTC))
    await sidecar.start_migration(arriving)
    for phase in (Phase.CHECKPOINTING, Phase.CHECKPOINTED, Phase.PATCHING,
                  Phase.RECREATING, Phase.RESTORING):
        sidecar.tracker.advance(arriving.id, phase)
    assert await run_until(loop, clock, 9) == []  # restoring 9 s, timeout 4 s
    assert "is restoring: the idle timer waits" in loop.snapshot()["reason"]
    sidecar.tracker.advance(arriving.id, Phase.DONE)
    assert await run_until(loop, clock, 13.5) == [(11.0, "warn"), (13.0, "move")]
    assert [m.reason for m in sidecar.runner.started] == [Reason.MANUAL, Reason.IDLE]


async def test_inert_on_a_cpu_pod(tmp_path) -> None:
    sidecar, loop, clock = make(tmp_path, gpu=False)
    await asyncio.wait_for(loop.run(), 1)  # returns at once
    assert await run_until(loop, clock, 10, step=1) == []
    assert loop.snapshot()["state"] == "inert" and not loop.stay()
    assert "idle" not in on_disk(sidecar)
    assert sidecar.runner.started == []


async def test_run_reads_the_annotations_and_ticks(tmp_path) -> None:
    kube = FakeKube({NB_TIMEOUT: "1"})
    sidecar, _, _ = make(tmp_path)
    loop = IdleLoop(sidecar, kube, IdleLoopConfig(tick_seconds=0.01), sampler=lambda: 55.0)
    task = asyncio.create_task(loop.run())
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            snap = loop.snapshot()
            if snap["timeout"] == 3 and snap["gpu_utilization"]:
                break
        assert snap["timeout"] == 3 and snap["gpu_utilization"]["source"] == "sidecar"
        assert on_disk(sidecar)["idle"]["timeout"] == 3
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_reclaimed_idle_seconds_are_counted_when_the_move_arrives_on_cpu(tmp_path) -> None:
    env = SidecarEnv.from_environ(make_environ(tmp_path))
    now = dt.datetime.now(dt.UTC)
    m = Migration.new(env, target=Target.CPU, reason=Reason.IDLE, profile=None,
                      checkpoint=None, pending_cell=None, now=now)
    m = m.with_note(idle_note(180, GpuFacts("nvidia.com/gpu", 2)), now=now)
    for phase in (Phase.CHECKPOINTING, Phase.CHECKPOINTED, Phase.PATCHING, Phase.RECREATING):
        m = m.advance(phase, now=now)
    metrics = SidecarMetrics()
    metrics.record_change(m, m.advance(Phase.RESTORING, now=now))
    assert metrics.gpu_idle_seconds_reclaimed._value.get() == 360.0
    manual = Migration.new(env, target=Target.CPU, reason=Reason.MANUAL, profile=None,
                           checkpoint=None, pending_cell=None, now=now)
    for phase in (Phase.CHECKPOINTING, Phase.CHECKPOINTED, Phase.PATCHING, Phase.RECREATING):
        manual = manual.advance(phase, now=now)
    metrics.record_change(manual, manual.advance(Phase.RESTORING, now=now))
    assert metrics.gpu_idle_seconds_reclaimed._value.get() == 360.0


# -- only what gpushift can see: the notebook side registered, the server type -----------


async def test_no_idle_move_until_the_notebook_side_registers(tmp_path) -> None:
    """A GPU pod whose server extension never reports (a Jupyter image without it) is
    left alone: no warning, no move, and the state says why."""
    sidecar, loop, clock = make(tmp_path, registered=False)
    assert await run_until(loop, clock, 30) == []
    assert not sidecar.runner.started  # type: ignore[attr-defined]
    snap = loop.current()
    assert snap["state"] == "inert" and snap["notebook_side_registered"] is False
    assert snap["reason"].startswith("notebook side not registered")
    assert on_disk(sidecar)["idle"]["state"] == "inert"
    # The extension's first report starts the timer from then, not from the pod's start.
    loop.notebook_side_seen(clock())
    registered_at = clock.now - T0
    assert loop.current()["state"] == "active"
    assert loop.current()["notebook_side_registered"] is True
    seen = await run_until(loop, clock, 30 + IDLE.timeout_seconds + 0.5)
    assert seen == [(round(registered_at + 2, 3), "warn"),
                    (round(registered_at + 4, 3), "move")]


@pytest.mark.parametrize(("server_type", "off"), [
    ("jupyter", False), ("", False), ("group-one", True), ("group-two", True)])
async def test_the_server_type_turns_the_idle_move_off(tmp_path, server_type, off) -> None:
    kube = FakeKube({"notebooks.kubeflow.org/server-type": server_type} if server_type
                    else {})
    sidecar, loop, clock = make(tmp_path / server_type, kube=kube,
                                server_types=ServerTypeSettings(inert=["group-one"]))
    await loop.read_annotations()
    assert loop.server_type == server_type
    assert (loop.optimizer_off is not None) is off
    seen = await run_until(loop, clock, 10)
    assert bool(seen) is not off
    snap = loop.current()
    if off:
        assert snap["state"] == "inert" and server_type in snap["reason"]
        assert "server_types.in" in snap["reason"]
        assert not sidecar.runner.started  # type: ignore[attr-defined]
        assert on_disk(sidecar)["optimizerOff"] == loop.optimizer_off
    else:
        assert "optimizerOff" not in on_disk(sidecar)
