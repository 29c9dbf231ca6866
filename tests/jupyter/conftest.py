"""Real IPython kernels with real kishu for the notebook-side tests.

Kernels run this interpreter (a kernelspec in tmp_path, so no other python3 kernelspec
on the machine is picked up), with connection files named `kernel-<uuid>.json` as
kishu needs, and kishu's config, IPython's folder and Jupyter's runtime folder all in
tmp_path. kishu's config.ini is written by the driver's own `prepare_kishu_home`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jupyter_client
import pytest
from gpushift_testing.kernels import isolated_kernelspec, run_cell

from gpushift_jupyter.kernel_state import ClientKernel, kishu_environment, prepare_kishu_home

KISHU_KERNEL_NAME = "gpushift-kishu-test-python"


@dataclass
class KishuHome:
    env: dict[str, str]
    notebook: Path
    runtime: Path
    kishu_root: Path

    @property
    def workspace(self) -> Path:
        """The volume the notebook is on (its checkpoints are in its hidden folder)."""
        return self.notebook.parent.parent


@pytest.fixture
def kishu_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KishuHome:
    root = tmp_path / "kishu-root"
    prepare_kishu_home(root)
    kernelspec = isolated_kernelspec(tmp_path, KISHU_KERNEL_NAME, "gpushift kishu test")
    for key, value in kernelspec.items():
        monkeypatch.setenv(key, value)
    env = dict(os.environ, PYTHONUNBUFFERED="1", HOME=str(tmp_path / "home"),
               **kishu_environment(root))
    env.pop("ENV_KISHU_TEST_MODE", None)  # kishu's own unit-test switch: not ours
    notebook = tmp_path / "home" / "work" / "demo.ipynb"
    notebook.parent.mkdir(parents=True)
    notebook.write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": 1, "id": "c1", "metadata": {},
                   "outputs": [], "source": "x = 1"}],
        "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                    "display_name": "Python 3"}},
        "nbformat": 4, "nbformat_minor": 5}, indent=1))
    return KishuHome(env, notebook, tmp_path / "runtime", root)


class KishuKernel:
    """A started kernel: `code` is what the driver gets, `cell` runs user cells."""

    def __init__(self, manager: Any, client: Any) -> None:
        self.manager, self.client = manager, client
        self.code = ClientKernel(client)

    async def cell(self, source: str, timeout: float = 120) -> str:
        """Run a cell as a user would (recorded); its stdout. Fails on an error."""
        return await run_cell(self.client, source, timeout)

    async def value(self, expression: str) -> Any:
        """The JSON value of `expression`, printed by a cell."""
        printed = await self.cell(f"import json as _j; print(_j.dumps({expression}))")
        return json.loads(printed.strip().splitlines()[-1])


StartKernel = Callable[..., Awaitable[KishuKernel]]


@pytest.fixture
async def kishu_kernels(kishu_home: KishuHome) -> AsyncIterator[StartKernel]:
    """Start kernels (each a new process); all are shut down after the test."""
    started: list[KishuKernel] = []

    async def start(extra_env: dict[str, str] | None = None) -> KishuKernel:
        kishu_home.runtime.mkdir(parents=True, exist_ok=True)
        manager = jupyter_client.AsyncKernelManager(
            kernel_name=KISHU_KERNEL_NAME,
            connection_file=str(kishu_home.runtime / f"kernel-{uuid.uuid4()}.json"))
        await manager.start_kernel(env={**kishu_home.env, **(extra_env or {})},
                                   cwd=str(kishu_home.notebook.parent))
        client = manager.client()
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        kernel = KishuKernel(manager, client)
        started.append(kernel)
        return kernel

    yield start
    for kernel in started:
        kernel.client.stop_channels()
        if await kernel.manager.is_alive():
            await kernel.manager.shutdown_kernel(now=True)


# The real prune in a process of its own, SIGKILLed (as a pod killed by Kubeflow's Stop,
# an eviction or the OOM killer) after it deleted the older checkpoint and before its
# COMMIT; a small page cache makes it write some of its changes into the database
# file itself, as a big prune does: the -journal is then all that holds the old pages.
KILLED_MID_PRUNE = """
import os, signal, sys
from pathlib import Path
from gpushift_jupyter.kernel_state import retention

real = retention._prune

def prune_then_die(con, keep, protected):
    con.execute("PRAGMA cache_size = 4")
    result = real(con, keep, protected)
    assert result.pruned, result
    os.kill(os.getpid(), signal.SIGKILL)

retention._prune = prune_then_die
retention.prune_database(Path(sys.argv[1]), keep=1)
"""


def kill_mid_prune(db: Path) -> None:
    """Leave a hot -journal as a prune killed before its COMMIT does."""
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    done = subprocess.run([sys.executable, "-c", KILLED_MID_PRUNE, str(db)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    journal = Path(f"{db}-journal")
    assert journal.exists() and journal.stat().st_size > 0
    assert hashlib.sha256(db.read_bytes()).hexdigest() != before  # torn: pages written



# A writer (kishu's checkout moving HEAD, a checkpoint, a prune) after its first changes
# and before it synced its journal: a cache large enough that nothing spills into the
# database file, so the -journal holds the old pages behind a header that is still
# zeros. SQLite does not count such a journal as hot (first byte zero): it neither rolls
# it back nor deletes it. `kill` (argv[2]): SIGKILLed there; else it says "writing",
# waits for a line on stdin and rolls back.
BEFORE_JOURNAL_SYNC = """
import os, signal, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size = -262144")
con.execute("BEGIN IMMEDIATE")
con.execute("DELETE FROM commit_entry")
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
print("writing", flush=True)
sys.stdin.readline()
con.execute("ROLLBACK")
"""


def kill_before_journal_sync(db: Path) -> None:
    """Leave the -journal of a write killed before its journal's header was written:
    the database file as it was, the journal not hot."""
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    done = subprocess.run([sys.executable, "-c", BEFORE_JOURNAL_SYNC, str(db), "kill"],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    journal = Path(f"{db}-journal")
    assert journal.stat().st_size > 0 and journal.read_bytes()[:1] == b"\0"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # untouched


def writing_before_journal_sync(db: Path) -> subprocess.Popen[str]:
    """A live writer of `db` at the same point (its journal's header still zeros),
    once it says so; a line on its stdin makes it roll back and exit."""
    writer = subprocess.Popen([sys.executable, "-c", BEFORE_JOURNAL_SYNC, str(db), "wait"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    return writer


@contextmanager
def small_tmpfs(folder: Path, size_mib: int = 64) -> Iterator[Path]:
    """A small tmpfs mounted at `folder` (made here when missing; an existing folder's
    files are hidden under it), for a volume that fills up; the test is skipped with
    mount's own error where mounting is not permitted."""
    folder.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs",
                           str(folder)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
