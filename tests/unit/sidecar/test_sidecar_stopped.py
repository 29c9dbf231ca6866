"""Kubeflow's Stop and culler in the sidecar: the `cancelled` end of the state machine,
the guard's `cancelled` taken over by the new pod (checkpoint kept), no patch on a stopped
Notebook, `POST /migrations` and the idle move refused on it (409), and no sidecar patch
touching the culler's clock."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from migration_fixtures import T0, environ, migration_in, mirror, notebook_cr
from sidecar_environ import environ_factory
from test_idle_loop import FakeKube, make, run_until
from test_runner import FakeServer, Pod
from test_sidecar_api_app import RecordingRunner, move

from gpushift_core.labels import (
    KUBEFLOW_LAST_ACTIVITY_ANNOTATION,
    KUBEFLOW_LAST_ACTIVITY_CHECK_ANNOTATION,
    KUBEFLOW_STOPPED_ANNOTATION,
)
from gpushift_core.notebook_stop import STOPPED_DURING_MOVE
from gpushift_core.patches import apply
from gpushift_sidecar.api import make_app
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.migration_mirror import mirror_ops
from gpushift_sidecar.migration_steps import (
    OldPodAction,
    PatchKind,
    new_pod_outcome,
    old_pod_outcome,
    plan_patch,
)
from gpushift_sidecar.service import Sidecar
from gpushift_sidecar.state import (
    ENDED,
    MIGRATION_ANNOTATION,
    IllegalTransition,
    Migration,
    Phase,
    Target,
    check_transition,
)
from gpushift_sidecar.token import TOKEN_FILE

STOPPED_AT = "2025-03-01T12:00:05Z"
CULLER = {KUBEFLOW_LAST_ACTIVITY_ANNOTATION: "2025-03-01T11:59:00Z",
          KUBEFLOW_LAST_ACTIVITY_CHECK_ANNOTATION: "2025-03-01T12:00:00Z"}


@pytest.fixture
def env(tmp_path) -> SidecarEnv:
    return SidecarEnv.from_environ(environ(tmp_path))


def stopped(nb: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(nb)
    out["metadata"]["annotations"][KUBEFLOW_STOPPED_ANNOTATION] = STOPPED_AT
    return out


# ----------------------------------------------------------------------------- state


def test_cancelled_is_an_end() -> None:
    assert Phase.CANCELLED in ENDED and Phase("cancelled") is Phase.CANCELLED
    with pytest.raises(IllegalTransition, match="already ended"):
        check_transition(Phase.CANCELLED, Phase.RESTORING, None)


@pytest.mark.parametrize("current", [p for p in Phase if p not in ENDED])
def test_any_unfinished_phase_may_be_cancelled_with_a_reason(current: Phase) -> None:
    check_transition(current, Phase.CANCELLED, STOPPED_DURING_MOVE)
    with pytest.raises(IllegalTransition, match="needs a reason"):
        check_transition(current, Phase.CANCELLED, None)


def test_a_cancelled_migration_reads_back(env) -> None:
    m = migration_in(env, Phase.RECREATING)
    ended = m.advance(Phase.CANCELLED, now=T0, error=STOPPED_DURING_MOVE)
    assert not ended.active and ended.error == STOPPED_DURING_MOVE
    assert Migration.from_dict(json.loads(json.dumps(ended.to_dict()))) == ended
    assert json.loads(ended.to_annotation())["phase"] == "cancelled"


# ----------------------------------------------------------------------------- decisions


def test_the_guards_cancelled_ends_the_new_and_the_old_pod(env) -> None:
    m = migration_in(env, Phase.RECREATING)
    verdict = mirror(m, "cancelled", reason=STOPPED_DURING_MOVE)
    # The new pod is on CPU (Start after the guard put the CPU profile back): not a
    # rollback for being off target, the guard's cancel.
    assert new_pod_outcome(m, verdict, False, "nb-0") == (Phase.CANCELLED,
                                                          STOPPED_DURING_MOVE)
    assert new_pod_outcome(m, mirror(m, "cancelled"), True, "nb-0") == (
        Phase.CANCELLED, STOPPED_DURING_MOVE)
    assert old_pod_outcome(m, verdict, True) == (OldPodAction.GUARD,
                                                 (Phase.CANCELLED, STOPPED_DURING_MOVE))


def test_the_mirror_does_not_overwrite_the_guards_cancel(env) -> None:
    m = migration_in(env, Phase.RECREATING)
    nb = notebook_cr()
    nb["metadata"]["annotations"][MIGRATION_ANNOTATION] = mirror(m, "cancelled").raw
    assert mirror_ops(nb, m) == []
    assert mirror_ops(nb, m.advance(Phase.RESTORING, now=T0)) == []
    cancelled = m.advance(Phase.CANCELLED, now=T0, error=STOPPED_DURING_MOVE)
    assert mirror_ops(nb, cancelled) != []  # its own end, with the reason, is written


@pytest.mark.parametrize("target", [Target.GPU, Target.CPU])
def test_no_patch_on_a_stopped_notebook(env, target: Target) -> None:
    m = migration_in(env, Phase.PATCHING, target)
    d = plan_patch(stopped(notebook_cr()), m, env.settings, now=T0, container=None,
                   held=None)
    assert (d.kind, d.operations, d.reason) == (PatchKind.CANCELLED, [], STOPPED_DURING_MOVE)
    # The guard's cancel (the Notebook already started again) ends it too.
    nb = notebook_cr()
    nb["metadata"]["annotations"][MIGRATION_ANNOTATION] = mirror(
        m, "cancelled", reason="stopped").raw
    d = plan_patch(nb, m, env.settings, now=T0, container=None, held=None)
    assert (d.kind, d.reason) == (PatchKind.CANCELLED, "stopped")


def test_no_sidecar_patch_touches_the_culler_clock(env) -> None:
    nb = notebook_cr()
    nb["metadata"]["annotations"].update(CULLER)
    m = migration_in(env, Phase.PATCHING)
    d = plan_patch(nb, m, env.settings, now=T0, container=None, held=None)
    moved = apply(nb, d.operations)
    shown = apply(moved, mirror_ops(moved, m.advance(Phase.RECREATING, now=T0)
                                    .advance(Phase.RESTORING, now=T0), drop_previous=True))
    for after in (moved, shown):
        assert {k: after["metadata"]["annotations"][k] for k in CULLER} == CULLER
    paths = [op["path"] for op in d.operations]
    assert not [p for p in paths if "last-activity" in p or "last_activity" in p
                or p in ("/metadata", "/metadata/annotations")], paths


# ----------------------------------------------------------------------------- runner


async def test_the_runner_cancels_instead_of_patching_a_stopped_notebook(tmp_path) -> None:
    server = FakeServer()
    server.nb = stopped(server.nb)
    pod = Pod(tmp_path, server)
    m = await pod.run(pod.new())
    assert m.phase is Phase.CANCELLED and m.error == STOPPED_DURING_MOVE
    assert m.checkpoint is not None  # the verified checkpoint stays on record
    assert server.spec_patches == []
    assert server.annotation()["phase"] == "cancelled"
    assert server.reasons()[-1] == "MigrationCancelled"
    assert server.events[-1]["type"] == "Normal"


async def test_the_new_pod_takes_the_guards_cancel(tmp_path) -> None:
    server = FakeServer()
    pod = Pod(tmp_path, server)
    m = await pod.run(pod.new())
    assert m.phase is Phase.RECREATING
    # Stop, the guard: CPU profile back, mirror cancelled; then Start: a CPU pod.
    server.nb["spec"] = notebook_cr()["spec"]
    server.nb["metadata"]["annotations"][MIGRATION_ANNOTATION] = json.dumps(
        {"id": m.id, "phase": "cancelled", "target": "gpu", "updated": "x",
         "reason": STOPPED_DURING_MOVE})
    server.pod_uid = "uid-after-start"
    back = Pod(tmp_path, server, uid="uid-after-start", runtime="run-2")
    m = await back.run(back.tracker.current)
    assert m.phase is Phase.CANCELLED and m.error == STOPPED_DURING_MOVE
    assert m.checkpoint is not None
    assert server.reasons()[-1] == "MigrationCancelled"
    assert server.annotation()["phase"] == "cancelled"
    assert len(server.spec_patches) == 1  # the move's; nothing patched again


# ----------------------------------------------------------------------------- refusals


async def test_post_migrations_on_a_stopped_notebook_is_409(aiohttp_client, tmp_path) -> None:
    env = SidecarEnv.from_environ(environ_factory(tmp_path)())
    kube = FakeKube({KUBEFLOW_STOPPED_ANNOTATION: STOPPED_AT})
    runner = RecordingRunner()
    sidecar = Sidecar.create(env, runner, kube=kube)
    assert sidecar.files.write_now()
    client = await aiohttp_client(make_app(sidecar))
    token = (env.runtime_dir / TOKEN_FILE).read_text().strip()
    client.session.headers["Authorization"] = f"Bearer {token}"
    r = await client.post("/migrations", json=move(env))
    assert r.status == 409
    body = await r.json()
    assert body == {"error": "notebook_stopped", "detail": (
        f"the notebook is stopped (kubeflow-resource-stopped since {STOPPED_AT}): start it "
        "before moving it")}
    assert runner.started == [] and sidecar.tracker.current is None
    kube.annotations.clear()  # Start
    r = await client.post("/migrations", json=move(env))
    assert r.status == 202 and len(runner.started) == 1


async def test_no_idle_move_on_a_stopped_notebook(tmp_path) -> None:
    sidecar, loop, clock = make(tmp_path)
    loop.notebook_side_seen(clock())  # the server extension reported: the timer runs
    sidecar.kube = FakeKube({KUBEFLOW_STOPPED_ANNOTATION: STOPPED_AT})
    assert await run_until(loop, clock, 4) == [(2.0, "warn"), (4.0, "move")]
    assert sidecar.runner.started == [] and sidecar.tracker.current is None
    assert "is stopped (kubeflow-resource-stopped" in loop.snapshot()["reason"]
    assert "the idle timer starts over" in loop.snapshot()["reason"]
    sidecar.kube = FakeKube()  # Start: the next timeout moves
    assert await run_until(loop, clock, 8) == [(6.0, "warn"), (8.0, "move")]
    assert len(sidecar.runner.started) == 1
