"""The pure decisions of bounded checkpoint storage: which commits a notebook's
database keeps, when a checkpoint is refused for lack of room, how a full volume is
recognised and told, and how the admin's settings reach the notebook side."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from gpushift_core.admin_settings import (
    AdminSettings,
    CheckpointSettings,
    ConfigError,
    parse_admin_settings,
)
from gpushift_jupyter.background import (
    BackgroundSettings,
    KernelWatch,
    due,
    settings_from_runtime,
    with_user_interval,
)
from gpushift_jupyter.kernel_state.retention import commits_to_keep
from gpushift_jupyter.kernel_state.space import (
    MIB,
    disk_full,
    full_volume_reason,
    space_refusal,
)
from gpushift_jupyter.storage import StoragePolicy, move_checkpoints, policy_from_runtime

COMMITS = [f"c{i}" for i in range(9, -1, -1)]  # newest first: c9 ... c0


def test_the_newest_are_kept():
    assert commits_to_keep(COMMITS, keep=3) == {"c9", "c8", "c7"}


def test_protected_and_head_are_kept_besides_the_newest():
    kept = commits_to_keep(COMMITS, keep=2, protected={"c1", "gone"}, head="c4")
    assert kept == {"c9", "c8", "c1", "c4"}  # "gone" is not in the database


def test_the_newest_is_kept_whatever_keep_says():
    assert commits_to_keep(COMMITS, keep=0) == {"c9"}
    assert commits_to_keep([], keep=5) == frozenset()


def test_keep_larger_than_the_history_keeps_everything():
    assert commits_to_keep(COMMITS, keep=50) == set(COMMITS)


def test_room_enough_is_no_refusal():
    assert space_refusal(free_bytes=1000 * MIB, expected_bytes=100 * MIB,
                         min_free_bytes=256 * MIB) is None


def test_the_estimate_has_a_margin_and_the_minimum_is_kept_free():
    # 100 MiB expected x 1.5 + 256 MiB minimum = 406 MiB needed.
    assert space_refusal(free_bytes=406 * MIB, expected_bytes=100 * MIB,
                         min_free_bytes=256 * MIB) is None
    reason = space_refusal(free_bytes=405 * MIB, expected_bytes=100 * MIB,
                           min_free_bytes=256 * MIB)
    assert reason is not None
    assert "nearly full: 405 MiB free" in reason
    assert "about 100 MiB" in reason and "at least 256 MiB free" in reason
    assert "previous checkpoints are kept" in reason


def test_a_first_checkpoint_only_needs_the_minimum():
    assert space_refusal(free_bytes=300 * MIB, expected_bytes=0,
                         min_free_bytes=256 * MIB) is None
    reason = space_refusal(free_bytes=100 * MIB, expected_bytes=0, min_free_bytes=256 * MIB)
    assert reason is not None and "needs about" not in reason


@pytest.mark.parametrize(("text", "full"), [
    ("result failed in the kernel: OperationalError: database or disk is full", True),
    ("OSError: [Errno 28] No space left on device", True),
    ("the kernel did not answer within 600 s", False),
    ("OperationalError: database is locked", False),
])
def test_a_full_volume_is_recognised(text, full):
    assert disk_full(text) is full


def test_the_full_volume_reason_says_what_is_intact():
    reason = full_volume_reason(3 * MIB)
    assert "volume is full" in reason and "3.0 MiB free now" in reason
    assert "previous checkpoints are intact" in reason and "can still be saved" in reason


def test_policy_from_the_runtime_config():
    assert policy_from_runtime({}) == StoragePolicy(keep=5, min_free_mib=256)
    assert policy_from_runtime({"checkpoints": {"keep": 3, "min_free_mib": 0}}) == \
        StoragePolicy(keep=3, min_free_mib=0)
    # What is not a sound number falls back to the default, field by field.
    assert policy_from_runtime({"checkpoints": {"keep": 0, "min_free_mib": "x"}}) == \
        StoragePolicy()
    assert policy_from_runtime({"checkpoints": {"keep": True}}) == StoragePolicy()


def test_the_moves_checkpoints_of_one_notebook(tmp_path: Path):
    a, b = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    move = {"phase": "failed",
            "checkpoint": {"notebook_path": str(a), "commit_id": "x1"},
            "other_checkpoints": [{"notebook_path": str(b), "commit_id": "y1"},
                                  {"notebook_path": str(a), "commit_id": "x0"}]}
    assert move_checkpoints(move, a) == {"x1", "x0"}
    assert move_checkpoints(move, b) == {"y1"}
    assert move_checkpoints(None, a) == frozenset()


@pytest.mark.parametrize("phase", ["requested", "checkpointing", "patching", "restoring"])
def test_nothing_is_pruned_while_a_move_is_in_flight(phase, tmp_path: Path):
    assert move_checkpoints({"phase": phase, "checkpoint": None}, tmp_path / "a.ipynb") is None


def test_admin_settings_carry_checkpoints_only_when_set():
    assert "checkpoints" not in AdminSettings().to_json()  # an older sidecar reads it
    custom = AdminSettings(checkpoints=CheckpointSettings(keep=10, min_free_mib=1024))
    document = custom.to_json()
    assert document["checkpoints"] == {"keep": 10, "min_free_mib": 1024,
                                       "background_interval_seconds": 60,
                                       "background_max_state_mib": 4096}
    assert parse_admin_settings(json.dumps(document)).checkpoints == custom.checkpoints
    for key, bad in (("keep", 0), ("background_interval_seconds", -1),
                     ("background_interval_seconds", 86401),
                     ("background_max_state_mib", -1)):
        wrong = json.loads(json.dumps(document))
        wrong["checkpoints"][key] = bad
        with pytest.raises(ConfigError, match=rf"checkpoints\.{key}"):
            parse_admin_settings(json.dumps(wrong))


@pytest.mark.parametrize(("admin", "server", "expected"), [
    ({}, BackgroundSettings(30, 3, 100), BackgroundSettings(30, 3, 100)),
    ({"background_interval_seconds": 60, "background_max_state_mib": 4096},
     BackgroundSettings(30, 3, 100), BackgroundSettings(60, 3, 100)),
    ({"background_interval_seconds": 60}, BackgroundSettings(120, 3, 100),
     BackgroundSettings(120, 3, 100)),
    ({"background_interval_seconds": 0}, BackgroundSettings(30, 3, 100),
     BackgroundSettings(0, 3, 100)),
    ({"background_interval_seconds": 60}, BackgroundSettings(0, 3, 100),
     BackgroundSettings(0, 3, 100)),
    ({"background_max_state_mib": 10, "background_interval_seconds": "x"},
     BackgroundSettings(30, 3, 100), BackgroundSettings(30, 3, 10)),
])
def test_the_admins_background_settings_bound_the_servers(
        admin: dict[str, object], server: BackgroundSettings,
        expected: BackgroundSettings) -> None:
    assert settings_from_runtime({"checkpoints": admin}, server) == expected


def test_a_background_checkpoint_is_due_after_a_cell_once_the_kernel_is_quiet() -> None:
    settings = BackgroundSettings(interval=60, quiet=3, max_state_mib=100)
    wall = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    activity = wall - dt.timedelta(seconds=5)

    def is_due(watch: KernelWatch, state: str = "idle", last: dt.datetime | None = activity,
               now: float = 1000.0, s: BackgroundSettings = settings) -> bool:
        return due(s, watch, now=now, execution_state=state, last_activity=last,
                   wall_now=wall)

    assert is_due(KernelWatch())
    assert not is_due(KernelWatch(), state="busy")  # never while a cell runs
    assert not is_due(KernelWatch(), last=wall - dt.timedelta(seconds=1))  # not quiet yet
    assert not is_due(KernelWatch(), last=None)
    assert not is_due(KernelWatch(last_started=990.0))  # throttled
    assert is_due(KernelWatch(last_started=930.0))
    assert not is_due(KernelWatch(activity_seen=activity))  # nothing new since
    assert not is_due(KernelWatch(), s=BackgroundSettings(0, 3, 100))  # off


def test_the_users_interval_makes_them_rarer_or_off_never_more_frequent() -> None:
    bounded = BackgroundSettings(60, 3, 100)
    assert with_user_interval(bounded, None) == bounded
    assert with_user_interval(bounded, 300) == BackgroundSettings(300, 3, 100)
    assert with_user_interval(bounded, 10) == bounded
    assert with_user_interval(bounded, 0).interval == 0
    assert with_user_interval(BackgroundSettings(0, 3, 100), 300).interval == 0
