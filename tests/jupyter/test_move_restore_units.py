"""The restore side's pure decisions: which checkpoints a move holds and the one report
the sidecar gets for several notebooks (the restores themselves: test_server_restore);
and how two requests for one move's restore share it when the first fails."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernels import KernelRegistry
from gpushift_jupyter.move_restore import (
    MoveRestorer,
    checkpoints_of,
    overall_report,
    recoverable,
)
from gpushift_jupyter.sidecar_client import TOKEN_FILE, SidecarClient


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


def test_a_restore_that_fails_is_tried_again_by_the_request_waiting_on_it(
        tmp_path: Path) -> None:
    """Two requests for one move's restore: the second waits on the first. The first's
    report cannot reach the sidecar (nothing listens on its port): the waiting request
    then tries itself — the state is not restored twice (kept in `done`) — and both get
    the JSON error, neither hangs; nothing stays in flight."""
    with socket.socket() as probe:  # a port of 127.0.0.1 nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / TOKEN_FILE).write_text("t0ken")
    sidecar = SidecarClient(f"http://127.0.0.1:{port}", tmp_path, timeout=5)
    restorer = MoveRestorer(KernelRegistry(None, None, tmp_path), sidecar)
    migration = {"id": "m-1", "phase": "restoring", "checkpoint": None,
                 "other_checkpoints": []}

    async def both() -> list[Any]:
        try:
            return await asyncio.wait_for(asyncio.gather(
                *(restorer.restore_move(migration, by=by) for by in ("server", "browser")),
                return_exceptions=True), 30)
        finally:
            await sidecar.close()

    answers = asyncio.run(both())
    assert [(type(a), getattr(a, "error", None)) for a in answers] == [
        (ApiError, "sidecar_unavailable")] * 2, answers
    [done] = restorer.done.values()
    assert done.by == "server" and done.reported is False
    assert done.report["detail"] == "the move was made without a checkpoint"
    assert not restorer._moves_in_flight and not restorer._restoring
