"""The migration runner's decisions (pure, gpushift_sidecar.migration_steps): where an
unfinished migration resumes, what the new pod and a restarted old pod do, the mirror,
the one move patch."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json

import pytest
from migration_fixtures import (
    CUDA_IMAGE,
    GPU,
    NEW_UID,
    SOURCE_UID,
    T0,
    environ,
    migration_in,
    mirror,
    notebook_cr,
)

from gpushift_core.patches import apply
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.migration_mirror import Mirror, mirror_ops
from gpushift_sidecar.migration_steps import (
    OldPodAction,
    PatchKind,
    ResumeAction,
    new_pod_outcome,
    old_pod_outcome,
    plan_patch,
    restore_deadline,
    restore_timeout_error,
    resume_action,
    runs_on_target,
)
from gpushift_sidecar.state import (
    MIGRATION_ANNOTATION,
    PREVIOUS_PROFILE_ANNOTATION,
    Phase,
    Target,
)


@pytest.fixture
def env(tmp_path) -> SidecarEnv:
    return SidecarEnv.from_environ(environ(tmp_path))


@pytest.mark.parametrize(("phase", "uid", "on_target", "action"), [
    (Phase.REQUESTED, SOURCE_UID, False, ResumeAction.REQUEST),
    (Phase.CHECKPOINTING, NEW_UID, True, ResumeAction.VERIFY),  # re-verify, any pod
    (Phase.CHECKPOINTED, SOURCE_UID, False, ResumeAction.PATCH),
    (Phase.PATCHING, SOURCE_UID, False, ResumeAction.PATCH),
    (Phase.PATCHING, NEW_UID, True, ResumeAction.PATCH),  # the mirror tells it landed
    (Phase.RECREATING, NEW_UID, True, ResumeAction.NEW_POD),
    (Phase.RECREATING, NEW_UID, False, ResumeAction.NEW_POD),  # uids decide, not the GPU
    (Phase.RECREATING, SOURCE_UID, False, ResumeAction.OLD_POD),
    (Phase.RECREATING, SOURCE_UID, True, ResumeAction.OLD_POD),
    (Phase.RECREATING, "", True, ResumeAction.NEW_POD),  # no uid: the GPU facts decide
    (Phase.RECREATING, "", False, ResumeAction.OLD_POD),
    (Phase.RESTORING, NEW_UID, True, ResumeAction.AWAIT_RESTORE),
])
def test_where_a_migration_resumes(env, phase, uid, on_target, action):
    assert resume_action(migration_in(env, phase), uid, on_target) is action


def test_an_ended_migration_resumes_nothing(env):
    m = migration_in(env, Phase.PATCHING).advance(Phase.FAILED, now=T0, error="x")
    assert resume_action(m, NEW_UID, True) is ResumeAction.NOTHING


def test_which_pod_runs_on_the_target(env):
    gpu_m, cpu_m = migration_in(env, Phase.RECREATING), migration_in(
        env, Phase.RECREATING, Target.CPU)
    facts = SidecarEnv.from_environ(environ(env.workspace_dir.parent, gpu=(GPU, 1))).gpu
    two = SidecarEnv.from_environ(environ(env.workspace_dir.parent, gpu=(GPU, 2))).gpu
    assert runs_on_target(gpu_m, facts, env.settings)
    assert not runs_on_target(gpu_m, two, env.settings)  # another profile's GPU count
    assert not runs_on_target(gpu_m, None, env.settings)
    assert runs_on_target(cpu_m, None, env.settings)
    assert not runs_on_target(cpu_m, facts, env.settings)


def test_the_new_pod_restores_unless_the_move_was_undone(env):
    m = migration_in(env, Phase.RECREATING)
    assert new_pod_outcome(m, mirror(m, "recreating"), True, "p-0") == (Phase.RESTORING, None)
    assert new_pod_outcome(m, None, True, "p-0") == (Phase.RESTORING, None)
    # The guard marked the rollback: its reason (key "reason", or "error") is the user's.
    assert new_pod_outcome(m, mirror(m, "rolled_back", reason="0/3 nodes: Insufficient "
                                     "nvidia.com/gpu"), False, "p-0") == (
        Phase.ROLLED_BACK, "0/3 nodes: Insufficient nvidia.com/gpu")
    assert new_pod_outcome(m, mirror(m, "rolled_back", error="quota"), False, "p-0") == (
        Phase.ROLLED_BACK, "quota")
    # A move to CPU the guard could not undo: it marks it failed; the pod takes that.
    assert new_pod_outcome(m, mirror(m, "failed", reason="no CPU node"), True, "p-0") == (
        Phase.FAILED, "no CPU node")
    # Another migration's rollback is not this one's.
    other = Mirror.parse(json.dumps({"id": "other", "phase": "rolled_back", "error": "x"}))
    assert new_pod_outcome(m, other, True, "p-0") == (Phase.RESTORING, None)
    # Not on the target and nothing marked: rolled back all the same, saying why.
    phase, error = new_pod_outcome(m, mirror(m, "recreating"), False, "p-0")
    assert phase is Phase.ROLLED_BACK and "runs on CPU, not on the target GPU" in error


def test_a_restarted_old_pod_waits_patches_again_or_sees_the_rollback(env):
    m = migration_in(env, Phase.RECREATING)
    assert old_pod_outcome(m, mirror(m, "recreating"), True) == (OldPodAction.WAIT, None)
    assert old_pod_outcome(m, mirror(m, "recreating"), False) == (OldPodAction.REPATCH, None)
    assert old_pod_outcome(m, mirror(m, "rolled_back", reason="no GPU"), False) == (
        OldPodAction.GUARD, (Phase.ROLLED_BACK, "no GPU"))
    assert old_pod_outcome(m, mirror(m, "failed", reason="x"), True) == (
        OldPodAction.GUARD, (Phase.FAILED, "x"))


def test_the_mirror_never_goes_back_nor_over_the_guard(env):
    restoring = migration_in(env, Phase.RESTORING)
    patching = dataclasses.replace(restoring, phase=Phase.PATCHING,
                                   history=restoring.history[:4])
    nb = notebook_cr()
    shown = apply(nb, mirror_ops(nb, patching))
    assert json.loads(shown["metadata"]["annotations"][MIGRATION_ANNOTATION])[
        "phase"] == "patching"
    later = apply(shown, mirror_ops(shown, restoring))  # forward: written
    assert json.loads(later["metadata"]["annotations"][MIGRATION_ANNOTATION])[
        "phase"] == "restoring"
    assert mirror_ops(later, patching) == []  # never back
    assert mirror_ops(later, restoring) == []  # the same value: nothing to write
    guarded = copy.deepcopy(later)
    guarded["metadata"]["annotations"][MIGRATION_ANNOTATION] = json.dumps(
        {"id": restoring.id, "phase": "rolled_back", "reason": "no GPU"})
    assert mirror_ops(guarded, restoring) == []  # the guard's word stands
    assert mirror_ops(guarded, migration_in(env, Phase.CHECKPOINTING)) != []  # a new one


def test_the_patch_moves_and_annotates_in_one_operation_list(env):
    nb = notebook_cr()
    m = migration_in(env, Phase.PATCHING)
    now = T0 + dt.timedelta(seconds=5)
    d = plan_patch(nb, m, env.settings, now=now, container=None, held=None)
    assert d.kind is PatchKind.PATCH and d.plan is not None
    assert d.operations[0] == {"op": "test", "path": "/metadata/resourceVersion",
                               "value": "100"}
    moved = apply(nb, d.operations)
    annotations = moved["metadata"]["annotations"]
    assert json.loads(annotations[MIGRATION_ANNOTATION]) == {
        "id": m.id, "phase": "recreating", "target": "gpu", "trigger": m.reason.value,
        "updated": "2025-03-01T00:00:05.000000Z"}
    assert json.loads(annotations[PREVIOUS_PROFILE_ANNOTATION]) == d.previous_profile
    assert annotations["notebooks.kubeflow.org/server-type"] == "jupyter"
    c = moved["spec"]["template"]["spec"]["containers"][0]
    assert (c["image"], c["resources"]["limits"][GPU]) == (CUDA_IMAGE, "1")
    # Read again after it landed: recognised, nothing patched twice.
    again = plan_patch(moved, m, env.settings, now=now, container=None, held=None)
    assert (again.kind, again.operations) == (PatchKind.LANDED, [])
    assert again.previous_profile == d.previous_profile
    # ... unless told not to trust the mirror: then the spec decides (already there).
    forced = plan_patch(moved, m, env.settings, now=now, container=None, held=None,
                        trust_mirror=False)
    assert (forced.kind, forced.operations) == (PatchKind.NOTHING, [])

    # Back to CPU with the record on the Notebook: the original spec, exactly.
    back = migration_in(env, Phase.PATCHING, Target.CPU)
    gpu = SidecarEnv.from_environ(environ(env.workspace_dir.parent, gpu=(GPU, 1))).gpu
    d2 = plan_patch(moved, back, env.settings, now=now, container=None, held=gpu)
    assert d2.kind is PatchKind.PATCH
    restored = apply(moved, d2.operations)
    assert restored["spec"] == nb["spec"]
    # The record stays while the move to CPU is under way (the guard may need it).
    assert PREVIOUS_PROFILE_ANNOTATION in restored["metadata"]["annotations"]


def test_a_move_between_gpu_profiles_keeps_the_cpu_original_for_the_way_back(env):
    """nvidia-1 -> nvidia-2 -> CPU: the second patch starts from the CPU original (the
    record on the Notebook) and records it again, so the way back restores it exactly."""
    nb = notebook_cr()
    now = T0 + dt.timedelta(seconds=5)
    first = plan_patch(nb, migration_in(env, Phase.PATCHING), env.settings, now=now,
                       container=None, held=None)
    on_one = apply(nb, first.operations)
    on_one["metadata"]["resourceVersion"] = "101"
    one = SidecarEnv.from_environ(environ(env.workspace_dir.parent, gpu=(GPU, 1))).gpu
    to_two = dataclasses.replace(migration_in(env, Phase.PATCHING), profile="nvidia-2")
    second = plan_patch(on_one, to_two, env.settings, now=now, container=None, held=one)
    assert second.kind is PatchKind.PATCH
    on_two = apply(on_one, second.operations)
    on_two["metadata"]["resourceVersion"] = "102"
    spec = on_two["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"][GPU] == "2"
    assert "nodeSelector" not in spec and "tolerations" not in spec  # nvidia-1's are gone
    record = json.loads(on_two["metadata"]["annotations"][PREVIOUS_PROFILE_ANNOTATION])
    assert record["profile"] == "nvidia-2" and record == second.previous_profile
    two = SidecarEnv.from_environ(environ(env.workspace_dir.parent, gpu=(GPU, 2))).gpu
    back = plan_patch(on_two, migration_in(env, Phase.PATCHING, Target.CPU), env.settings,
                      now=now, container=None, held=two)
    assert apply(on_two, back.operations)["spec"] == nb["spec"]


def test_a_notebook_already_on_the_target_is_nothing_to_patch(env):
    m = migration_in(env, Phase.PATCHING, Target.CPU)
    d = plan_patch(notebook_cr(), m, env.settings, now=dt.datetime.now(dt.UTC),
                   container=None, held=None)
    assert (d.kind, d.operations) == (PatchKind.NOTHING, [])


def test_the_restore_deadline_counts_from_entering_restoring(env):
    restoring = migration_in(env, Phase.RESTORING)  # entered at T0, by its history
    assert restore_deadline(restoring, 600) == T0 + dt.timedelta(seconds=600)
    for phase in (Phase.RECREATING, Phase.CHECKPOINTING):
        assert restore_deadline(migration_in(env, phase), 600) is None
    done = migration_in(env, Phase.RESTORING).advance(Phase.DONE, now=T0)
    assert restore_deadline(done, 600) is None


def test_the_restore_timeout_error_says_what_is_kept(env):
    m = migration_in(env, Phase.RESTORING)
    assert restore_timeout_error(m, 600) == (
        "no restore was reported within 600s of the new pod: the move ended here, so "
        "the idle timer and later moves go on; it had no checkpoint")
