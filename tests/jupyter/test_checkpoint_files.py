"""Checkpoints out of the user's way, through the real in-process Jupyter server, the
real sidecar process, real kernels and kishu: they live in the workspace's hidden
`.gpushift/checkpoints/`, follow a notebook renamed or moved through the contents API
(as JupyterLab renames and drags), a move restores the moved notebook, and a deleted
notebook's checkpoints are deleted only when asked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

# pytest-jupyter's fixtures, in this module only (see test_server_extension).
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403
from test_server_extension import (  # the fixtures too, shared with that module
    NOTEBOOK,
    arrive_on_a_new_pod,
    call,
    call_api,
    kishu_root,
    on_server_loop,
    run_cell,
    server_config,
    sidecar,
    sidecar_base,
    value_of,
    wait_for_phase,
)

from gpushift_jupyter.kernel_state import database_path, legacy_database_path

__all__ = ["kishu_root", "sidecar"]


@pytest.fixture
def jp_server_config(sidecar: Any, kishu_root: Path) -> dict[str, Any]:
    return server_config(sidecar, activity_interval=0, restore_interval=0.2)


async def open_with_state(jp_fetch: Any, jp_serverapp: Any, root: Path, relative: str,
                          code: str) -> dict[str, Any]:
    notebook = root / relative
    notebook.parent.mkdir(parents=True, exist_ok=True)
    notebook.write_text(json.dumps(NOTEBOOK))
    _, session = await call_api(jp_fetch, "POST", ["api", "sessions"], {
        "path": relative, "type": "notebook", "name": notebook.name,
        "kernel": {"name": "python3"}})
    client = jp_serverapp.kernel_manager.get_kernel(session["kernel"]["id"]).client()
    client.start_channels()
    try:  # a request sent before the kernel listens is lost
        await client.wait_for_ready(timeout=60)
    finally:
        client.stop_channels()
    await run_cell(jp_serverapp, session["kernel"]["id"], code)
    return dict(session)


async def checkpointed(jp_fetch: Any, jp_serverapp: Any, root: Path, relative: str,
                       code: str) -> tuple[str, dict[str, Any]]:
    """A notebook session whose kernel ran `code`, checkpointed: (kernel id, the
    checkpoint's answer)."""
    session = await open_with_state(jp_fetch, jp_serverapp, root, relative, code)
    kernel_id = str(session["kernel"]["id"])
    status, saved = await call(jp_fetch, "POST", "checkpoint", {"kernel_id": kernel_id})
    assert status == 200, saved
    return kernel_id, dict(saved, session=session)


async def rename(jp_fetch: Any, session: dict[str, Any] | None, old: str, new: str) -> None:
    """What JupyterLab does for a rename or a drag to another folder: the contents
    API's rename, then the open notebook's session follows."""
    await call_api(jp_fetch, "PATCH", ["api", "contents", *old.split("/")], {"path": new})
    if session is not None:
        await call_api(jp_fetch, "PATCH", ["api", "sessions", session["id"]],
                       {"path": new, "name": Path(new).name})


async def until_exists(path: Path, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not path.exists():
        assert asyncio.get_running_loop().time() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.05)


def commits(db: Path) -> set[str]:
    import sqlite3

    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return {str(r[0]) for r in con.execute("SELECT commit_id FROM commit_entry")}
    finally:
        con.close()


@on_server_loop
async def test_checkpoints_follow_a_renamed_and_moved_notebook_and_a_move_restores_it(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path, sidecar: Any,
        tmp_path: Path) -> None:
    kernel_id, first = await checkpointed(jp_fetch, jp_serverapp, jp_root_dir,
                                          "work/train.ipynb", "x = 41\nnames = ['a', 'b']")
    session = first["session"]
    hidden = jp_root_dir / ".gpushift" / "checkpoints"
    db = hidden / "work" / "train.ipynb.kishudb"
    assert db.is_file() and first["commit_id"] in commits(db)
    # Nothing beside the notebook: the user's folder holds only their files.
    assert sorted(p.name for p in (jp_root_dir / "work").iterdir()) == ["train.ipynb"]
    assert not legacy_database_path(jp_root_dir / "work" / "train.ipynb").exists()

    # A deleted notebook's database, kept, where the renamed one's goes: set aside.
    stale = hidden / "work" / "renamed.ipynb.kishudb"
    stale.write_bytes(b"a deleted notebook's checkpoints")
    await rename(jp_fetch, session, "work/train.ipynb", "work/renamed.ipynb")
    await until_exists(db.with_name("renamed.ipynb.kishudb.replaced-0").parent)
    for _ in range(200):
        if not db.exists():
            break
        await asyncio.sleep(0.05)
    assert not db.exists()
    assert commits(stale) == {first["commit_id"]}
    [aside] = list(stale.parent.glob("renamed.ipynb.kishudb.replaced-*"))
    assert aside.read_bytes() == b"a deleted notebook's checkpoints"

    # The whole folder moves (a drag in the file browser): its databases with it.
    await rename(jp_fetch, None, "work", "archive")
    await call_api(jp_fetch, "PATCH", ["api", "sessions", session["id"]],
                   {"path": "archive/renamed.ipynb"})
    moved_db = hidden / "archive" / "renamed.ipynb.kishudb"
    await until_exists(moved_db)
    assert not (hidden / "work").exists()
    assert commits(moved_db) == {first["commit_id"]}

    # The kernel keeps working with the notebook's new name: the next checkpoint is
    # added to the database that followed it (kishu attached again, to the new place).
    await run_cell(jp_serverapp, kernel_id, "x += 1")
    status, moved = await call(jp_fetch, "POST", "migrate", {
        "target": "gpu", "reason": "manual", "kernel_id": kernel_id,
        "path": "archive/renamed.ipynb"})
    assert status == 202, moved
    failed = await wait_for_phase(jp_fetch, {"failed"}, timeout=60)  # no Kubernetes here
    saved = failed["checkpoint"]
    assert saved["notebook_path"] == str(jp_root_dir / "archive" / "renamed.ipynb"), saved
    assert commits(moved_db) >= {first["commit_id"], saved["commit_id"]}
    assert not list(hidden.glob("*/train.ipynb.kishudb"))

    # The pod is replaced: the new pod's server restores the moved notebook.
    await call_api(jp_fetch, "DELETE", ["api", "sessions", session["id"]], None)
    revived = arrive_on_a_new_pod(sidecar, jp_root_dir, tmp_path)
    try:
        done = await wait_for_phase(jp_fetch, {"done", "failed"}, timeout=60)
        assert done["phase"] == "done", (done, revived.logs()[-3000:])
        _, sessions = await call_api(jp_fetch, "GET", ["api", "sessions"], None)
        [restored] = [s for s in sessions if s["path"] == "archive/renamed.ipynb"]
        new_kernel = restored["kernel"]["id"]
        assert await value_of(jp_serverapp, new_kernel, "(x, names)") == "(42, ['a', 'b'])"
    finally:
        sidecar_base.stop(revived)


@on_server_loop
async def test_a_deleted_notebooks_checkpoints_go_only_when_asked(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path) -> None:
    session = await open_with_state(jp_fetch, jp_serverapp, jp_root_dir, "work/a.ipynb",
                                    "big = list(range(100000))")
    status, saved = await call(jp_fetch, "POST", "checkpoint",
                               {"kernel_id": session["kernel"]["id"]})
    assert status == 200, saved
    db = database_path(jp_root_dir / "work" / "a.ipynb", jp_root_dir)

    # While the notebook is there, its checkpoints are retention's, not the user's.
    status, there = await call(jp_fetch, "GET", "checkpoints", params={"path": "work/a.ipynb"})
    assert status == 200 and there["exists"] is True and there["databases"] == 1, there
    status, refused = await call(jp_fetch, "DELETE", "checkpoints",
                                 params={"path": "work/a.ipynb"})
    assert status == 409 and refused["error"] == "notebook_exists", refused
    assert db.exists()

    await call_api(jp_fetch, "DELETE", ["api", "sessions", session["id"]], None)
    await call_api(jp_fetch, "DELETE", ["api", "contents", "work", "a.ipynb"], None)
    status, kept = await call(jp_fetch, "GET", "checkpoints", params={"path": "work/a.ipynb"})
    assert status == 200 and kept["exists"] is False, kept
    assert kept["databases"] == 1 and kept["bytes"] == db.stat().st_size > 0
    status, deleted = await call(jp_fetch, "DELETE", "checkpoints",
                                 params={"path": "work/a.ipynb"})
    assert status == 200 and deleted["deleted"] == 1, deleted
    assert not db.exists()
    status, gone = await call(jp_fetch, "GET", "checkpoints", params={"path": "work/a.ipynb"})
    assert gone["databases"] == 0 and gone["bytes"] == 0

    # A folder removed with its notebooks: all their checkpoints, when asked.
    for name in ("b", "c"):
        other = await open_with_state(jp_fetch, jp_serverapp, jp_root_dir,
                                      f"old/{name}.ipynb", f"{name} = 1")
        status, _ = await call(jp_fetch, "POST", "checkpoint",
                               {"kernel_id": other["kernel"]["id"]})
        assert status == 200
        await call_api(jp_fetch, "DELETE", ["api", "sessions", other["id"]], None)
    for name in ("b", "c"):
        (jp_root_dir / "old" / f"{name}.ipynb").unlink()
    (jp_root_dir / "old").rmdir()
    status, folder = await call(jp_fetch, "GET", "checkpoints", params={"path": "old"})
    assert folder["databases"] == 2, folder
    status, deleted = await call(jp_fetch, "DELETE", "checkpoints", params={"path": "old"})
    assert status == 200 and deleted["deleted"] == 2
    assert not (jp_root_dir / ".gpushift" / "checkpoints" / "old").exists()

    for bad in ("", "../outside.ipynb", "/" + "x" * 5000):
        status, answer = await call(jp_fetch, "GET", "checkpoints", params={"path": bad})
        assert status == 400 and answer["error"] == "invalid_field", (bad, answer)


@on_server_loop
async def test_a_database_an_older_release_kept_beside_the_notebook_moves_in(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path) -> None:
    _, first = await checkpointed(jp_fetch, jp_serverapp, jp_root_dir, "work/old.ipynb",
                                  "v = 1")
    session = first["session"]
    notebook = jp_root_dir / "work" / "old.ipynb"
    db, legacy = database_path(notebook, jp_root_dir), legacy_database_path(notebook)
    db.rename(legacy)  # as gpushift before the hidden folder left it: work/old.kishudb
    # A new kernel, as after an upgrade: the first checkpoint finds the old database.
    await call_api(jp_fetch, "DELETE", ["api", "sessions", session["id"]], None)
    session = await open_with_state(jp_fetch, jp_serverapp, jp_root_dir, "work/old.ipynb",
                                    "v = 2")
    status, second = await call(jp_fetch, "POST", "checkpoint",
                                {"kernel_id": session["kernel"]["id"]})
    assert status == 200, second
    assert not legacy.exists()
    assert commits(db) == {first["commit_id"], second["commit_id"]}
