import dataclasses
import datetime as dt
import json
import stat

import pytest
from sidecar_environ import environ_factory

from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.state import (
    ENDED,
    CheckpointRef,
    CorruptState,
    IllegalTransition,
    Migration,
    PendingCell,
    Phase,
    Reason,
    Target,
    check_transition,
)
from gpushift_sidecar.state_file import MigrationStore
from gpushift_sidecar.tracker import MigrationInFlight, MigrationTracker


@pytest.fixture
def environ(tmp_path):
    return environ_factory(tmp_path)


T0 = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
HAPPY_PATH = [Phase.CHECKPOINTING, Phase.CHECKPOINTED, Phase.PATCHING, Phase.RECREATING,
              Phase.RESTORING, Phase.DONE]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def env(environ):
    return SidecarEnv.from_environ(environ())


def new_migration(env, target=Target.GPU, **kwargs):
    defaults = {"reason": Reason.AUTO, "profile": "nvidia-1",
                "checkpoint": CheckpointRef(str(env.workspace_dir / "a.ipynb"), "c-1"),
                "pending_cell": PendingCell(str(env.workspace_dir / "a.ipynb"), "cell-7",
                                            "import torch\ntorch.ones(1).cuda()"),
                "now": T0}
    return Migration.new(env, target=target, **{**defaults, **kwargs})


def test_the_happy_path_is_timestamped_step_by_step(env):
    m = new_migration(env)
    assert m.phase is Phase.REQUESTED and m.active
    assert (m.notebook, m.namespace, m.source_pod, m.source_pod_uid) == (
        "my-notebook", "kubeflow-user", "my-notebook-0", "0b9d5c9e-uid")
    for i, phase in enumerate(HAPPY_PATH, start=1):
        m = m.advance(phase, now=at(i))
    assert m.phase is Phase.DONE and not m.active
    assert [h.phase for h in m.history] == [Phase.REQUESTED, *HAPPY_PATH]
    assert [h.at for h in m.history] == [
        f"2025-03-01T12:00:0{i}.000000Z" for i in range(len(HAPPY_PATH) + 1)]
    assert m.created_at == "2025-03-01T12:00:00.000000Z"
    assert m.updated_at == m.history[-1].at


@pytest.mark.parametrize(("current", "new"), [
    (Phase.REQUESTED, Phase.PATCHING),  # skipping the checkpoint
    (Phase.CHECKPOINTING, Phase.PATCHING),  # patching before the checkpoint is verified
    (Phase.REQUESTED, Phase.DONE),
    (Phase.RESTORING, Phase.RECREATING),  # backwards
    (Phase.CHECKPOINTED, Phase.CHECKPOINTED),
    (Phase.REQUESTED, Phase.REQUESTED),
])
def test_steps_out_of_order_are_refused(current, new):
    with pytest.raises(IllegalTransition, match="not a step"):
        check_transition(current, new, None)


@pytest.mark.parametrize("ended", sorted(ENDED))
@pytest.mark.parametrize("new", list(Phase))
def test_nothing_follows_an_ended_migration(ended, new):
    with pytest.raises(IllegalTransition, match="already ended"):
        check_transition(ended, new, "why")


@pytest.mark.parametrize("current", [Phase.REQUESTED, Phase.CHECKPOINTING, Phase.CHECKPOINTED])
def test_no_rollback_before_the_notebook_was_patched(current):
    with pytest.raises(IllegalTransition):
        check_transition(current, Phase.ROLLED_BACK, "no GPU free")
    check_transition(current, Phase.FAILED, "kishu failed")


@pytest.mark.parametrize("current", [Phase.PATCHING, Phase.RECREATING, Phase.RESTORING])
def test_rollback_and_failure_need_a_reason(current):
    check_transition(current, Phase.ROLLED_BACK, "0/3 nodes are available")
    for end in (Phase.ROLLED_BACK, Phase.FAILED):
        with pytest.raises(IllegalTransition, match="needs a reason"):
            check_transition(current, end, None)
        with pytest.raises(IllegalTransition, match="needs a reason"):
            check_transition(current, end, "")


def test_a_step_forward_takes_no_error():
    with pytest.raises(IllegalTransition, match="takes no error"):
        check_transition(Phase.REQUESTED, Phase.CHECKPOINTING, "oops")


def test_illegal_advance_leaves_the_migration_unchanged(env):
    m = new_migration(env)
    with pytest.raises(IllegalTransition):
        m.advance(Phase.DONE, now=at(1))
    assert m.phase is Phase.REQUESTED and len(m.history) == 1


def test_rollback_records_the_reason_in_the_history(env):
    m = new_migration(env)
    for i, phase in enumerate(HAPPY_PATH[:4], start=1):
        m = m.advance(phase, now=at(i))
    m = m.advance(Phase.ROLLED_BACK, now=at(9), error="0/3 nodes: Insufficient nvidia.com/gpu")
    assert m.error == "0/3 nodes: Insufficient nvidia.com/gpu" and not m.active
    assert m.history[-1].error == m.error and m.history[-2].error is None


def test_document_round_trip_and_annotation(env):
    m = new_migration(env).advance(Phase.CHECKPOINTING, now=at(1))
    m = m.advance(Phase.CHECKPOINTED, now=at(2))
    m = m.with_previous_profile({"image": "cpu:1", "limits": {}}, now=at(3))
    data = m.to_dict()
    assert data["phase"] == "checkpointed" and data["active"] is True
    assert data["checkpoint"] == {"notebook_path": str(env.workspace_dir / "a.ipynb"),
                                  "commit_id": "c-1"}
    assert data["previous_profile"] == {"image": "cpu:1", "limits": {}}
    assert data["history"][0] == {"phase": "requested", "at": "2025-03-01T12:00:00.000000Z"}
    assert Migration.from_dict(json.loads(json.dumps(data))) == m
    others = dataclasses.replace(m, other_checkpoints=(
        CheckpointRef(str(env.workspace_dir / "b.ipynb"), "c-2"),))
    data = json.loads(json.dumps(others.to_dict()))
    assert data["other_checkpoints"] == [{"notebook_path": str(env.workspace_dir / "b.ipynb"),
                                          "commit_id": "c-2"}]
    assert Migration.from_dict(data) == others
    assert [c.commit_id for c in others.checkpoints] == ["c-1", "c-2"]
    # runtime-config.json's `migration` counts them: the new pod warms a kernel each.
    assert (m.summary()["notebooks"], others.summary()["notebooks"]) == (1, 2)
    annotation = m.to_annotation()
    assert " " not in annotation
    assert json.loads(annotation) == {"id": m.id, "phase": "checkpointed", "target": "gpu",
                                      "trigger": m.reason.value,
                                      "updated": "2025-03-01T12:00:03.000000Z"}


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("id"),
    lambda d: d.update(phase="teleporting"),
    lambda d: d.update(target="tpu"),
    lambda d: d.update(history=[]),
    lambda d: d.update(history="requested"),
    lambda d: d.update(phase="done"),  # not what the history says
    lambda d: d.update(checkpoint={"notebook_path": "/x", "commit": "c"}),
    lambda d: d.update(pending_cell=["x"]),
    lambda d: d.update(notebook=7),
    lambda d: d.update(other_checkpoints={"notebook_path": "/x", "commit_id": "c"}),
    lambda d: d.update(other_checkpoints=[{"notebook_path": "/x", "commit": "c"}]),
])
def test_damaged_documents_are_refused(env, damage):
    data = new_migration(env).to_dict()
    damage(data)
    with pytest.raises(CorruptState):
        Migration.from_dict(data)


def test_store_round_trip_and_tracker_resume(env):
    store = MigrationStore.for_env(env)
    assert store.path == env.workspace_dir / ".gpushift" / "migration-my-notebook.json"
    tracker = MigrationTracker(store)
    assert tracker.current is None
    m = tracker.begin(new_migration(env))
    tracker.advance(m.id, Phase.CHECKPOINTING)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert json.loads(store.path.read_text())["schema"] == 1
    # A restarted sidecar (a new tracker on the same file) resumes where it was.
    resumed = MigrationTracker(MigrationStore.for_env(env))
    assert resumed.current == tracker.current
    assert resumed.current.phase is Phase.CHECKPOINTING
    assert [p.name for p in store.path.parent.iterdir()] == [store.path.name]  # no temp files


def test_without_workspace_the_state_lives_in_the_runtime_dir(environ, caplog):
    env = SidecarEnv.from_environ(environ(workspace=False))
    store = MigrationStore.for_env(env)
    assert store.path == env.runtime_dir / "migration-my-notebook.json"
    assert "will not survive a move" in caplog.text


def test_one_migration_at_a_time(env):
    changes = []
    tracker = MigrationTracker(MigrationStore.for_env(env),
                               on_change=lambda old, new: changes.append((old, new)))
    first = tracker.begin(new_migration(env))
    with pytest.raises(MigrationInFlight) as caught:
        tracker.begin(new_migration(env, target=Target.CPU, profile=None))
    assert caught.value.current == first and tracker.current == first
    done = tracker.advance(first.id, Phase.FAILED, error="kernel died")
    second = tracker.begin(new_migration(env))  # the first one ended
    assert [new for _, new in changes] == [first, done, second]
    assert changes[2][0] == done
    with pytest.raises(IllegalTransition, match="not the current one"):
        tracker.advance(first.id, Phase.CHECKPOINTING)


def test_a_failed_write_changes_nothing(env, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    tracker = MigrationTracker(MigrationStore(blocker / "migration.json"))
    with pytest.raises(OSError):
        tracker.begin(new_migration(env))
    assert tracker.current is None


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"schema": 99}',
                                     b'{"schema": 1, "id": "x"}', b"\xff\xfe"])
def test_a_corrupt_state_file_is_kept_and_the_sidecar_starts_fresh(env, caplog, content):
    store = MigrationStore.for_env(env)
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(content)
    assert MigrationTracker(store).current is None
    kept = list(store.path.parent.glob("migration-my-notebook.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == content
    assert not store.path.exists()
    assert "set aside" in caplog.text
    # A new migration is written beside the kept file, which stays.
    MigrationTracker(store).begin(new_migration(env))
    assert kept[0].read_bytes() == content and store.path.exists()
