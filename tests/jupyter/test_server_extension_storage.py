"""Bounded checkpoint storage through the real in-process Jupyter server and the real
`gpushift-sidecar` process behind it, with real kernels and kishu: what a user sees
when a move's checkpoint does not fit on the workspace volume (a 64 MiB tmpfs over the
server's root, less than the admin's default 256 MiB minimum free), and the retention
the server applies after each checkpoint on its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import small_tmpfs
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403
from test_server_extension import (  # the real sidecar, as the extension's own tests
    NOTEBOOK,
    call,
    call_api,
    jp_server_config,  # noqa: F401
    kishu_root,  # noqa: F401
    on_server_loop,
    run_cell,
    sidecar,  # noqa: F401
    wait_for_phase,
)

from gpushift_jupyter.kernel_state import database_path


@pytest.fixture
def small_volume(jp_root_dir: Path) -> Iterator[Path]:
    """The whole workspace (the notebook and the hidden checkpoints folder) on a small
    volume, as on a small PVC."""
    with small_tmpfs(jp_root_dir) as folder:
        yield folder


async def session_with_state(jp_fetch: Any, jp_serverapp: Any, path: str) -> str:
    _, session = await call_api(jp_fetch, "POST", ["api", "sessions"], {
        "path": path, "type": "notebook", "name": Path(path).name,
        "kernel": {"name": "python3"}})
    kernel_id = str(session["kernel"]["id"])
    client = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
    client.start_channels()
    try:  # a request sent before the kernel listens is lost
        await client.wait_for_ready(timeout=60)
    finally:
        client.stop_channels()
    await run_cell(jp_serverapp, kernel_id, "xs = list(range(1000))\ngreeting = 'hello'")
    return kernel_id


@on_server_loop
async def test_a_move_from_a_nearly_full_volume_fails_saying_why(
        jp_fetch: Any, jp_serverapp: Any, small_volume: Path) -> None:
    (small_volume / "train.ipynb").write_text(json.dumps(NOTEBOOK))
    kernel_id = await session_with_state(jp_fetch, jp_serverapp, "train.ipynb")
    status, answer = await call(jp_fetch, "POST", "checkpoint", {"kernel_id": kernel_id})
    assert status == 507 and answer["error"] == "volume_full", answer
    assert "volume is nearly full" in answer["detail"]
    assert "at least 256 MiB free" in answer["detail"]
    status, moved = await call(jp_fetch, "POST", "migrate", {
        "target": "gpu", "reason": "manual", "kernel_id": kernel_id,
        "path": "train.ipynb"})
    assert status == 202, moved
    failed = await wait_for_phase(jp_fetch, {"failed"})
    # The move's failure carries the reason to the user, before anything was patched.
    assert "train.ipynb: the notebook's volume is nearly full" in failed["error"], failed
    assert "patching" not in [h["phase"] for h in failed["history"]]
    assert not database_path(small_volume / "train.ipynb", small_volume).exists()


@on_server_loop
async def test_the_server_prunes_after_each_checkpoint(
        jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path) -> None:
    notebook = jp_root_dir / "work" / "train.ipynb"
    notebook.parent.mkdir()
    notebook.write_text(json.dumps(NOTEBOOK))
    kernel_id = await session_with_state(jp_fetch, jp_serverapp, "work/train.ipynb")
    services = jp_serverapp.web_app.settings["gpushift_services"]
    storage = services.mover.storage
    commits = []
    for n in range(8):
        await run_cell(jp_serverapp, kernel_id, f"counter = {n}")
        status, saved = await call(jp_fetch, "POST", "checkpoint", {"kernel_id": kernel_id})
        assert status == 200, saved
        commits.append(saved["commit_id"])
        await storage.settled()
    report = storage.last[database_path(notebook, jp_root_dir)]
    assert report.skipped == "", report
    assert report.prune is not None
    assert report.prune.kept == tuple(reversed(commits[-5:]))  # the admin's default, 5
    status, restored = await call(jp_fetch, "POST", "restore", {"kernel_id": kernel_id})
    assert status in (200, 404, 409), restored  # no move to restore: the API says so
