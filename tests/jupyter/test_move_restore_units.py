"""The restore side's pure decisions: which checkpoints a move holds and the one report
the sidecar gets for several notebooks (the restores themselves: test_server_restore)."""

from __future__ import annotations

from gpushift_jupyter.move_restore import checkpoints_of, overall_report, recoverable


def answer(ok: bool, restored: list[str], not_restored: tuple[str, ...] = (),
           detail: str | None = None) -> dict[str, object]:
    return {"ok": ok, "restored": restored, "detail": detail,
            "not_restored": [{"name": n, "reason": "a generator"} for n in not_restored]}


def test_the_asking_notebooks_checkpoint_comes_first() -> None:
    migration = {"checkpoint": {"notebook_path": "/w/a.ipynb", "commit_id": "1"},
                 "other_checkpoints": [{"notebook_path": "/w/b.ipynb", "commit_id": "2"}]}
    assert [c["commit_id"] for c in checkpoints_of(migration)] == ["1", "2"]
    assert checkpoints_of({"checkpoint": None}) == []
    # An idle move names no asking notebook: the others are all there is.
    assert [c["commit_id"] for c in checkpoints_of(
        {"checkpoint": None, "other_checkpoints": migration["other_checkpoints"]})] == ["2"]


def test_one_notebook_reports_plain_names() -> None:
    report = overall_report({"a.ipynb": answer(True, ["x", "df"], ["gen"])})
    assert report == {"ok": True, "restored": ["x", "df"], "detail": None,
                      "not_restored": [{"name": "gen", "reason": "a generator"}]}


def test_several_notebooks_name_their_notebook_and_fail_together() -> None:
    report = overall_report({
        "a.ipynb": answer(True, ["x"]),
        "b.ipynb": answer(False, [], detail="No module named 'torch'"),
    })
    assert report["ok"] is False
    assert report["restored"] == ["a.ipynb: x"]
    assert report["detail"] == "b.ipynb: No module named 'torch'"


def test_a_move_that_failed_before_the_patch_is_not_recovered() -> None:
    history = [{"phase": p} for p in ("requested", "checkpointing", "failed")]
    migration = {"phase": "failed", "history": history,
                 "checkpoint": {"notebook_path": "/w/a.ipynb", "commit_id": "1"}}
    assert not recoverable(migration)
    replaced = {**migration, "history": [*history[:2], {"phase": "recreating"},
                                         {"phase": "failed"}]}
    assert recoverable(replaced)
