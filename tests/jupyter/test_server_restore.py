"""The new pod's Jupyter server restores a move by itself: no browser, no POST /restore.

The real in-process Jupyter server with the extension's restore loop on, the real
sidecar process, real kernels and real kishu. The move's pod replacement is simulated as
in `test_server_extension` (`arrive_on_a_new_pod`); the old pod's kernel is gone before
the sidecar comes back in `restoring`, as it is when a pod is replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# pytest-jupyter's fixtures, in this module only (see test_server_extension).
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403
from test_server_extension import (  # the fixtures too, shared with that module
    arrive_on_a_new_pod,
    call,
    call_api,
    kishu_root,
    on_server_loop,
    server_config,
    sidecar,
    sidecar_base,
    state_then_a_move,
    value_of,
    wait_for_phase,
)

__all__ = ["kishu_root", "sidecar"]


@pytest.fixture
def jp_server_config(sidecar: Any, kishu_root: Path) -> dict[str, Any]:
    return server_config(sidecar, activity_interval=0, restore_interval=0.2)


@on_server_loop
async def test_a_move_that_arrives_is_restored_on_the_server_without_a_browser(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path, sidecar: Any,
        tmp_path: Path) -> None:
    moved = await state_then_a_move(jp_fetch, jp_serverapp, jp_root_dir)
    # The old pod's kernels die with it.
    await call_api(jp_fetch, "DELETE", ["api", "sessions", moved.session["id"]], None)
    revived = arrive_on_a_new_pod(sidecar, jp_root_dir, tmp_path)
    try:
        # Nobody calls POST /restore: the server opens the notebook's session, restores
        # into its kernel and tells the sidecar, which ends the move.
        done = await wait_for_phase(jp_fetch, {"done", "failed"}, timeout=60)
        assert done["phase"] == "done", (done, revived.logs()[-3000:])
        assert done["restored_on_server"] is True and done["recoverable"] is False
        assert done["restore_report"]["ok"] is True
        _, sessions = await call_api(jp_fetch, "GET", ["api", "sessions"], None)
        [session] = [s for s in sessions if s["path"] == "work/train.ipynb"]
        kernel_id = session["kernel"]["id"]
        assert kernel_id != moved.kernel_id
        assert await value_of(jp_serverapp, kernel_id, "int(xs.sum())") == "499500"
        assert await value_of(jp_serverapp, kernel_id, "(greeting, p.x)") == "('hello', 7)"

        # A browser opens the notebook later: it is told what came back, and when, and
        # gets the held cell — once.
        status, first = await call(jp_fetch, "POST", "restore",
                                   {"kernel_id": kernel_id, "path": "work/train.ipynb"})
        assert status == 200, first
        assert first["restored_on_server"] is True and first["kernel_id"] == kernel_id
        assert first["ok"] is True and first["commit_id"] == moved.commit
        assert {"xs", "greeting", "p", "Point"} <= set(first["restored"]), first
        assert first["restored_at"] > 0 and first["migration"]["phase"] == "done"
        assert first["pending_cell"] == {"cell_id": "cell-7", "code": "print(xs.sum())",
                                         "path": "work/train.ipynb"}
        status, second = await call(jp_fetch, "POST", "restore",
                                    {"kernel_id": kernel_id, "path": "work/train.ipynb"})
        assert status == 200 and second["pending_cell"] is None  # the held cell ran once
        _, current = await call(jp_fetch, "GET", "migration")
        assert current["migration"]["restored_on_server"] is False
        # Restored once: the kernel holds one copy (kishu's restore ran once).
        assert await value_of(jp_serverapp, kernel_id, "int(xs.sum())") == "499500"
        assert moved.notebook.read_bytes() == moved.before  # never rewritten
    finally:
        assert revived.process.poll() is None
        sidecar_base.stop(revived)
    assert "Traceback" not in revived.logs()


def test_the_session_gets_the_kernel_the_notebook_names_when_installed(tmp_path: Path) -> None:
    from gpushift_jupyter.server_restore import kernel_name_of

    notebook = tmp_path / "a.ipynb"
    notebook.write_text('{"metadata": {"kernelspec": {"name": "torch-2"}}, "cells": []}')
    assert kernel_name_of(notebook, {"python3", "torch-2"}) == "torch-2"
    assert kernel_name_of(notebook, {"python3"}) is None  # not here: the default
    notebook.write_text("not json")
    assert kernel_name_of(notebook, {"python3"}) is None
    assert kernel_name_of(tmp_path / "missing.ipynb", {"python3"}) is None
