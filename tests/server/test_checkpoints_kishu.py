"""The checkpoint watcher against kishu 0.3.4 itself, in a real IPython kernel.

A kernel (jupyter_client, connection file `kernel-<uuid>.json` as kishu needs) attaches
kishu to a notebook and runs cells; kishu commits after each. The watcher must report
the commit kishu's own `log` calls HEAD, `verify` must call it complete, and a fresh
kernel must restore it. kishu reads its config.ini from `$KISHU_PATH_ROOT/.kishu/`
(default: the home directory); the test points that, and IPython's folder, at tmp_path.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gpushift_testing.kernels import isolated_kernelspec, run_cell

# Only look for kishu here: importing it creates ~/.kishu in the importing process.
_MISSING = [m for m in ("kishu", "ipykernel", "jupyter_client", "numpy")
            if importlib.util.find_spec(m) is None]
# They are test dependencies (pyproject's `test` extra): missing is a broken set-up,
# not a reason to skip.
if _MISSING:
    raise RuntimeError(f"not installed: {', '.join(_MISSING)}; run `make test`")

import jupyter_client  # noqa: E402

from gpushift_sidecar.checkpoint_database import VerdictStatus, database_path  # noqa: E402
from gpushift_sidecar.checkpoint_watcher import CheckpointInfo, CheckpointWatcher  # noqa: E402

KERNEL_NAME = "gpushift-test-python"


@dataclass
class KishuHome:
    env: dict[str, str]
    notebook: Path


@pytest.fixture
def kishu_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KishuHome:
    root = tmp_path / "kishu-root"
    (root / ".kishu").mkdir(parents=True)
    # Headless: without test_mode kishu waits for a front end to save the notebook.
    (root / ".kishu" / "config.ini").write_text("[JUPYTERINT]\ntest_mode = True\n")
    # A kernelspec of this interpreter, so no other python3 kernelspec on the machine
    # is picked up.
    for key, value in isolated_kernelspec(tmp_path, KERNEL_NAME, "gpushift test").items():
        monkeypatch.setenv(key, value)
    env = dict(os.environ, KISHU_PATH_ROOT=str(root), PYTHONUNBUFFERED="1")
    env.pop("ENV_KISHU_TEST_MODE", None)
    notebook = tmp_path / "home" / "work" / "demo.ipynb"
    notebook.parent.mkdir(parents=True)
    notebook.write_text(json.dumps({
        "cells": [], "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                                 "display_name": "Python 3"}},
        "nbformat": 4, "nbformat_minor": 5}))
    return KishuHome(env, notebook)


class Kernel:
    def __init__(self, km: Any, kc: Any) -> None:
        self.km, self.kc = km, kc

    async def run(self, code: str) -> str:
        """Execute a cell; its stdout. Fails the test on an error in the cell."""
        return await run_cell(self.kc, code, timeout=60)


async def start_kernel(home: KishuHome, runtime: Path) -> Kernel:
    runtime.mkdir(parents=True, exist_ok=True)
    km = jupyter_client.AsyncKernelManager(
        kernel_name=KERNEL_NAME,
        connection_file=str(runtime / f"kernel-{uuid.uuid4()}.json"))
    await km.start_kernel(env=home.env, cwd=str(home.notebook.parent))
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    return Kernel(km, kc)


@pytest.fixture
async def kernels(kishu_home: KishuHome, tmp_path: Path) -> AsyncIterator[list[Kernel]]:
    started: list[Kernel] = []
    yield started
    for kernel in started:
        kernel.kc.stop_channels()
        await kernel.km.shutdown_kernel(now=True)


def kishu_log(home: KishuHome, db: Path) -> dict[str, Any]:
    """kishu's own answer (in a process of its own, with the test's KISHU_PATH_ROOT):
    HEAD and every commit id of database `db`, from `KishuCommand.log` / `log_all`."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from kishu.commands import KishuCommand\n"
        "from kishu.storage.path import KishuPath\n"
        "KishuPath.database_path = staticmethod(lambda _: Path(sys.argv[2]))\n"
        "nb = Path(sys.argv[1])\n"
        "log = KishuCommand.log(nb)\n"
        "every = KishuCommand.log_all(nb)\n"
        "print(json.dumps({'head': log.head.commit_id,\n"
        "                  'history': [c.commit_id for c in log.commit_graph],\n"
        "                  'all': [c.commit_id for c in every.commit_graph]}))\n")
    done = subprocess.run([sys.executable, "-c", code, str(home.notebook), str(db)], env=home.env,
                          capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class Changes:
    def __init__(self) -> None:
        self.infos: list[CheckpointInfo | None] = []
        self.event = asyncio.Event()

    def __call__(self, path: str, info: CheckpointInfo | None) -> None:
        self.infos.append(info)
        self.event.set()

    async def next_commit(self, after: str | None, timeout: float = 10) -> str:
        """Wait for the watcher to report a commit other than `after`."""
        async def until() -> str:
            while True:
                last = self.infos[-1] if self.infos else None
                if last is not None and last.commit_id != after:
                    return last.commit_id
                self.event.clear()
                await self.event.wait()

        return await asyncio.wait_for(until(), timeout)


async def test_watcher_reports_kishus_commits(kishu_home: KishuHome, kernels: list[Kernel],
                                              tmp_path: Path) -> None:
    home = kishu_home
    changes = Changes()
    # Poll only once an hour: the commits must arrive through inotify.
    watcher = CheckpointWatcher(changes, root=tmp_path / "home", poll_interval=3600)
    watcher.start()
    try:
        assert watcher.watch_notebook(home.notebook) is None  # no database yet
        assert watcher.watched() == {str(home.notebook): "inotify"}

        # kishu writes where gpushift keeps checkpoints (the workspace's hidden
        # folder), as the server extension's driver makes it do.
        db = database_path(home.notebook, tmp_path / "home")
        db.parent.mkdir(parents=True, exist_ok=True)
        in_hidden_folder = ("from pathlib import Path\n"
                            "from kishu.storage.path import KishuPath\n"
                            "KishuPath.database_path = "
                            f"staticmethod(lambda _: Path({str(db)!r}))\n")
        kernel = await start_kernel(home, tmp_path / "runtime")
        kernels.append(kernel)
        await kernel.run(in_hidden_folder
                         + f"from kishu import init_kishu\ninit_kishu({str(home.notebook)!r})")
        assert db.exists()

        seen: list[str] = []
        cells = ["import numpy as np\na = np.arange(1000).reshape(10, 100)",
                 "b = a * 2\ntotal = int(b.sum())",
                 "c = {'name': 'gpushift', 'values': list(range(5))}"]
        for cell in cells:
            await kernel.run(cell)
            seen.append(await changes.next_commit(seen[-1] if seen else None))
        assert len(set(seen)) == len(cells)

        log = kishu_log(home, db)
        latest = watcher.latest(home.notebook)
        assert latest is not None
        assert latest.commit_id == seen[-1] == log["head"]
        # one commit per cell (the cell that attached kishu makes none), oldest first
        assert log["history"] == log["all"] == seen
        assert latest.db_path == str(db)

        for commit in log["all"]:
            verdict = watcher.verify(home.notebook, commit)
            assert verdict.status is VerdictStatus.COMPLETE, verdict
        assert (await watcher.averify(home.notebook, "0" * 32)).status is VerdictStatus.MISSING

        # kishu's database is what the design says: SQLite, journal mode delete, no
        # journal left once a cell is done, commit ids in commit_entry.
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        try:
            assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            ids = {r[0] for r in con.execute("SELECT commit_id FROM commit_entry")}
        finally:
            con.close()
        assert ids == set(log["all"])
        assert not Path(f"{db}-journal").exists()

        # The reported commit is one a fresh kernel can restore.
        fresh = await start_kernel(home, tmp_path / "runtime")
        kernels.append(fresh)
        await fresh.run(in_hidden_folder
                        + f"from kishu import init_kishu\ninit_kishu({str(home.notebook)!r})")
        await fresh.run(f"_kishu.checkout({latest.commit_id!r})")
        out = await fresh.run("print(total, c['values'], a.shape)")
        assert out.strip() == f"{2 * sum(range(1000))} [0, 1, 2, 3, 4] (10, 100)"
    finally:
        watcher.stop()
